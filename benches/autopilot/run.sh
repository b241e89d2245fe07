#!/usr/bin/env bash
# Canary autopilot benchmark: time from a canary starting to fail to its traffic being diverted, at
# 100 req/s (target: under 1 s), and client-visible errors meanwhile (target: 0 with fallback).
# The proxy overhead of the autopilot is measured by benches/proxy/run.sh (`autopilot` row).
#
# Usage: benches/autopilot/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
GW=18191 ADMIN=18192 STABLE=18193 CANARY=18194
VENV=.cache/bench-venv
"$VENV/bin/python" -c "import requests" 2>/dev/null || "$VENV/bin/pip" install -q requests
cargo build --release -q -p switchyard
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cat > "$work/gw.toml" <<TOML
[server]
listen = "127.0.0.1:$GW"
[admin]
listen = "127.0.0.1:$ADMIN"
[log]
access_log = false
level = "warn"
[[slot]]
name = "stable"
kind = "upstream"
url = "http://127.0.0.1:$STABLE"
[[slot]]
name = "canary"
kind = "upstream"
url = "http://127.0.0.1:$CANARY"
[[route]]
name = "bench"
path = "/"
stable = "stable"
canary = "canary"
canary_weight = 50
sticky = ["header:x-user-id"]
[route.fallback]
timeout_ms = 1000
[route.breaker]
window_s = 10
min_requests = 20
max_error_rate = 0.05
cooldown_s = 60
TOML
target/release/switchyard serve --config "$work/gw.toml" &
pid=$!
"$VENV/bin/python" benches/autopilot/divert.py "http://127.0.0.1:$GW" $STABLE $CANARY "http://127.0.0.1:$ADMIN"
