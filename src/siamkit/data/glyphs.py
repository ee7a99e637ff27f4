"""An Omniglot-like set of characters rendered from the fonts a system has: a many-identity development set that
needs no download.

One class per character, one group (alphabet) per script; each instance is the character drawn in one of the
fonts that cover it (fonts are round-robined, so a script covered by several fonts mixes their designs), with a
random stroke width, a random affine warp (rotation, shear, scale, translation) and a random blur, then reduced
to ``size``×``size`` gray, black strokes on white. ``write_glyph_folders`` writes ``root/<script>/<character>/
<n>.png`` — the grouped layout that ``siamkit train --data root`` reads as characters grouped by script and
splits *script-disjoint* (as Omniglot's background and evaluation alphabets).

Fonts are found under the usual font folders (``/usr/share/fonts``: Debian's ``fonts-noto-core``,
``fonts-dejavu``, ``fonts-freefont-ttf``, ``fonts-liberation``); which font covers which character is read from
its ``cmap`` table (fontTools, which matplotlib already needs).
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from siamkit.errors import DataError

log = logging.getLogger(__name__)

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
SKIP_FONTS = ("Math", "Music", "Symbols", "Emoji", "Display", "Mono-")  # not text, or a near copy of another

# Scripts as alphabets: (name, code-point ranges, inclusive). One case only for bicameral scripts (capitals), and
# no combining marks: each kept code point is a letter on its own (Unicode category L*).
SCRIPTS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("Latin", ((0x41, 0x5A),)),
    ("Greek", ((0x391, 0x3A9),)),
    ("Cyrillic", ((0x410, 0x42F),)),
    ("Armenian", ((0x531, 0x556),)),
    ("Georgian", ((0x10D0, 0x10FA),)),
    ("Hebrew", ((0x5D0, 0x5EA),)),
    ("Arabic", ((0x627, 0x64A),)),
    ("Syriac", ((0x710, 0x72F),)),
    ("Thaana", ((0x780, 0x7A5),)),
    ("NKo", ((0x7CA, 0x7EA),)),
    ("Samaritan", ((0x800, 0x815),)),
    ("Devanagari", ((0x905, 0x939),)),
    ("Bengali", ((0x985, 0x9B9),)),
    ("Gurmukhi", ((0xA05, 0xA39),)),
    ("Gujarati", ((0xA85, 0xAB9),)),
    ("Oriya", ((0xB05, 0xB39),)),
    ("Tamil", ((0xB85, 0xBB9),)),
    ("Telugu", ((0xC05, 0xC39),)),
    ("Kannada", ((0xC85, 0xCB9),)),
    ("Malayalam", ((0xD05, 0xD39),)),
    ("Sinhala", ((0xD85, 0xDC6),)),
    ("Thai", ((0xE01, 0xE2E),)),
    ("Lao", ((0xE81, 0xEAE),)),
    ("Tibetan", ((0xF40, 0xF6C),)),
    ("Myanmar", ((0x1000, 0x102A),)),
    ("Ethiopic", ((0x1200, 0x1248),)),
    ("Cherokee", ((0x13A0, 0x13F4),)),
    ("Canadian Syllabics", ((0x1401, 0x1480),)),
    ("Ogham", ((0x1681, 0x169A),)),
    ("Runic", ((0x16A0, 0x16EA),)),
    ("Khmer", ((0x1780, 0x17A2),)),
    ("Mongolian", ((0x1820, 0x1877),)),
    ("Buginese", ((0x1A00, 0x1A16),)),
    ("Balinese", ((0x1B05, 0x1B33),)),
    ("Ol Chiki", ((0x1C5A, 0x1C7D),)),
    ("Glagolitic", ((0x2C00, 0x2C2E),)),
    ("Coptic", ((0x2C80, 0x2CE3),)),
    ("Tifinagh", ((0x2D30, 0x2D67),)),
    ("Lisu", ((0xA4D0, 0xA4F7),)),
    ("Vai", ((0xA500, 0xA60B),)),
    ("Bamum", ((0xA6A0, 0xA6E5),)),
    ("Javanese", ((0xA984, 0xA9B2),)),
    ("Linear B", ((0x10000, 0x1005D),)),
    ("Old Italic", ((0x10300, 0x1031F),)),
    ("Gothic", ((0x10330, 0x1034A),)),
    ("Deseret", ((0x10400, 0x10427),)),
    ("Osmanya", ((0x10480, 0x1049D),)),
    ("Cypriot", ((0x10800, 0x10838),)),
    ("Phoenician", ((0x10900, 0x10915),)),
    ("Old Turkic", ((0x10C00, 0x10C48),)),
    ("Adlam", ((0x1E900, 0x1E921),)),
)


@dataclass(frozen=True)
class GlyphStyle:
    """How instances vary. ``canvas`` is the drawing size before the reduction to the output size."""

    canvas: int = 64
    font_size: int = 40
    degrees: float = 12.0
    shear: float = 0.25
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.06
    """Of the canvas side."""
    stroke: tuple[int, int] = (0, 2)
    """Extra stroke width in canvas pixels, drawn uniformly from this range (inclusive)."""
    blur: float = 1.2
    """Largest Gaussian blur radius in canvas pixels."""


def font_files(dirs: Iterable[str | os.PathLike[str]] = FONT_DIRS) -> list[Path]:
    """The TrueType/OpenType files under ``dirs`` (recursively), sorted; text fonts only (``SKIP_FONTS``)."""
    out: list[Path] = []
    for d in dirs:
        root = Path(d).expanduser()
        if root.is_dir():
            out += [p for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf")]
    return sorted(p for p in set(out) if not any(s in p.name for s in SKIP_FONTS))


def coverage(fonts: Sequence[Path]) -> dict[Path, frozenset[int]]:
    """The code points each font's ``cmap`` maps to a glyph (unreadable files left out)."""
    from fontTools.ttLib import TTFont

    out: dict[Path, frozenset[int]] = {}
    for path in fonts:
        try:
            with TTFont(str(path), lazy=True, fontNumber=0) as font:
                table = font.getBestCmap() or {}
        except Exception as exc:  # a broken or unsupported font file: not one to draw with
            log.debug("font %s left out: %s", path, exc)
            continue
        out[path] = frozenset(table)
    return out


