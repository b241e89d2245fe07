#!/usr/bin/env python3
"""Bare ONNX Runtime time for CenterFace on one 1x3xHxW input (median of N runs): the physical limit
of any pipeline built on it. Usage: bare_ort.py MODEL H W RUNS"""
import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

ort.set_default_logger_severity(3)
path, h, w, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = onnx.load(path)
init = {t.name for t in m.graph.initializer}
keep = [i for i in m.graph.input if i.name not in init]
del m.graph.input[:]
m.graph.input.extend(keep)
for i, d in enumerate(m.graph.input[0].type.tensor_type.shape.dim):
    d.dim_param = f"d{i}"
for o in m.graph.output:
    o.type.tensor_type.ClearField("shape")
sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
x = (np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32) * 255).astype(np.float32)
name = sess.get_inputs()[0].name
sess.run(None, {name: x})
times = []
for _ in range(runs):
    s = time.perf_counter()
    sess.run(None, {name: x})
    times.append(time.perf_counter() - s)
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2] * 1e3}))
