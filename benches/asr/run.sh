#!/usr/bin/env bash
# ASR benchmark, one invocation, the same 13 clips (LibriSpeech + pocketsphinx-testdata, 95 s) and the
# same model files: sherpa-onnx (PyPI) vs `switchyard transcribe` vs Switchyard HTTP and WebSocket, all
# with 1 inference thread, greedy search (and modified beam search, CLI vs sherpa-onnx), no VAD. Prints
# RTF, ratios, stream throughput 1 vs 2 streams and real-time result latency.
#
# Usage: benches/asr/run.sh     (env: ROUNDS=7)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-7}
PORT=18185 ADMIN=18186
VENV=.cache/bench-venv
if ! "$VENV/bin/python" -c "import sherpa_onnx, onnxruntime, websockets, requests, numpy" 2>/dev/null; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check sherpa-onnx==2.0.1 onnxruntime==1.31.1 websockets requests numpy
fi
./scripts/bootstrap.sh >/dev/null
cargo build --release -q -p switchyard

work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cat > "$work/bench.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[admin]
listen = "127.0.0.1:$ADMIN"
[log]
access_log = false
level = "warn"
[engine]
threads = 1
[[slot]]
name = "asr"
kind = "asr"
model_dir = "$PWD/models/asr/zipformer-en-3m"
engine = "ort"
max_concurrency = 2
[[route]]
name = "asr"
path = "/v1/asr"
stable = "asr"
TOML
target/release/switchyard serve --config "$work/bench.toml" &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
d=/usr/share/pocketsphinx/test/data
"$VENV/bin/python" benches/asr/bench.py "http://127.0.0.1:$PORT" "ws://127.0.0.1:$PORT/v1/asr/stream" "$ROUNDS" \
  .cache/testdata/asr/0.wav .cache/testdata/asr/1.wav $d/librivox/*.wav $d/cards/*.wav $d/goforward.raw
