#!/usr/bin/env bash
# One idempotent set-up for running and testing Switchyard on a fresh Debian machine:
#   1. Debian packages the tests need (only those missing are installed);
#   2. the ONNX Runtime library and model files (scripts/fetch_assets.py, pinned by sha256).
# Fast when everything is already there: no network access at all.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages used by the test suite. Later features add to this list.
# pocketsphinx-testdata: real English speech with reference transcripts (BSD-2) for the ASR tests.
# chromium: the browser the web console's tests drive (playwright-core; never a downloaded browser).
APT_PACKAGES=(pocketsphinx-testdata chromium ${SWITCHYARD_APT_PACKAGES:-})

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v python3 >/dev/null || { echo "bootstrap: python3 is required" >&2; exit 1; }
python3 scripts/fetch_assets.py

# The web console: npm packages pinned by web/package-lock.json, built by Vite into web/dist, which
# the Rust build embeds (crates/gateway/build.rs). Each step reruns only when its inputs changed.
command -v npm >/dev/null || { echo "bootstrap: Node.js (20.19 or later) with npm is required to build the web console" >&2; exit 1; }
if [ ! -f web/node_modules/.package-lock.json ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  echo "bootstrap: installing the web console's npm packages"
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -f web/dist/index.html ] || [ -n "$(find web/index.html web/admin web/src web/vite.config.ts web/tsconfig.json web/package-lock.json -newer web/dist/index.html -print -quit)" ]; then
  echo "bootstrap: building the web console"
  (cd web && npm run --silent build >/dev/null)
fi

# The Python environment of the independent reference pipelines (onnxruntime, numpy, Pillow, onnx),
# rebuilt only when tests/reference/requirements.txt changes.
VENV=.cache/venv
want=$(sha256sum tests/reference/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/reference/requirements.txt
  echo "$want" > "$VENV/.requirements.sha256"
fi

# Golden outputs of the reference pipelines, regenerated when a script or its inputs change.
mkdir -p .cache/reference
faces=.cache/reference/faces.json
if [ ! -s "$faces" ] || [ tests/reference/face_reference.py -nt "$faces" ] || [ models/manifest.toml -nt "$faces" ]; then
  echo "bootstrap: computing reference face boxes"
  "$VENV/bin/python" tests/reference/face_reference.py --root . --out "$faces.tmp"
  mv "$faces.tmp" "$faces"
fi
broken=.cache/reference/broken_centerface.onnx
if [ ! -s "$broken" ] || [ tests/reference/broken_model.py -nt "$broken" ]; then
  "$VENV/bin/python" tests/reference/broken_model.py --src models/centerface/centerface.onnx --out "$broken"
fi
worse=.cache/reference/asr-worse/joiner.onnx
if [ ! -s "$worse" ] || [ tests/reference/worse_asr.py -nt "$worse" ]; then
  "$VENV/bin/python" tests/reference/worse_asr.py --src models/asr/zipformer-en-3m --out .cache/reference/asr-worse
fi
beam=.cache/reference/asr_beam.json
if [ ! -s "$beam" ] || [ tests/reference/asr_beam.py -nt "$beam" ] || [ models/asr/zipformer-en-3m/joiner.onnx -nt "$beam" ]; then
  echo "bootstrap: computing reference beam-search transcripts"
  "$VENV/bin/python" tests/reference/asr_beam.py --model models/asr/zipformer-en-3m \
    --expected .cache/testdata/asr/expected.json --testdata .cache/testdata/asr --out "$beam.tmp"
  mv "$beam.tmp" "$beam"
fi
tensors=.cache/reference/asr_tensors.json
if [ ! -s "$tensors" ] || [ tests/reference/asr_tensors.py -nt "$tensors" ] || [ tests/reference/asr_beam.py -nt "$tensors" ]; then
  "$VENV/bin/python" tests/reference/asr_tensors.py --model models/asr/zipformer-en-3m \
    --golden .cache/testdata/asr --out "$tensors.tmp"
  mv "$tensors.tmp" "$tensors"
fi
call=.cache/reference/asr/call/call_stereo.json
if [ ! -s "$call" ] || [ tests/reference/asr_channels.py -nt "$call" ] || [ tests/reference/asr_beam.py -nt "$call" ]; then
  echo "bootstrap: transcribing the two-speaker call reference"
  "$VENV/bin/python" tests/reference/asr_channels.py --model models/asr/zipformer-en-3m \
    --left .cache/testdata/asr/0.wav \
    --right /usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav \
    --out .cache/reference/asr/call
fi
codec=.cache/reference/image_codec.json
if [ ! -s "$codec" ] || [ ! -s .cache/reference/jpeg/q75.jpg ] || [ ! -s .cache/reference/jpeg/t1_lossy.webp ] || [ tests/reference/image_codec.py -nt "$codec" ]; then
  "$VENV/bin/python" tests/reference/image_codec.py --root . --out "$codec.tmp" --files .cache/reference/jpeg
  mv "$codec.tmp" "$codec"
fi
jwt=.cache/reference/jwt/tokens.json
if [ ! -s "$jwt" ] || [ tests/reference/jwt_fixtures.py -nt "$jwt" ]; then
  "$VENV/bin/python" tests/reference/jwt_fixtures.py --out .cache/reference/jwt
fi
variants=.cache/reference/asr/0_48000_stereo.opus
if [ ! -s "$variants" ] || [ tests/reference/audio_variants.py -nt "$variants" ]; then
  echo "bootstrap: writing resampled test audio"
  "$VENV/bin/python" tests/reference/audio_variants.py --src .cache/testdata/asr/0.wav --out .cache/reference/asr
fi
