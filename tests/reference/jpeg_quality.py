#!/usr/bin/env python3
"""Independent reference for Switchyard's JPEG output quality: Pillow's libjpeg-turbo.

For each test photo, encodes its pixels as baseline JPEG, 4:2:0, at the qualities below with
libjpeg-turbo (Pillow's encoder: libjpeg's default downsampling, which averages each 2×2 block of
chroma), decodes the result again with Pillow, and writes the PSNR against the pixels it started
from, per channel (R, G, B) and overall, with the file size. The Rust test encodes the same pixels
with Switchyard's encoder and must come within a stated margin of these figures.
Nothing here is shared with the Rust code.

Usage: jpeg_quality.py --root REPO --out jpeg_quality.json
"""

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

# Lossless sources only, so that both sides start from the same pixels.
PHOTOS = ["astronaut.png"]
QUALITIES = [75, 90]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * np.log10(255.0**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    out = {}
    for name in PHOTOS:
        src = np.asarray(Image.open(args.root / ".cache/testdata" / name).convert("RGB"))
        for q in QUALITIES:
            buf = io.BytesIO()
            Image.fromarray(src).save(buf, "JPEG", quality=q, subsampling="4:2:0", optimize=False)
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            out[f"{name}@{q}"] = {
                "psnr": psnr(src, dec),
                "psnr_rgb": [psnr(src[..., c], dec[..., c]) for c in range(3)],
                "bytes": len(buf.getvalue()),
            }
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
