#!/usr/bin/env python3
"""Independent reference for Switchyard's image output: Pillow (libjpeg-turbo, libpng, littleCMS).

* `jpeg_quality`: for each lossless test photo, encodes its pixels as baseline JPEG, 4:2:0, at the
  qualities below with libjpeg-turbo (Pillow's encoder: libjpeg's default downsampling, which averages
  each 2×2 block of chroma), decodes the result again with Pillow, and writes the PSNR against the
  pixels it started from, per channel (R, G, B) and overall, with the file size. The Rust test encodes
  the same pixels with Switchyard's encoder and must come within a stated margin of these figures.
* `icc_profiles`: the ICC colour profile each test photo carries, as Pillow reads it: its bytes (hex),
  colour space and description. The Rust tests check that anonymised output carries the same
  bytes.

Nothing here is shared with the Rust code.

Usage: image_codec.py --root REPO --out image_codec.json
"""

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

# Lossless sources only, so that both sides start from the same pixels.
PHOTOS = ["astronaut.png"]
QUALITIES = [75, 90]
# Photos with an embedded ICC profile (rocket.jpg: Adobe RGB (1998); astronaut.png: sRGB).
ICC_PHOTOS = ["rocket.jpg", "astronaut.png"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * np.log10(255.0**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    quality = {}
    for name in PHOTOS:
        src = np.asarray(Image.open(args.root / ".cache/testdata" / name).convert("RGB"))
        for q in QUALITIES:
            buf = io.BytesIO()
            Image.fromarray(src).save(buf, "JPEG", quality=q, subsampling="4:2:0", optimize=False)
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            quality[f"{name}@{q}"] = {
                "psnr": psnr(src, dec),
                "psnr_rgb": [psnr(src[..., c], dec[..., c]) for c in range(3)],
                "bytes": len(buf.getvalue()),
            }
    icc = {}
    for name in ICC_PHOTOS:
        profile = Image.open(args.root / ".cache/testdata" / name).info["icc_profile"]
        parsed = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        icc[name] = {
            "hex": profile.hex(),
            "space": profile[16:20].decode("ascii"),
            "description": ImageCms.getProfileDescription(parsed).strip(),
        }
    out = {"jpeg_quality": quality, "icc_profiles": icc}
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
