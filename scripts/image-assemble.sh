#!/usr/bin/env bash
# Assembles the runtime tree of the Docker image under OUT (default /out): the release binary, the
# ONNX Runtime library and the model files, at OUT/opt/switchyard. The Dockerfile runs this; so does
# scripts/image-check.sh on a machine without Docker, so the image recipe is exercised by tests.
# Needs: `cargo build --release -p switchyard` and `scripts/fetch_assets.py --runtime-only` done.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/out}
TARGET=${CARGO_TARGET_DIR:-target}
dest="$OUT/opt/switchyard"
rm -rf "$dest"
mkdir -p "$dest/models" "$OUT/var/lib/switchyard"
cp "$TARGET/release/switchyard" "$dest/"
# Line tables are for local backtraces; the image keeps symbols but not the 150 MB of debug info.
if command -v strip >/dev/null; then strip --strip-debug "$dest/switchyard"; fi
cp -L .cache/onnxruntime/libonnxruntime.so.1.* "$dest/"
for m in blazeface centerface silero-vad asr; do
  cp -r "models/$m" "$dest/models/$m"
done
cp deploy/docker/switchyard.toml "$dest/switchyard.toml"
echo "assembled $dest ($(du -sh "$dest" | cut -f1))"
