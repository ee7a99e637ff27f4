#!/usr/bin/env bash
# System packages the tests use, from Debian: Chromium + ChromeDriver (the web-page test),
# dataset-fashion-mnist (the real-data test) and fonts-dejavu-core (the glyph-set tests). Installs what is missing when it can (root + apt-get);
# otherwise says which tests will skip. STRICT=1 (CI) makes a failed Chromium install an error.
set -uo pipefail
missing=()
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || missing+=(chromium chromium-driver)
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)  # the glyph-set tests draw with it
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  for pkg in "${missing[@]}"; do
    apt-get install -y "$pkg" >/dev/null 2>&1 \
      || (apt-get update >/dev/null 2>&1 && apt-get install -y "$pkg" >/dev/null 2>&1) \
      || echo "note: could not install $pkg"
  done
else
  echo "note: not installing ${missing[*]} (needs root and apt-get); the tests that need them will skip"
fi
if [ "${STRICT:-0}" = 1 ] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  echo "error: Chromium and ChromeDriver are required here (apt-get install chromium chromium-driver)" >&2
  exit 1
fi
exit 0
