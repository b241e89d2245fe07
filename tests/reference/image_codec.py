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
* `jpeg_tables`: JPEG inputs of several kinds written by libjpeg-turbo into `--files` (quality 75;
  quality 95 progressive at 4:4:4; custom tables as a camera writes them; grayscale), the
  quantization tables Pillow reads back from each (natural order; luma, then chroma), and what
  Pillow's `quality="keep"` (re-encoding with the input's own tables) makes of each: its size and
  PSNR against the input's decoded pixels. Switchyard's `quality=auto` must keep the same tables.
* `webp_inputs`: a lossy WebP written by libwebp into `--files` (`rocket_lossy.webp`: rocket.jpg, no
  face, with its ICC profile, an EXIF block holding GPS coordinates and an XMP packet: the extended
  format, as a phone app writes it), and the chunks Pillow's writer put in it, in order; and
  `t1_lossy.webp`, insightface's group photo (6 faces) as a plain lossy WebP at quality 80, with the
  size of the same pixels written losslessly; and the group photo at other qualities (`t1_q20.webp`
  …), each entry with the quality Pillow was asked for, which Switchyard reads back from the VP8
  header to re-encode at.

Nothing here is shared with the Rust code.

Usage: image_codec.py --root REPO --out image_codec.json --files DIR
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


def jpeg_tables(args) -> dict:
    src = Image.open(args.root / ".cache/testdata/astronaut.png").convert("RGB")
    # A camera-like pair of tables (natural order), not libjpeg's scaled ones.
    luma = [min(255, 2 + 3 * (i // 8 + i % 8) + (i % 3)) for i in range(64)]
    chroma = [min(255, 4 + 5 * (i // 8 + i % 8)) for i in range(64)]
    kinds = {
        "q75.jpg": (src, dict(quality=75, subsampling="4:2:0")),
        "q95_444_progressive.jpg": (src, dict(quality=95, subsampling="4:4:4", progressive=True)),
        "camera_tables.jpg": (src, dict(qtables=[luma, chroma], subsampling="4:2:0")),
        "gray_q60.jpg": (src.convert("L"), dict(quality=60)),
    }
    args.files.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (img, opts) in kinds.items():
        path = args.files / name
        img.save(path, "JPEG", **opts)
        data = path.read_bytes()
        opened = Image.open(io.BytesIO(data))
        tables = opened.quantization
        decoded = np.asarray(opened.convert("RGB"))
        kept = io.BytesIO()
        Image.open(io.BytesIO(data)).save(kept, "JPEG", quality="keep")
        redecoded = np.asarray(Image.open(io.BytesIO(kept.getvalue())).convert("RGB"))
        sampling = opened.layer  # [(id, h, v, table), …]
        out[name] = {
            "full_chroma": len(sampling) >= 3 and len({(h, v) for _, h, v, _ in sampling}) == 1,
            "luma": list(tables[0]),
            "chroma": list(tables[1] if 1 in tables else tables[0]),
            "bytes": len(data),
            "keep_bytes": len(kept.getvalue()),
            "keep_psnr": psnr(decoded, redecoded),
        }
    return out


def webp_inputs(args) -> dict:
    src = Image.open(args.root / ".cache/testdata/rocket.jpg")
    exif = Image.Exif()
    exif[0x010F] = "Switchyard test camera"  # Make
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPS IFD: latitude
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>CREATOR-NAME</rdf:RDF></x:xmpmeta>'
    path = args.files / "rocket_lossy.webp"
    src.convert("RGB").save(
        path, "WEBP", quality=80, icc_profile=src.info["icc_profile"], exif=exif, xmp=xmp
    )
    data = path.read_bytes()
    chunks, pos = [], 12
    while pos < len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        chunks.append(data[pos : pos + 4].decode("ascii"))
        pos += 8 + size + (size & 1)
    group = Image.open(args.root / ".cache/testdata/t1.jpg").convert("RGB")
    group.save(args.files / "t1_lossy.webp", "WEBP", quality=80)
    lossless = io.BytesIO()
    group.save(lossless, "WEBP", lossless=True)
    out = {
        "rocket_lossy.webp": {"chunks": chunks, "bytes": len(data), "quality": 80},
        "t1_lossy.webp": {
            "bytes": (args.files / "t1_lossy.webp").stat().st_size,
            "lossless_bytes": len(lossless.getvalue()),
            "quality": 80,
        },
    }
    for q in (20, 55, 75, 95):
        group.save(args.files / f"t1_q{q}.webp", "WEBP", quality=q)
        out[f"t1_q{q}.webp"] = {"quality": q}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--files", type=Path, required=True, help="folder for the encoded inputs")
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
    out = {"jpeg_quality": quality, "icc_profiles": icc, "jpeg_tables": jpeg_tables(args),
           "webp_inputs": webp_inputs(args)}
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
