#!/usr/bin/env bash
# Checks Switchyard's CUDA path on a machine with an NVIDIA GPU (`make cuda-check`):
#
#   1. parity: `switchyard detect` on the test photos with each detector, on the CPU and on cuda:0,
#      through the same onnxruntime-gpu library: same faces, box edges within 1 px or 1 % of the
#      face's size, scores within 0.01;
#      `switchyard transcribe` on the test speech: the same text on both;
#   2. the gateway with `[engine] device = "cuda:0"`: face and speech requests, `GET /admin/slots`
#      and `/metrics` report the slots on cuda:0 with their device memory (and a speech slot with
#      its own `device = "cpu"` on the CPU, next to them), a hot swap on the GPU;
#   3. timings: `switchyard blur` images/s on the CPU and on the GPU, `/blur` at 1 and 8 clients,
#      first requests at new image sizes, BlazeFace's tiles per run, speech real-time factors.
#
# It prints one line per check and exits 1 if any failed. Needs: the release binary, the
# onnxruntime-gpu libraries in ORT_GPU_DIR (`scripts/fetch_assets.py --cuda` puts them in
# .cache/onnxruntime-gpu), the CUDA 13 and cuDNN 9 libraries (found on LD_LIBRARY_PATH, or in the
# `nvidia-*` Python packages of python3, as PyTorch installs them), curl and python3.
#
# Environment: SWITCHYARD (binary), ORT_GPU_DIR, PHOTOS (a folder of 1080p JPEGs for the timings;
# default: copies of the test photos), OUT (where logs and outputs go; default .cache/cuda-check).
set -uo pipefail
cd "$(dirname "$0")/.."

BIN=${SWITCHYARD:-target/release/switchyard}
ORT_GPU_DIR=${ORT_GPU_DIR:-.cache/onnxruntime-gpu}
OUT=${OUT:-.cache/cuda-check}
DEVICE=${DEVICE:-cuda:0}   # DEVICE=cpu runs the same checks without a GPU (a check of this script)
GPU=${DEVICE%%:*}
TESTDATA=.cache/testdata
mkdir -p "$OUT"
export ORT_DYLIB_PATH="$ORT_GPU_DIR/libonnxruntime.so.1.31.1"
failed=0
pass() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; failed=1; }

# The CUDA libraries of python3's nvidia packages (cuBLAS, cuDNN, cuFFT, cuRAND, the runtime).
nvlibs=$(python3 - <<'EOF' 2>/dev/null
import os, site, sys
dirs = set()
for root in site.getsitepackages() + [site.getusersitepackages()] + sys.path:
    base = os.path.join(root, "nvidia")
    if os.path.isdir(base):
        for d, _, files in os.walk(base):
            if any(".so" in f for f in files):
                dirs.add(d)
print(":".join(sorted(dirs)))
EOF
)
export LD_LIBRARY_PATH="${nvlibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || fail "nvidia-smi"
[ -x "$BIN" ] || { fail "no binary at $BIN"; exit 1; }
[ -f "$ORT_DYLIB_PATH" ] || { fail "no $ORT_DYLIB_PATH (scripts/fetch_assets.py --cuda)"; exit 1; }
for lib in libcudart.so.13 libcublasLt.so.13 libcudnn.so.9 libcufft.so.12 libcurand.so.10; do
    found=$(IFS=:; for d in $LD_LIBRARY_PATH; do [ -e "$d/$lib" ] && echo "$d/$lib" && break; done)
    [ -n "$found" ] && echo "      $lib: $found" || fail "$lib not found (LD_LIBRARY_PATH)"
done

# Compares two `switchyard detect` outputs: same faces, boxes within 1 px (or 1 %), scores within 0.01.
compare_faces() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
fa = sorted(a["faces"], key=lambda f: f["box"])
fb = sorted(b["faces"], key=lambda f: f["box"])
if len(fa) != len(fb):
    print(f"{len(fa)} faces on the CPU, {len(fb)} on the GPU"); sys.exit(1)
# A box edge may move by 1 px or 1 % of the face's size, whichever is more: the GPU's kernels (TF32
# tensor cores among them) round differently, and a tiled detector's merged box is a score-weighted
# mean, so a 1e-4 change of score moves it.
def slack(f):
    x1, y1, x2, y2 = f["box"]
    return max(1.0, 0.01 * max(x2 - x1, y2 - y1))
