#!/usr/bin/env python3
"""Time from a canary starting to fail to its traffic being diverted (run by benches/autopilot/run.sh).

Two upstream servers on loopback (stable and canary); the gateway splits users 50/50 with the breaker
and per-request fallback on. A client sends RATE requests/s with distinct user ids; at FLIP seconds the
canary starts answering 500. Reported: the time from the flip to the last request the canary receives
(after which the breaker sends its users to stable), and how many client requests failed."""

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

GATEWAY, STABLE_PORT, CANARY_PORT, ADMIN = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
RATE, SECONDS, FLIP = 100, 6.0, 2.0
state = {"failing": False, "canary_hits": []}


def handler(name):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            fail = name == "canary" and state["failing"]
            if name == "canary":
                state["canary_hits"].append(time.perf_counter())
            body = json.dumps({"upstream": name}).encode()
            self.send_response(500 if fail else 200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    return H


for name, port in [("stable", STABLE_PORT), ("canary", CANARY_PORT)]:
    srv = ThreadingHTTPServer(("127.0.0.1", port), handler(name))
    threading.Thread(target=srv.serve_forever, daemon=True).start()

session = requests.Session()
adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=8)
session.mount("http://", adapter)
for _ in range(100):
    try:
        session.get(f"{GATEWAY}/x", timeout=1)
        break
    except requests.RequestException:
        time.sleep(0.1)

results = []
t0 = time.perf_counter()
flip_at = t0 + FLIP


def one(i):
    due = t0 + i / RATE
    d = due - time.perf_counter()
    if d > 0:
        time.sleep(d)
    if not state["failing"] and time.perf_counter() >= flip_at:
        state["failing"] = True
    r = session.get(f"{GATEWAY}/x", headers={"x-user-id": f"u{i}"}, timeout=5)
    results.append((r.status_code, r.headers.get("x-switchyard-fallback")))


with ThreadPoolExecutor(8) as ex:
    list(ex.map(one, range(int(RATE * SECONDS))))
after = [t for t in state["canary_hits"] if t >= flip_at]
divert = (max(after) - flip_at) if after else 0.0
errors = sum(1 for s, _ in results if s >= 500)
fallbacks = sum(1 for _, f in results if f)
route = requests.get(f"{ADMIN}/admin/routes/bench").json()
print(f"{RATE} req/s, canary at 50 %, breaker window 10 s / min 20 requests / 5 % errors, fallback on")
print(f"canary failing at t={FLIP:.0f}s: last request reached it {divert * 1e3:.0f} ms later "
      f"({len(after)} canary requests after the flip); breaker {route['autopilot']['breaker']['state']}")
print(f"client-visible errors: {errors} of {len(results)}; answered by stable through fallback: {fallbacks}")
