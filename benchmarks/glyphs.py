"""Write the Omniglot-like glyph set (``siamkit.data.glyphs``): ``OUT/<script>/<character>/<n>.png``, one class per
character rendered from the system's fonts with random strokes, warps and blur. ``siamkit train --data OUT`` reads it
as characters grouped by script and holds out whole scripts for validation and test. Prints one JSON line.

    apt-get install fonts-noto-core fonts-dejavu fonts-freefont-ttf fonts-liberation   # the fonts it draws with
    .venv/bin/python benchmarks/glyphs.py --out /tmp/glyphs
    .venv/bin/python benchmarks/glyphs.py --out /tmp/glyphs-b --seed 1 --max-characters 30
"""

from __future__ import annotations

import argparse
import json
import time

from siamkit.data.glyphs import write_glyph_folders


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--max-characters", type=int, default=40, help="characters per script at most")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t = time.perf_counter()
    counts = write_glyph_folders(args.out, args.per_class, args.size, args.max_characters, args.seed)
    print(json.dumps({"benchmark": "glyphs", "out": args.out, **counts, "seed": args.seed,
                      "seconds": round(time.perf_counter() - t, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