dbox = max((abs(x - y) for f, g in zip(fa, fb) for x, y in zip(f["box"], g["box"])), default=0)
over = [f for f, g in zip(fa, fb) if max(abs(x - y) for x, y in zip(f["box"], g["box"])) > slack(f)]
dscore = max((abs(f["score"] - g["score"]) for f, g in zip(fa, fb)), default=0)
print(f"{len(fa)} faces, largest box difference {dbox:.2f} px, score {dscore:.4f}; "
      f"infer {a['timings_ms']['infer']:.1f} ms CPU, {b['timings_ms']['infer']:.1f} ms GPU")
sys.exit(0 if not over and dscore <= 0.01 else 1)
EOF
}

echo "== 1. parity, CPU vs $DEVICE (same onnxruntime-gpu library)"
for det in centerface blazeface-back blazeface-front; do
    for img in t1.jpg astronaut.png rocket.jpg; do
        for dev in cpu "$DEVICE"; do
            # CenterFace runs at one fixed input shape on a GPU: the CPU run does the same.
            fixed=()
            [ "$det" = centerface ] && fixed=(--fixed-shape true)
            "$BIN" detect --engine ort --device "$dev" --detector "$det" "${fixed[@]}" "$TESTDATA/$img" \
                >"$OUT/detect-$det-$img-${dev%%:*}.json" 2>"$OUT/detect-$det-$img-${dev%%:*}.err" \
                || { fail "detect $det $img on $dev: $(tail -n 3 "$OUT/detect-$det-$img-${dev%%:*}.err")"; continue 2; }
        done
        if msg=$(compare_faces "$OUT/detect-$det-$img-cpu.json" "$OUT/detect-$det-$img-$GPU.json"); then
            pass "detect $det $img: $msg"
        else
            fail "detect $det $img: $msg"
        fi
    done
