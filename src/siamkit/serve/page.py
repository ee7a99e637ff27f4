"""The web page served at ``/``: verify two images, search the gallery with one (the best match first), and browse,
add to and remove from the gallery. Images come by drag-and-drop, paste (Ctrl+V into the focused drop zone) or a
file picker. Plain HTML and a small script calling the JSON API: no external assets and no build step, so it works
offline and under a strict CSP. Gallery edits send the service's token when one is entered (``--token``).

The page explains its verdicts: beside SAME/DIFFERENT, the threshold's rule and its false-accept rate (the
answer's ``threshold_info.rule_text``) and the threshold's deployment warning when it has one; with the query's
label (prefilled from its file name, editable), search hits within the threshold under another label carry a
"false accept" badge. Search is disabled, with a note, while no gallery is loaded; a removal asks first (a
dialog); an added item's label is prefilled from its file name (``alice_01.png`` → ``alice``) and editable."""

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>siamkit</title>
<style>
  :root { --ok: #1a7f37; --bad: #c62828; --line: #d8d8d8; }
  body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 62rem; padding: 0 1rem; color: #222; }
  header { display: flex; justify-content: space-between; align-items: baseline; gap: 1rem; flex-wrap: wrap; }
  h1 { margin: 0; } h2 { margin: 0 0 .7rem; font-size: 1.15rem; }
  .muted { color: #666; font-size: .9rem; } a { color: #0b5cad; }
  section { border: 1px solid var(--line); border-radius: 10px; padding: 1rem 1.2rem; margin: 1.1rem 0; }
  .row { display: flex; gap: 1.2rem; flex-wrap: wrap; align-items: flex-end; }
  .drop { display: flex; flex-direction: column; align-items: center; justify-content: center; gap: .3rem;
    width: 150px; height: 150px; border: 2px dashed #aaa; border-radius: 10px; background: #fafafa;
    cursor: pointer; text-align: center; font-size: .8rem; color: #555; position: relative; outline: none; }
  .drop:focus, .drop.over { border-color: #0b5cad; background: #eef5fd; }
  .drop img { width: 120px; height: 100px; object-fit: contain; image-rendering: pixelated; display: none; }
  .drop.filled img { display: block; } .drop.filled .hint { display: none; }
  .drop input { display: none; }
  button { padding: .45rem 1.1rem; font-size: 1rem; cursor: pointer; border-radius: 6px; border: 1px solid #888;
    background: #fff; } button.primary { background: #0b5cad; color: #fff; border-color: #0b5cad; }
  .verdict { font-size: 1.35rem; font-weight: 650; margin-top: .8rem; min-height: 1.6rem; }
  .same { color: var(--ok); } .different { color: var(--bad); } .error { color: var(--bad); }
  .best { font-size: 1.15rem; font-weight: 600; margin: .6rem 0; min-height: 1.4rem; }
  .hits, .items { display: flex; flex-wrap: wrap; gap: .8rem; margin-top: .6rem; }
  .hit, .item { width: 112px; text-align: center; font-size: .78rem; position: relative; }
  .hit img, .item img { width: 104px; height: 104px; object-fit: contain; background: #f4f4f4;
    border: 2px solid #ccc; border-radius: 6px; image-rendering: pixelated; }
  .hit.match img { border-color: var(--ok); }
  .item .remove { position: absolute; top: 2px; right: 6px; padding: 0 .4rem; font-size: .9rem; line-height: 1.3;
    border-radius: 50%; }
  input[type=text], input[type=password], input[type=number] { padding: .35rem .5rem; font-size: .95rem; }
  .pager { display: flex; gap: .6rem; align-items: center; margin-top: .6rem; }
  .rule { color: #444; font-size: .92rem; margin-top: .3rem; }
  .warning { color: #8a4b00; font-size: .88rem; margin-top: .3rem; }
  .badge { display: inline-block; padding: 0 .35rem; border-radius: 4px; font-size: .72rem; font-weight: 600; }
  .badge.fa { background: var(--bad); color: #fff; } .hit.false-accept img { border-color: var(--bad); }
  button:disabled { cursor: not-allowed; opacity: .55; }
  dialog { border: 1px solid #888; border-radius: 10px; padding: 1rem 1.2rem; max-width: 26rem; }
  dialog .actions { display: flex; gap: .6rem; justify-content: flex-end; margin-top: .9rem; }
  button.danger { background: var(--bad); color: #fff; border-color: var(--bad); }
</style>
</head>
<body>
<header>
  <h1>siamkit</h1>
  <div class="muted"><span id="model-info">loading model information…</span> · <a href="/docs">API docs</a></div>
</header>

<section>
  <h2>Verify: are these the same identity?</h2>
  <div class="row">
    <label class="drop" tabindex="0" data-input="file-a"><input type="file" id="file-a" accept="image/*">
      <img id="preview-a" alt="image A"><span class="hint">Image A<br>drop, paste or click</span></label>
    <label class="drop" tabindex="0" data-input="file-b"><input type="file" id="file-b" accept="image/*">
      <img id="preview-b" alt="image B"><span class="hint">Image B<br>drop, paste or click</span></label>
    <button id="verify-btn" class="primary" type="button">Verify</button>
  </div>
  <div id="verify-result" class="verdict" aria-live="polite"></div>
  <div id="verify-rule" class="rule"></div>
  <div id="verify-warning" class="warning"></div>
</section>

<section>
  <h2>Search the gallery</h2>
  <div class="row">
    <label class="drop" tabindex="0" data-input="search-file"><input type="file" id="search-file" accept="image/*">
      <img id="preview-q" alt="query"><span class="hint">Query image<br>drop, paste or click</span></label>
    <label>k <input type="number" id="search-k" value="10" min="1" max="100" style="width:5rem"></label>
    <label>query label <input type="text" id="search-label" maxlength="256" placeholder="if known"
      title="the query's identity: hits within the threshold under another label are marked false accepts"></label>
    <button id="search-btn" class="primary" type="button" disabled>Search</button>
  </div>
  <div id="search-note" class="muted">checking for a gallery…</div>
  <div id="search-best" class="best" aria-live="polite"></div>
  <div id="search-status" class="muted" aria-live="polite"></div>
  <div id="search-results" class="hits"></div>
</section>

<section>
  <h2>Gallery</h2>
  <div class="row">
    <label class="drop" tabindex="0" data-input="gallery-file"><input type="file" id="gallery-file" accept="image/*">
      <img id="preview-g" alt="new item"><span class="hint">New item<br>drop, paste or click</span></label>
    <label>label <input type="text" id="gallery-label" maxlength="256" placeholder="identity name"></label>
    <label>edit token <input type="password" id="token" placeholder="if the service has one"></label>
    <button id="gallery-add" type="button">Add to gallery</button>
  </div>
  <div id="gallery-status" class="muted" aria-live="polite"></div>
  <div id="gallery-list" class="items"></div>
  <div class="pager"><button id="gallery-prev" type="button">‹ previous</button>
    <span id="gallery-page" class="muted"></span><button id="gallery-next" type="button">next ›</button></div>
</section>

<dialog id="confirm-remove">
  <div id="confirm-text"></div>
  <div class="actions"><button id="confirm-cancel" type="button">Cancel</button>
    <button id="confirm-ok" class="danger" type="button">Remove</button></div>
</dialog>

<script>
const $ = (id) => document.getElementById(id);
const PAGE = 24;
let galleryOffset = 0, gallerySize = 0, lastZone = null;

const LABEL_FOR = { "search-file": "search-label", "gallery-file": "gallery-label" };
const prefilled = {};
// a label from a file name: alice_01.png → alice, bob smith-3.jpg → bob smith; 007.png → (none)
function labelFromName(name) {
  return name.replace(/\\.[^.]*$/, "").replace(/[\\s._-]*\\d+$/, "").replace(/[\\s._-]+$/, "").slice(0, 256);
}
function show(input) {
  const zone = input.closest(".drop"), img = zone.querySelector("img");
  if (input.files.length) { img.src = URL.createObjectURL(input.files[0]); zone.classList.add("filled"); }
  const labelId = LABEL_FOR[input.id];
  if (labelId && input.files.length) {
    const field = $(labelId);  // prefilled unless the user typed a label of their own
    if (!field.value || field.value === prefilled[labelId]) {
      field.value = prefilled[labelId] = labelFromName(input.files[0].name);
    }
  }
}
function setFile(input, file) {
  const dt = new DataTransfer();
  dt.items.add(file);
  input.files = dt.files;
  show(input);
}
for (const zone of document.querySelectorAll(".drop")) {
  const input = $(zone.dataset.input);
  input.addEventListener("change", () => show(input));
  zone.addEventListener("focus", () => { lastZone = zone; });
  zone.addEventListener("mouseenter", () => { lastZone = zone; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault(); zone.classList.remove("over");
    if (e.dataTransfer.files.length) setFile(input, e.dataTransfer.files[0]);
  });
}
document.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData ? e.clipboardData.files : [])][0];
  if (file && lastZone) setFile($(lastZone.dataset.input), file);
});

function auth() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}
async function call(method, url, form, headers) {
  const response = await fetch(url, { method, body: form, headers: headers || {} });
  let body = null;
  try { body = await response.json(); } catch (e) { body = { detail: response.statusText }; }
  if (!response.ok) throw new Error(body.detail || ("HTTP " + response.status));
  return body;
}
function fail(el, e) {
  el.className = (el.className.split(" ")[0] || "") + " error";
  el.textContent = "Error: " + e.message;
}

function health() {
  return fetch("/health").then((r) => r.json()).then((h) => {
    const thr = h.threshold === null ? "none" : h.threshold.toFixed(4);
    const gal = h.gallery ? (h.gallery.error ? h.gallery.error
      : h.gallery.size + " items (" + h.gallery.index.kind + ")") : "none loaded";
    gallerySize = h.gallery && !h.gallery.error ? h.gallery.size : 0;
    const usable = !!(h.gallery && !h.gallery.error);
    $("search-btn").disabled = !usable;
    $("gallery-add").disabled = !usable;
    $("search-note").textContent = usable ? "" : (h.gallery ? "search disabled: " + h.gallery.error
      : "search disabled: no gallery loaded (start the service with --gallery DIR)");
    $("model-info").textContent = "model " + h.model_hash.slice(0, 12) + " on " + h.backend + " · " + h.distance
      + " distance · threshold " + thr + " · gallery: " + gal;
    return h;
  }).catch(() => {
    $("model-info").textContent = "service unreachable";
    $("search-note").textContent = "search disabled: the service is unreachable";
  });
}

$("verify-btn").addEventListener("click", async () => {
  const out = $("verify-result");
  const a = $("file-a").files[0], b = $("file-b").files[0];
  if (!a || !b) { out.className = "verdict error"; out.textContent = "Choose two images first."; return; }
  const form = new FormData();
  form.append("image_a", a);
  form.append("image_b", b);
  out.className = "verdict"; out.textContent = "…";
  $("verify-rule").textContent = ""; $("verify-warning").textContent = "";
  try {
    const r = await call("POST", "/verify", form);
    const verdict = r.same === null ? "no threshold saved" : (r.same ? "same" : "different");
    out.className = "verdict " + (r.same === null ? "" : verdict);
    out.dataset.verdict = verdict;
    const cmp = r.threshold === null ? "" : (r.distance <= r.threshold ? " ≤ " : " > ");
    out.textContent = verdict.toUpperCase() + " · distance " + r.distance.toFixed(4)
      + (r.threshold === null ? " · threshold none" : cmp + "threshold " + r.threshold.toFixed(4));
    const info = r.threshold_info || {};
    $("verify-rule").textContent = r.threshold === null ? "the run saved no threshold (it had no validation data)"
      : (info.rule_text || "same if distance ≤ " + r.threshold.toFixed(4) + "; false-accept rate not recorded");
    $("verify-warning").textContent = info.warning ? "⚠ " + info.warning : "";
  } catch (e) { fail(out, e); }
});

function card(cls, item, caption) {
  const el = document.createElement("div");
  el.className = cls;
  el.dataset.id = item.id;
  const img = document.createElement("img");
  img.src = "/gallery/" + item.id + "/image"; img.alt = "gallery item " + item.id; img.loading = "lazy";
  const text = document.createElement("div");
  text.className = "caption";
  text.textContent = caption;
  el.append(img, text);
  return el;
}

$("search-btn").addEventListener("click", async () => {
  const status = $("search-status"), list = $("search-results"), best = $("search-best");
  const q = $("search-file").files[0];
  list.replaceChildren(); best.textContent = "";
  if (!q) { status.className = "error"; status.textContent = "Choose a query image first."; return; }
  const form = new FormData();
  form.append("image", q);
  form.append("k", $("search-k").value);
  const queryLabel = $("search-label").value.trim();
  if (queryLabel) form.append("label", queryLabel);
  status.className = "muted"; status.textContent = "searching…";
  try {
    const r = await call("POST", "/search", form);
    const rule = r.threshold_info && r.threshold_info.rule_text ? "; " + r.threshold_info.rule_text : "";
    const wrong = r.results.filter((h) => h.false_accept).length;
    status.textContent = r.results.length + " nearest (" + r.metric + " distance; ✓ = within the threshold"
      + rule + ")" + (r.query_label ? " · " + wrong + " false accept" + (wrong === 1 ? "" : "s")
      + " (within the threshold, not " + r.query_label + ")" : "");
    if (r.results.length) {
      const top = r.results[0];
      best.className = "best " + (top.false_accept ? "different" : (top.match ? "same" : ""));
      best.textContent = (top.match ? "best match: " : "nearest (not within the threshold): ")
        + (top.label || "item " + top.id) + ", distance " + top.distance.toFixed(4)
        + (top.false_accept ? " — a false accept: the query is " + r.query_label : "");
    }
    for (const hit of r.results) {
      const cls = "hit" + (hit.match ? " match" : "") + (hit.false_accept ? " false-accept" : "");
      const el = card(cls, hit, "#" + hit.rank + " · " + hit.distance.toFixed(4)
        + (hit.label ? " · " + hit.label : "") + (hit.match ? " ✓ match" : ""));
      if (hit.match) el.title = "within the verification threshold: the model takes it for the same identity";
      if (hit.false_accept) {
        const badge = document.createElement("span");
        badge.className = "badge fa"; badge.textContent = "false accept";
        el.title = "within the threshold, but labelled " + hit.label + ", not " + r.query_label
          + ": the model would take another identity for the query's";
        el.append(badge);
      }
      list.append(el);
    }
  } catch (e) { fail(status, e); }
});

async function loadGallery() {
  const status = $("gallery-status"), list = $("gallery-list");
  try {
    const r = await call("GET", "/gallery?offset=" + galleryOffset + "&limit=" + PAGE);
    gallerySize = r.size;
    list.replaceChildren();
    for (const item of r.items) {
      const el = card("item", item, "#" + item.id + (item.label ? " · " + item.label : ""));
      const rm = document.createElement("button");
      rm.className = "remove"; rm.type = "button"; rm.textContent = "×"; rm.title = "remove item " + item.id;
      rm.addEventListener("click", () => confirmRemove(item));
      el.append(rm);
      list.append(el);
    }
    const last = Math.min(galleryOffset + PAGE, r.size);
    $("gallery-page").textContent = r.size ? (galleryOffset + 1) + "–" + last + " of " + r.size : "empty";
    $("gallery-prev").disabled = galleryOffset === 0;
    $("gallery-next").disabled = last >= r.size;
  } catch (e) { fail(status, e); }
}
let pendingRemoval = null;
function confirmRemove(item) {  // a removal cannot be undone: ask first
  pendingRemoval = item.id;
  $("confirm-text").textContent = "Remove item #" + item.id + (item.label ? " (" + item.label + ")" : "")
    + " from the gallery? This cannot be undone.";
  $("confirm-remove").showModal();
  $("confirm-cancel").focus();
}
$("confirm-cancel").addEventListener("click", () => {
  const id = pendingRemoval;
  pendingRemoval = null; $("confirm-remove").close();
  if (id !== null) { $("gallery-status").className = "muted"; $("gallery-status").textContent = "kept item " + id; }
});
$("confirm-ok").addEventListener("click", () => {
  const id = pendingRemoval;
  pendingRemoval = null; $("confirm-remove").close();
  if (id !== null) removeItem(id);
});
$("confirm-remove").addEventListener("close", () => { pendingRemoval = null; });
async function removeItem(id) {
  const status = $("gallery-status");
  try {
    const r = await call("DELETE", "/gallery/" + id, null, auth());
    status.className = "muted"; status.textContent = "removed item " + id + "; " + r.size + " items";
    if (galleryOffset >= r.size && galleryOffset > 0) galleryOffset -= PAGE;
    await loadGallery(); health();
  } catch (e) { fail(status, e); }
}
$("gallery-add").addEventListener("click", async () => {
  const status = $("gallery-status"), file = $("gallery-file").files[0];
  if (!file) { status.className = "error"; status.textContent = "Choose an image to add first."; return; }
  const form = new FormData();
  form.append("image", file);
  if ($("gallery-label").value.trim()) form.append("label", $("gallery-label").value.trim());
  try {
    const r = await call("POST", "/gallery", form, auth());
    $("gallery-label").value = prefilled["gallery-label"] = "";
    status.className = "muted";
    status.textContent = "added item " + r.id + (r.label ? " (" + r.label + ")" : "") + "; " + r.size + " items";
    galleryOffset = Math.max(0, Math.floor((r.size - 1) / PAGE) * PAGE);  // the page holding the new item
    await loadGallery(); health();
  } catch (e) { fail(status, e); }
});
$("gallery-prev").addEventListener("click", () => {
  galleryOffset = Math.max(0, galleryOffset - PAGE);
  loadGallery();
});
$("gallery-next").addEventListener("click", () => { galleryOffset += PAGE; loadGallery(); });

health().then((h) => { if (h && h.gallery && !h.gallery.error) loadGallery();
  else $("gallery-status").textContent = "no gallery loaded (start the service with --gallery DIR)"; });
</script>
</body>
</html>
"""
