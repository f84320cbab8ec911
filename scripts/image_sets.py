"""Grey-level 28 × 28 image sets in MNIST's IDX format, found or built offline.

    python scripts/image_sets.py fashion               # prints the folder of Debian's Fashion-MNIST
    python scripts/image_sets.py glyphs --out DIR      # builds the glyph set into DIR

Either folder loads with ``data=mnist data.data_dir=<folder> data.sha256=null`` (or
``data=idx_images data.data_dir=<folder>``): four files with MNIST's names, 60,000 training images
(the last 10,000 the validation split) and 10,000 test images, labels 0–9.

* ``fashion``: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) as Debian's ``dataset-fashion-mnist``
  installs it (``apt-get install dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``).
* ``glyphs``: the letters A–J (class 0–9) rendered in every TrueType/OpenType font installed
  (``/usr/share/fonts``; e.g. Debian's ``fonts-dejavu-core``, ``fonts-liberation``,
  ``fonts-urw-base35``, ``fonts-freefont-ttf``, ``fonts-crosextra-carlito``,
  ``fonts-crosextra-caladea``, ``fonts-linuxlibertine``), each drawn at 4× with a random size, rotation,
  shear and shift (``numpy.random.default_rng(seed)``) and box-filtered to 28 × 28 grey levels —
  a notMNIST-like set (symbol fonts left out). The fonts are split by the same generator into training fonts and test
  fonts (a fifth), so a test letter is in a font the training set never shows; ``manifest.json``
  lists the fonts of each part and the files' sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import struct
import sys
from pathlib import Path

import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
LETTERS = "ABCDEFGHIJ"
# symbol and pictogram fonts (no letters at the letters' code points)
NOT_LETTERS = ("dingbat", "symbol", "d050000l", "math", "emoji", "ornament")
SCALE = 4


def fashion() -> Path:
    """Debian's Fashion-MNIST folder; SystemExit with the install line if a file is missing."""
    missing = [n for n in NAMES.values() if not (FASHION_DIR / n).is_file()]
    if missing:
        raise SystemExit(f"{FASHION_DIR}: no {missing[0]}; apt-get install dataset-fashion-mnist")
    return FASHION_DIR


def font_files(root: Path = Path("/usr/share/fonts")) -> list[Path]:
    """Installed outline fonts that render the ten letters (sorted by path)."""
    from PIL import ImageFont

    good = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf")):
        try:
            font = ImageFont.truetype(str(path), 20)
            name = " ".join([path.name, *font.getname()]).lower()
            if any(word in name for word in NOT_LETTERS):
                continue
            if all(font.getbbox(c)[2] > font.getbbox(c)[0] for c in LETTERS):
                good.append(path)
        except OSError:
            continue
    return good


def render(font_path: Path, letter: str, rng: np.random.Generator) -> np.ndarray:
    """One 28 × 28 uint8 glyph: drawn at 4× (size 16–24 px at 1×), rotated ±12°, sheared ±0.2,
    shifted ±2 px, then box-filtered to 28 × 28."""
    from PIL import Image, ImageDraw, ImageFont

    big = 28 * SCALE
    size = int(rng.integers(16, 25)) * SCALE
    font = ImageFont.truetype(str(font_path), size)
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
    draw.text(
        ((big - (right - left)) / 2 - left, (big - (bottom - top)) / 2 - top), letter, fill=255, font=font
    )
    angle, shear = rng.uniform(-12, 12), rng.uniform(-0.2, 0.2)
    dx, dy = rng.uniform(-2, 2, size=2) * SCALE
    c = big / 2
    img = img.rotate(angle, resample=Image.BILINEAR, center=(c, c))
    # inverse map of a shear about the centre followed by a shift
    img = img.transform((big, big), Image.AFFINE, (1, shear, -shear * c - dx, 0, 1, -dy), Image.BILINEAR)
    return np.asarray(img.resize((28, 28), Image.BOX), dtype=np.uint8)


def write_idx(path: Path, array: np.ndarray) -> str:
    """Write a uint8 IDX file (gzip, mtime 0); return the sha256 of the decompressed content."""
    dims = array.shape
    raw = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    raw += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(raw)
    return hashlib.sha256(raw).hexdigest()


def glyphs(out: Path, n_train: int = 60000, n_test: int = 10000, seed: int = 0) -> dict:
    """Build the glyph set into ``out`` (module docstring); return the manifest."""
    fonts = font_files()
    if len(fonts) < 5:
        raise SystemExit(f"only {len(fonts)} usable fonts under /usr/share/fonts; apt-get install fonts-*")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(fonts))
    n_test_fonts = max(1, len(fonts) // 5)
    parts = {
        "test": [fonts[i] for i in perm[:n_test_fonts]],
        "train": [fonts[i] for i in perm[n_test_fonts:]],
    }
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"seed": seed, "letters": LETTERS, "fonts": {}, "sha256": {}}
    for part, n in (("train", n_train), ("test", n_test)):
        pool = parts[part]
        labels = rng.integers(0, len(LETTERS), size=n).astype(np.uint8)
        which = rng.integers(0, len(pool), size=n)
        images = np.stack([render(pool[f], LETTERS[y], rng) for f, y in zip(which, labels, strict=True)])
        manifest["fonts"][part] = [str(p) for p in pool]
        manifest["sha256"][f"{part}_images"] = write_idx(out / NAMES[f"{part}_images"], images)
        manifest["sha256"][f"{part}_labels"] = write_idx(out / NAMES[f"{part}_labels"], labels)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="set", required=True)
    sub.add_parser("fashion", help="print the folder of Debian's Fashion-MNIST")
    g = sub.add_parser("glyphs", help="build the glyph set")
    g.add_argument("--out", required=True)
    g.add_argument("--n-train", type=int, default=60000)
    g.add_argument("--n-test", type=int, default=10000)
    g.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.set == "fashion":
        print(fashion())
    else:
        m = glyphs(Path(args.out), args.n_train, args.n_test, args.seed)
        print(f"{args.out}: {len(m['fonts']['train'])} training fonts, {len(m['fonts']['test'])} test fonts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
