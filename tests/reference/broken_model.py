#!/usr/bin/env python3
"""A deliberately broken face model for the fault-injection tests: CenterFace whose input is multiplied
by `ones[H]`, a 737-entry table of ones indexed by the input height H (opset-9 ops only: Shape,
Gather, Mul). Up to 736 px high it is exactly CenterFace: the gateway's probe photo, and the load
warm-up at a 16:9 photo's shape at the default `max_side` (1280x736). A taller input (t1.jpg, 1280x886,
runs at 1280x896) indexes past the table and ONNX Runtime fails at inference: a canary that errors in
production while looking healthy at deploy time.

Usage: broken_model.py --src models/centerface/centerface.onnx --out .cache/reference/broken_centerface.onnx
"""

import argparse

import onnx
from onnx import helper, numpy_helper
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    m = onnx.load(a.src)
    g = m.graph
    inp = g.input[0].name
    fixed = inp + "_guarded"
    for n in g.node:
        for i, name in enumerate(n.input):
            if name == inp:
                n.input[i] = fixed
    g.initializer.extend([
        numpy_helper.from_array(np.ones(737, dtype=np.float32), name="guard_table"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), name="guard_axis"),
    ])
    guard = [
        helper.make_node("Shape", [inp], ["guard_in_shape"], name="guard_shape_of_input"),
        helper.make_node("Gather", ["guard_in_shape", "guard_axis"], ["guard_height"], name="guard_height"),
        helper.make_node("Gather", ["guard_table", "guard_height"], ["guard_one"], name="guard_lookup"),
        helper.make_node("Mul", [inp, "guard_one"], [fixed], name="guard_mul"),
    ]
    rest = list(g.node)
    del g.node[:]
    g.node.extend(guard + rest)
    onnx.save(m, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
