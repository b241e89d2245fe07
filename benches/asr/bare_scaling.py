#!/usr/bin/env python3
"""The machine's own ceiling for stream scaling: the streaming encoder alone on bare ONNX Runtime
(1 thread, states carried from call to call), one process, then two processes at once. Prints JSON
with the seconds of each and the throughput ratio (2 x one / two).

Usage: bare_scaling.py ENCODER.onnx CALLS ROUNDS
"""
import json
import multiprocessing as mp
import sys
import time


def loop(path, calls, start, out):
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    feed = {}
    for i in s.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feed[i.name] = np.zeros(shape, dtype=np.int64 if "int64" in i.type else np.float32)
    rng = np.random.default_rng(0)
    feed[names[0]] = rng.standard_normal(feed[names[0]].shape).astype(np.float32)
    s.run(None, feed)
    start.wait()
    t0 = time.perf_counter()
    for _ in range(calls):
        o = s.run(None, feed)
        for j, n in enumerate(names[1:]):
            feed[n] = o[j + 1]
    out.put(time.perf_counter() - t0)


def run(path, calls, n):
    start, out = mp.Barrier(n + 1), mp.Queue()
    ps = [mp.Process(target=loop, args=(path, calls, start, out)) for _ in range(n)]
    for p in ps:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    for p in ps:
        p.join()
    return time.perf_counter() - t0


def main():
    path, calls, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    one = min(run(path, calls, 1) for _ in range(rounds))
    two = min(run(path, calls, 2) for _ in range(rounds))
    print(json.dumps({"one_s": one, "two_s": two, "ratio": 2 * one / two}))


if __name__ == "__main__":
    main()
