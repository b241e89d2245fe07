# syntax=docker/dockerfile:1
# Switchyard image: build in a Rust image, run on Debian slim with the ONNX Runtime library and the
# model files fetched by scripts/fetch_assets.py (pinned by sha256; see models/manifest.toml). The
# runtime tree is assembled by scripts/image-assemble.sh, which scripts/image-check.sh also runs (with
# the same fetch and build steps) on machines without Docker, so this recipe is exercised by tests.
#
#   docker build -t switchyard .
#   docker run -p 8080:8080 -p 9901:9901 switchyard
#   docker run -v $PWD/my.toml:/etc/switchyard/switchyard.toml:ro -p 8080:8080 switchyard
#
# CUDA variant (ONNX Runtime's CUDA provider from the onnxruntime-gpu wheel, which is built for
# CUDA 13 and cuDNN 9, on NVIDIA's CUDA 13 + cuDNN 9 runtime image; needs an NVIDIA driver >= 580);
# its baked configuration, deploy/docker/switchyard-cuda.toml, puts the face slots on cuda:0:
#
#   docker build --target runtime-cuda -t switchyard:cuda .
#   docker run --gpus all -p 8080:8080 -p 9901:9901 switchyard:cuda

# The web console (web/, Vite + TypeScript): built here, embedded into the binary by the Rust build.
FROM node:22-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Optional cargo features, e.g. `--build-arg CARGO_FEATURES=otlp` for OpenTelemetry span export.
ARG CARGO_FEATURES=""
COPY . .
COPY --from=web /web/dist web/dist
# Without ../shared the ASR model comes from its k2-fsa release and its encoder is repaired with the
# `onnx` package (scripts/repair_model.py), from the venv fetch_assets.py looks for.
RUN python3 -m venv .cache/venv \
 && .cache/venv/bin/pip install --no-cache-dir onnx==1.23.2 \
 && python3 scripts/fetch_assets.py --runtime-only \
 && cargo build --release -p switchyard ${CARGO_FEATURES:+--features "$CARGO_FEATURES"} \
 && scripts/image-assemble.sh /out

# The CUDA build of the ONNX Runtime library, same version as the CPU one.
FROM python:3.11-slim-bookworm AS ort-cuda
RUN pip download --no-deps --only-binary=:all: -d /wheels onnxruntime-gpu==1.31.1 \
 && mkdir -p /ort \
 && python3 -c "import zipfile,glob; z=zipfile.ZipFile(glob.glob('/wheels/*.whl')[0]); [z.extract(n,'/tmp/x') for n in z.namelist() if '/capi/libonnxruntime' in n]" \
 && cd /tmp/x/onnxruntime/capi \
 && cp libonnxruntime.so.1.31.1 libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so /ort/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /opt/switchyard --shell /usr/sbin/nologin switchyard
COPY --from=build /out/opt/switchyard /opt/switchyard
COPY --from=build --chown=10001:10001 /out/var/lib/switchyard /var/lib/switchyard
COPY deploy/docker/switchyard.toml /etc/switchyard/switchyard.toml
RUN ln -s /opt/switchyard/switchyard /usr/local/bin/switchyard
WORKDIR /opt/switchyard
USER switchyard
EXPOSE 8080 9901
ENV ORT_DYLIB_PATH=/opt/switchyard/libonnxruntime.so.1.31.1
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/opt/switchyard/switchyard", "health", "--url", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["/opt/switchyard/switchyard"]
CMD ["serve", "--config", "/etc/switchyard/switchyard.toml"]

FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS runtime-cuda
RUN useradd --system --uid 10001 --home-dir /opt/switchyard --shell /usr/sbin/nologin switchyard
COPY --from=build /out/opt/switchyard /opt/switchyard
COPY --from=ort-cuda /ort/ /opt/switchyard/
COPY --from=build --chown=10001:10001 /out/var/lib/switchyard /var/lib/switchyard
COPY deploy/docker/switchyard-cuda.toml /etc/switchyard/switchyard.toml
WORKDIR /opt/switchyard
USER switchyard
EXPOSE 8080 9901
ENV ORT_DYLIB_PATH=/opt/switchyard/libonnxruntime.so.1.31.1
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/opt/switchyard/switchyard", "health", "--url", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["/opt/switchyard/switchyard"]
CMD ["serve", "--config", "/etc/switchyard/switchyard.toml"]

# `docker build .` builds the CPU image.
FROM runtime
