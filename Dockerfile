# syntax=docker/dockerfile:1
# Switchyard image: build in a Rust image, run on Debian slim with the ONNX Runtime library and the
# model files fetched by scripts/fetch_assets.py (pinned by sha256; see models/manifest.toml).
#
#   docker build -t switchyard .
#   docker run -p 8080:8080 -p 9901:9901 switchyard
#   docker run -v $PWD/my.toml:/etc/switchyard/switchyard.toml:ro -p 8080:8080 switchyard

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN python3 scripts/fetch_assets.py \
 && cargo build --release -p switchyard \
 && mkdir -p /out/opt/switchyard \
 && cp target/release/switchyard /out/opt/switchyard/ \
 && cp -L .cache/onnxruntime/libonnxruntime.so.* /out/opt/switchyard/ \
 && cp -r models /out/opt/switchyard/models \
 && rm -f /out/opt/switchyard/models/manifest.toml /out/opt/switchyard/models/README.md

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /opt/switchyard --shell /usr/sbin/nologin switchyard
COPY --from=build /out/opt/switchyard /opt/switchyard
COPY deploy/docker/switchyard.toml /etc/switchyard/switchyard.toml
RUN ln -s /opt/switchyard/switchyard /usr/local/bin/switchyard
WORKDIR /opt/switchyard
USER switchyard
EXPOSE 8080 9901
ENV ORT_DYLIB_PATH=/opt/switchyard/libonnxruntime.so.1.31.1
ENTRYPOINT ["/opt/switchyard/switchyard"]
CMD ["serve", "--config", "/etc/switchyard/switchyard.toml"]