done
for wav in "$TESTDATA"/asr/*.wav; do
    name=$(basename "$wav")
    for dev in cpu "$DEVICE"; do
        "$BIN" transcribe --json --engine ort --device "$dev" "$wav" \
            >"$OUT/asr-$name-${dev%%:*}.json" 2>"$OUT/asr-$name-${dev%%:*}.err" \
            || fail "transcribe $name on $dev: $(tail -n 3 "$OUT/asr-$name-${dev%%:*}.err")"
    done
    if msg=$(python3 - "$OUT/asr-$name-cpu.json" "$OUT/asr-$name-$GPU.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
same = a["text"] == b["text"]
print(f"{'same text' if same else 'text differs'}: {b['text'][:60]!r}; RTF CPU {a.get('rtf', 0):.4f}, GPU {b.get('rtf', 0):.4f}")
sys.exit(0 if same else 1)
EOF
    ); then pass "transcribe $name: $msg"; else fail "transcribe $name: $msg"; fi
done

echo "== 2. the gateway on $DEVICE"
cat >"$OUT/cuda.toml" <<EOF
[server]
listen = "127.0.0.1:18080"
[admin]
listen = "127.0.0.1:19901"
[engine]
default = "ort"
device = "$DEVICE"
[[slot]]
name = "faces-v1"
kind = "face"
detector = "blazeface-back"
model = "models/blazeface/face_detection_back_256x256.onnx"
version = "1.0"
[[slot]]
name = "faces-v2"
kind = "face"
detector = "centerface"
model = "models/centerface/centerface.onnx"
version = "2.0"
[[route]]
name = "faces"
path = "/v1/face"
stable = "faces-v1"
canary = "faces-v2"
[[route.match]]
header = "x-gray-enable"
slot = "faces-v2"
[[slot]]
name = "asr-v1"
kind = "asr"
family = "transducer"
model_dir = "models/asr/zipformer-en-3m"
vad = "models/silero-vad/silero_vad.onnx"
version = "1.0"
[[route]]
name = "asr"
path = "/v1/asr"
stable = "asr-v1"
# The same model pinned to the CPU by its own device key, next to the GPU slots.
[[slot]]
name = "asr-cpu"
kind = "asr"
family = "transducer"
model_dir = "models/asr/zipformer-en-3m"
device = "cpu"
[[route]]
name = "asr-cpu"
path = "/v1/asr-cpu"
stable = "asr-cpu"
EOF
started=$(date +%s.%N)
"$BIN" serve --config "$OUT/cuda.toml" >"$OUT/serve.log" 2>&1 &
server=$!
ready=0
for _ in $(seq 1 240); do
    if curl -sf -o /dev/null http://127.0.0.1:19901/readyz; then ready=1; break; fi
    kill -0 $server 2>/dev/null || break
    sleep 0.5
done
if [ $ready = 1 ]; then
    pass "serve on $DEVICE: ready in $(python3 -c "import time; print(f'{time.time() - $started:.1f}')") s"
    D=http://127.0.0.1:18080/v1/face
    hdr=$(curl -s -D - -o "$OUT/blur-v1.jpg" -H 'content-type: image/jpeg' --data-binary @"$TESTDATA/t1.jpg" "$D/blur")
    # As many faces as `switchyard detect` found with the same detector on the CPU.
    n1=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['faces']))" "$OUT/detect-blazeface-back-t1.jpg-cpu.json")
    echo "$hdr" | grep -qi "^x-faces: $n1" && echo "$hdr" | grep -qi '^x-switchyard-slot: faces-v1' \
        && pass "/blur t1.jpg on faces-v1 (blazeface, $DEVICE): $n1 faces" \
        || fail "/blur t1.jpg on faces-v1: $(echo "$hdr" | grep -i -E '^(http|x-faces|x-switchyard)' | tr -d '\r' | tr '\n' ' ')"
    hdr=$(curl -s -D - -o "$OUT/blur-v2.jpg" -H 'x-gray-enable: 1' -H 'content-type: image/jpeg' --data-binary @"$TESTDATA/t1.jpg" "$D/blur")
    echo "$hdr" | grep -qi '^x-faces: 6' && echo "$hdr" | grep -qi '^x-switchyard-slot: faces-v2' \
        && pass "/blur t1.jpg on faces-v2 (centerface, $DEVICE): 6 faces" \
        || fail "/blur t1.jpg on faces-v2: $(echo "$hdr" | grep -i -E '^(http|x-faces|x-switchyard)' | tr -d '\r' | tr '\n' ' ')"
    curl -s -H 'content-type: audio/wav' --data-binary @"$TESTDATA/asr/0.wav" \
        http://127.0.0.1:18080/v1/asr/transcribe >"$OUT/serve-asr.json"
    python3 - "$OUT/serve-asr.json" "$OUT/asr-0.wav-cpu.json" <<'EOF' && pass "/v1/asr/transcribe 0.wav on $DEVICE: the CLI's CPU text" || fail "/v1/asr/transcribe: $(head -c 300 "$OUT/serve-asr.json")"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
sys.exit(0 if a.get("text") == b.get("text") else 1)
EOF
    curl -s -H 'content-type: audio/wav' --data-binary @"$TESTDATA/asr/0.wav" \
        http://127.0.0.1:18080/v1/asr-cpu/transcribe >"$OUT/serve-asr-cpu.json"
    python3 - "$OUT/serve-asr-cpu.json" "$OUT/asr-0.wav-cpu.json" <<'EOF' && pass "/v1/asr-cpu/transcribe 0.wav (slot device = cpu): the CLI's CPU text" || fail "/v1/asr-cpu/transcribe: $(head -c 300 "$OUT/serve-asr-cpu.json")"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
sys.exit(0 if a.get("text") == b.get("text") else 1)
EOF
    curl -s http://127.0.0.1:19901/admin/slots >"$OUT/slots.json"
    python3 - "$OUT/slots.json" "$DEVICE" <<'EOF' && pass "GET /admin/slots: every model slot on its device ($DEVICE, asr-cpu on cpu) with device memory" || fail "GET /admin/slots: $(head -c 600 "$OUT/slots.json")"
import json, sys
slots = json.load(open(sys.argv[1]))
slots = slots.get("slots", slots) if isinstance(slots, dict) else slots
bad = 0
for s in slots:
    mem = s.get("details", {}).get("memory") or {}
    d = s.get("details", {})
    print(f"      {s.get('name')}: sessions {d.get('sessions')}, fixed_shape {d.get('fixed_shape')}, "
          f"tile_batch {d.get('tile_batch')}, memory {d.get('memory_devices')}")
    want = "cpu" if s.get("name") == "asr-cpu" else sys.argv[2]
    if s.get("kind") in ("face", "asr") and mem.get("device") != want:
        bad = 1
sys.exit(bad)
EOF
    curl -s http://127.0.0.1:19901/metrics >"$OUT/metrics.txt"
    grep 'switchyard_model_memory_bytes{' "$OUT/metrics.txt" | sed 's/^/      /'
    grep -q "switchyard_model_memory_bytes{.*device=\"$DEVICE\"" "$OUT/metrics.txt" \
        && pass "/metrics: switchyard_model_memory_bytes{device=\"$DEVICE\"}" \
        || fail "/metrics: no switchyard_model_memory_bytes on $DEVICE"
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | sed 's/^/      nvidia-smi: /'
    swap=$(curl -s -w ' %{http_code}' -H 'content-type: application/json' \
        -d '{"model":"models/centerface/centerface.onnx","detector":"centerface","version":"1.1"}' \
        http://127.0.0.1:19901/admin/slots/faces-v1/load)
    hdr=$(curl -s -D - -o /dev/null -H 'content-type: image/jpeg' --data-binary @"$TESTDATA/t1.jpg" "$D/blur")
    [ "${swap##* }" = 200 ] && echo "$hdr" | grep -qi '^x-faces: 6' \
        && pass "hot swap of faces-v1 to centerface on $DEVICE, then /blur: 6 faces" \
        || fail "hot swap: $swap / $(echo "$hdr" | tr -d '\r' | grep -i -E '^(http|x-faces)' | tr '\n' ' ')"
    curl -s http://127.0.0.1:19901/metrics | grep 'switchyard_model_memory_bytes{.*faces-v1' | sed 's/^/      after the swap: /'

    kill -TERM $server; wait $server
    pass "SIGTERM: the gateway stopped (exit $?)"
else
    fail "serve on $DEVICE never became ready: $(tail -n 5 "$OUT/serve.log")"
    kill $server 2>/dev/null
fi

echo "== 3. timings: /blur on one CenterFace slot, the CPU against the GPU and its settings"
cat >"$OUT/bench.py" <<'EOF'
import concurrent.futures, glob, os, sys, time, urllib.request
testdata, url, photos, label = sys.argv[1:5]
# Optional: the most a photo of the mixed stream may take (no stall at a change of image size).
mixed_max_ms = float(sys.argv[5]) if len(sys.argv) > 5 else None
files = sorted(glob.glob(os.path.join(photos, "*.jpg")))[:40] if photos else []
bodies = [open(f, "rb").read() for f in files] or [open(os.path.join(testdata, "t1.jpg"), "rb").read()] * 16
def post(body):
    t = time.perf_counter()
    ctype = "image/png" if body[:4] == b"\x89PNG" else "image/jpeg"
    with urllib.request.urlopen(urllib.request.Request(url + "/blur", data=body, headers={"content-type": ctype})) as r:
        r.read()
    return (time.perf_counter() - t) * 1000
# The first request at an image size the model has not seen pays for the engine's set-up at that
# input shape (on the GPU, cuDNN's algorithm search); the second shows the steady time.
firsts = []
for name in ("rocket.jpg", "astronaut.png", "t1.jpg"):
    body = open(os.path.join(testdata, name), "rb").read()
    firsts.append(f"{name} {post(body):.0f}/{post(body):.0f}")
# A mixed stream: photos of three sizes in turn.
mixed = [open(os.path.join(testdata, n), "rb").read() for n in ("rocket.jpg", "t1.jpg", "astronaut.png")] * 4
mixed_lat = sorted(post(b) for b in mixed)
for b in bodies[:3]:
    post(b)
lat = sorted(post(b) for b in bodies)
t = time.perf_counter()
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    list(ex.map(post, bodies * 4))
rate = len(bodies) * 4 / (time.perf_counter() - t)
print(f"      {label:<22} first/second ms at new sizes: {', '.join(firsts)}; "
      f"mixed sizes in turn: p50 {mixed_lat[len(mixed_lat) // 2]:.1f} ms, max {mixed_lat[-1]:.0f} ms; "
      f"1 client p50 {lat[len(lat) // 2]:.1f} ms p95 {lat[int(len(lat) * 0.95) - 1]:.1f} ms; "
      f"8 clients {rate:.1f} images/s")
if mixed_max_ms is not None and mixed_lat[-1] > mixed_max_ms:
    print(f"      a photo of the mixed stream took {mixed_lat[-1]:.0f} ms, over {mixed_max_ms:.0f}")
    sys.exit(1)
EOF
# Runs a gateway with one CenterFace slot on device $2 with extra [engine] lines $3 and slot lines
# $4, measures it; with $5, fails if a photo of the mixed-size stream takes longer (ms).
bench_variant() {
    local label=$1 device=$2 extra=$3 slot=${4:-} mixed_max=${5:-}
    local file="$OUT/bench-${label//[^a-z0-9]/_}"
    cat >"$file.toml" <<EOF
[server]
listen = "127.0.0.1:18081"
[admin]
listen = "127.0.0.1:19902"
[engine]
default = "ort"
device = "$device"
$extra
[[slot]]
name = "faces"
kind = "face"
detector = "centerface"
model = "models/centerface/centerface.onnx"
version = "1"
$slot
[[route]]
name = "faces"
path = "/v1/face"
stable = "faces"
EOF
    "$BIN" serve --config "$file.toml" >"$file.log" 2>&1 &
    local pid=$! ok=0
    for _ in $(seq 1 120); do
        curl -sf -o /dev/null http://127.0.0.1:19902/readyz && { ok=1; break; }
        kill -0 $pid 2>/dev/null || break
        sleep 0.5
    done
    if [ $ok = 1 ]; then
        echo "      $label: ready in $(grep -o 'load_ms=[0-9.]*' "$file.log" | head -n 1)"
        python3 "$OUT/bench.py" "$TESTDATA" http://127.0.0.1:18081/v1/face "${PHOTOS:-}" "$label" $mixed_max \
            || fail "bench $label"
    else
        fail "bench $label: not ready: $(tail -n 3 "$file.log")"
    fi
    kill -TERM $pid 2>/dev/null
    wait $pid 2>/dev/null
}
bench_variant cpu cpu ""
# The default on a GPU (one fixed CenterFace input shape): no stall when the image size changes.
bench_variant "$GPU (defaults)" "$DEVICE" "" "" 500
bench_variant "$GPU, image sizes" "$DEVICE" "" "fixed_shape = false"
bench_variant "$GPU, 2 sessions" "$DEVICE" "cuda_sessions = 2"
bench_variant "$GPU, exhaustive" "$DEVICE" 'cuda_conv_search = "exhaustive"'

echo "      BlazeFace tiled, \`switchyard detect\` inference time by tiles per run:"
big=$(ls "${PHOTOS:-$TESTDATA}"/*.jpg 2>/dev/null | head -n 1)
for dev in cpu "$DEVICE"; do
    for tb in 1 8 32; do
        [ "$dev" = cpu ] && [ "$tb" != 1 ] && continue
        "$BIN" detect --engine ort --device "$dev" --detector blazeface-back --tile-batch $tb "$big" \
            >"$OUT/tiles-$tb-${dev%%:*}.json" 2>"$OUT/tiles-$tb-${dev%%:*}.err" \
            && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"        {sys.argv[2]}, {sys.argv[3]} a run: {len(d['faces'])} faces, {d['timings_ms']['infer']:.1f} ms\")" \
                "$OUT/tiles-$tb-${dev%%:*}.json" "$dev" "$tb" \
            || fail "detect blazeface-back --tile-batch $tb on $dev: $(tail -n 3 "$OUT/tiles-$tb-${dev%%:*}.err")"
    done
done

if [ -n "${PHOTOS:-}" ]; then
    for dev in cpu "$DEVICE"; do
        rm -rf "$OUT/blurred"
        t0=$(date +%s.%N)
        if "$BIN" blur --engine ort --device "$dev" -o "$OUT/blurred" "$PHOTOS"/*.jpg >/dev/null 2>"$OUT/blur-cli-${dev%%:*}.err"; then
            n=$(ls "$OUT/blurred" | wc -l)
            echo "      switchyard blur (centerface) on $dev: $n photos, $(python3 -c "import time; print(f'{$n / (time.time() - $t0):.1f}')") images/s (model load included)"
        else
            fail "switchyard blur on $dev: $(tail -n 3 "$OUT/blur-cli-${dev%%:*}.err")"
        fi
    done
fi
exit $failed