@dataclass(frozen=True)
class Alphabet:
    name: str
    characters: tuple[str, ...]
    fonts: dict[str, tuple[Path, ...]]
    """For each character, the fonts that cover it."""


def alphabets(
    cover: dict[Path, frozenset[int]], max_characters: int = 40, min_characters: int = 10, seed: int = 0,
    scripts: Sequence[tuple[str, tuple[tuple[int, int], ...]]] = SCRIPTS,
) -> list[Alphabet]:  # fmt: skip
    """The scripts with at least ``min_characters`` letters that some font covers; at most ``max_characters`` of
    them each (a seeded sample, kept in code-point order)."""
    rng = np.random.default_rng(seed)
    out = []
    for name, ranges in scripts:
        chars, fonts = [], {}
        for lo, hi in ranges:
            for cp in range(lo, hi + 1):
                ch = chr(cp)
                if not unicodedata.category(ch).startswith("L"):
                    continue
                covering = tuple(p for p, cps in cover.items() if cp in cps)
                if covering:
                    chars.append(ch)
                    fonts[ch] = covering
        if len(chars) < min_characters:
            continue
        if len(chars) > max_characters:
            chars = [chars[i] for i in np.sort(rng.choice(len(chars), max_characters, replace=False))]
        out.append(Alphabet(name, tuple(chars), {c: fonts[c] for c in chars}))
    return out


def render(
    char: str, font: ImageFont.FreeTypeFont, rng: np.random.Generator, size: int, style: GlyphStyle
) -> Image.Image:
    """One instance of ``char``: drawn centred (by its ink's bounding box) at the style's font size with a random
    stroke width, warped by a random affine map, blurred, reduced to ``size``×``size`` (mode ``L``)."""
    n = style.canvas
    img = Image.new("L", (n, n), 255)
    draw = ImageDraw.Draw(img)
    stroke = int(rng.integers(style.stroke[0], style.stroke[1] + 1))
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font, stroke_width=stroke)
    xy = ((n - (right - left)) / 2 - left, (n - (bottom - top)) / 2 - top)
    draw.text(xy, char, fill=0, font=font, stroke_width=stroke, stroke_fill=0)
    angle = np.deg2rad(rng.uniform(-style.degrees, style.degrees))
    shear = rng.uniform(-style.shear, style.shear)
    scale = rng.uniform(*style.scale)
    tx, ty = rng.uniform(-style.translate, style.translate, 2) * n
    # output → input map: centre, undo rotation·shear·scale, shift back
    fwd = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array([[1, shear], [0, 1]])
    inv = np.linalg.inv(fwd * scale)
    c = np.array([n / 2, n / 2])
    offset = c - inv @ (c + np.array([tx, ty]))
    coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    img = img.transform((n, n), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=255)
    radius = rng.uniform(0, style.blur)
    if radius > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    return img.resize((size, size), Image.Resampling.BOX)


def folder_name(char: str) -> str:
    """A portable folder name for a character: its code point and its Unicode name (``U+0041_LATIN_CAPITAL_...``)."""
    name = unicodedata.name(char, "").replace(" ", "_").replace("-", "_")
    return f"U+{ord(char):04X}" + (f"_{name}" if name else "")


def write_glyph_folders(
    root: str | os.PathLike[str], per_class: int = 20, size: int = 32, max_characters: int = 40,
    seed: int = 0, *, font_dirs: Iterable[str | os.PathLike[str]] = FONT_DIRS, style: GlyphStyle | None = None,
    scripts: Sequence[tuple[str, tuple[tuple[int, int], ...]]] = SCRIPTS,
) -> dict[str, int]:  # fmt: skip
    """Write ``root/<script>/<character>/<n>.png`` (``per_class`` instances each) and return the counts
    (``alphabets``, ``classes``, ``images``, ``fonts``). Seeded: the same fonts give the same files."""
    style = style or GlyphStyle()
    files = font_files(font_dirs)
    cover = coverage(files)
    found = alphabets(cover, max_characters, seed=seed, scripts=scripts)
    if len(found) < 3:
        raise DataError(
            f"only {len(found)} scripts are covered by the fonts under {', '.join(map(str, font_dirs))}; "
            "install fonts (Debian: apt-get install fonts-noto-core fonts-dejavu fonts-freefont-ttf)"
        )
    root = Path(root)
    loaded: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}
    n_images = 0
    for ai, alpha in enumerate(found):
        for ci, char in enumerate(alpha.characters):
            rng = np.random.default_rng([seed, ai, ci])
            fonts = list(alpha.fonts[char])
            order = rng.permutation(len(fonts))
            out = root / alpha.name.replace(" ", "_") / folder_name(char)
            out.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                path = fonts[order[i % len(fonts)]]
                key = (path, style.font_size)
                if key not in loaded:
                    loaded[key] = ImageFont.truetype(str(path), style.font_size)
                render(char, loaded[key], rng, size, style).save(out / f"{i:02d}.png")
                n_images += 1
    classes = sum(len(a.characters) for a in found)
    log.info("glyphs: %d scripts, %d characters, %d images from %d fonts in %s", len(found), classes, n_images,
             len(cover), root)  # fmt: skip
    return {"alphabets": len(found), "classes": classes, "images": n_images, "fonts": len(cover)}
