"""Encoder outputs of the ASR model for the golden input windows of 0.wav (chunk 0 from zero states,
chunk 1 from the states chunk 0 left), computed by the reference pipeline (asr_beam.Model: ONNX Runtime
with 1 thread, exact int8 products) on this machine.

The golden tensors beside the model were computed on its author's CPU; another CPU's float kernels can
move a value across an int8 rounding boundary of the encoder's dynamic quantisation (0.055 seen on
AMD Zen 3), so the tight check of "the same engine gives the same numbers" is against this file.
Writes {"chunk0": [...], "chunk1": [...]} (flattened [1, 8, 320] float32 values).
"""

import argparse
import json
import os

import numpy as np

from asr_beam import Model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="model directory")
    ap.add_argument("--golden", required=True, help="directory of the golden *.bin tensors")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    m = Model(a.model)
    states = {}
    for i in m.inputs[1:]:
        states[i.name] = np.zeros(i.shape, dtype=np.int64 if i.type == "tensor(int64)" else np.float32)
    out = {}
    for c in (0, 1):
        x = np.fromfile(os.path.join(a.golden, f"0.wav.chunk{c}.x.bin"), dtype="<f4").reshape(1, m.window, -1)
        outs = m.enc.run(None, {m.inputs[0].name: x, **states})
        for k, name in enumerate(states):
            states[name] = outs[1 + k]
        out[f"chunk{c}"] = [float(v) for v in outs[0].ravel()]
    json.dump(out, open(a.out, "w"))


if __name__ == "__main__":
    main()
