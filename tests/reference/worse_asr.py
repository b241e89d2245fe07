"""A deliberately worse ASR model for the autopilot's WER gate: the reference zipformer with seeded
noise added to its joiner's output bias, so it still recognises speech (it passes the slot's probe)
but substitutes and drops words. Writes a complete model directory to --out.
"""

import argparse
import os
import shutil

import numpy as np
import onnx
from onnx import numpy_helper


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True, help="model directory (encoder/decoder/joiner.onnx, tokens.txt)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--noise", type=float, default=3.0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for f in ("encoder.onnx", "decoder.onnx", "tokens.txt"):
        shutil.copyfile(os.path.join(a.src, f), os.path.join(a.out, f))
    m = onnx.load(os.path.join(a.src, "joiner.onnx"))
    rng = np.random.default_rng(7)
    for init in m.graph.initializer:
        if init.name == "output_linear.bias":
            b = numpy_helper.to_array(init).astype(np.float32)
            noisy = b + rng.normal(0.0, a.noise, b.shape).astype(np.float32)
            noisy[0] = b[0]  # keep blank's bias: the model still emits at a normal rate
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
            break
    else:
        raise SystemExit("joiner.onnx has no output_linear.bias")
    onnx.save(m, os.path.join(a.out, "joiner.onnx"))


if __name__ == "__main__":
    main()
