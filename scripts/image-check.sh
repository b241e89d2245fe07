#!/usr/bin/env bash
# The Docker image recipe, exercised without Docker: the build stage's steps (fetch the runtime
# assets, release build, scripts/image-assemble.sh) into a temporary root, then the image's command
# from the assembled tree with the image's configuration: health check, a face blur and a
# transcription over HTTP. Usage: scripts/image-check.sh   (reuses the release build in target/).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/fetch_assets.py --runtime-only >/dev/null
(cd web && npm ci --no-audit --no-fund --silent && npm run --silent build >/dev/null)
cargo build --release -q -p switchyard
root=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$root"; }
trap cleanup EXIT
scripts/image-assemble.sh "$root"
# The image's configuration, with its absolute paths under the temporary root and free ports.
mkdir -p "$root/etc/switchyard"
sed -e "s|/var/lib/switchyard|$root/var/lib/switchyard|" \
    -e 's|0.0.0.0:8080|127.0.0.1:18401|' -e 's|0.0.0.0:9901|127.0.0.1:18402|' \
    deploy/docker/switchyard.toml > "$root/etc/switchyard/switchyard.toml"
cd "$root/opt/switchyard"
env -i PATH=/usr/bin:/bin ORT_DYLIB_PATH="$root/opt/switchyard/libonnxruntime.so.1.31.1" \
  ./switchyard serve --config "$root/etc/switchyard/switchyard.toml" > "$root/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do ./switchyard health --url http://127.0.0.1:18402/healthz 2>/dev/null && break; sleep 0.2; done
./switchyard health --url http://127.0.0.1:18402/healthz
cd - >/dev/null
code=$(curl -s -o "$root/blurred.jpg" -w '%{http_code}' -H 'content-type: image/jpeg' \
  --data-binary @.cache/testdata/t1.jpg http://127.0.0.1:18401/v1/face/blur)
[ "$code" = 200 ] || { echo "blur answered $code"; cat "$root/serve.log"; exit 1; }
text=$(curl -s -F audio=@.cache/testdata/asr/0.wav http://127.0.0.1:18401/v1/asr/transcribe | python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
case "$text" in
  "AFTER EARLY NIGHTFALL"*) ;;
  *) echo "transcription: $text"; cat "$root/serve.log"; exit 1 ;;
esac
curl -sf http://127.0.0.1:18401/ui/ | grep -q '<title>Switchyard console</title>' \
  || { echo "the console is not served at /ui/"; exit 1; }
echo "image check: the assembled tree serves /healthz, /v1/face/blur, /v1/asr/transcribe and /ui/"
