#!/usr/bin/env python3
"""POSTs images to a Switchyard face endpoint from N threads; prints images/s and latency percentiles.

Usage: client.py URL THREADS REQUESTS IMAGE...
"""
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlparse

url, threads, requests = urlparse(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
images = [open(p, "rb").read() for p in sys.argv[4:]]
latencies, errors, lock = [], [], threading.Lock()
counter = iter(range(requests))


def worker():
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    while True:
        with lock:
            i = next(counter, None)
        if i is None:
            return
        body = images[i % len(images)]
        start = time.perf_counter()
        conn.request("POST", url.path, body=body, headers={"content-type": "image/jpeg"})
        resp = conn.getresponse()
        resp.read()
        elapsed = time.perf_counter() - start
        with lock:
            (latencies if resp.status == 200 else errors).append(elapsed if resp.status == 200 else resp.status)


start = time.perf_counter()
pool = [threading.Thread(target=worker) for _ in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
wall = time.perf_counter() - start
latencies.sort()
pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3
print(json.dumps({"images_per_s": len(latencies) / wall, "p50_ms": pct(0.5), "p95_ms": pct(0.95), "errors": len(errors)}))
