#!/usr/bin/env bash
# Pass-through proxy benchmark, one invocation, same load against three targets:
#   (a) the upstream directly, (b) nginx as a plain reverse proxy, (c) Switchyard with a route that has
#   two overrides and a 20 % sticky split, (d) the same Switchyard route with the canary autopilot on:
#   per-request fallback, circuit breaker and shadow at 0 % (issue: within 5 % of (c)).
# The upstream is nginx serving a 1 KiB static body on loopback. Both proxies run WORKERS workers, 2
# by default (nginx worker_processes, Switchyard workers) with access logs off, upstream keep-alive on.
#
# Usage: benches/proxy/run.sh     (env: DURATION=10s SETTLE=2s CONNECTIONS=50 THREADS=2 ROUNDS=3
#                                  WORKERS=2)
#   COMPARE=path/to/other/switchyard adds a target "compare": that binary on the same config, measured
#   in the same rounds (before/after a change: build the old commit, copy its binary aside, pass it
#   here). COMPARE_SERVER="key = value" adds that line to the compare target's [server] section:
#   the same binary with one setting changed, e.g.
#   COMPARE=target/release/switchyard COMPARE_SERVER="idle_poll_us = 0" for idle polling off.
#   FLOOR=1 adds a target "floor": benches/proxy/floor, the bare transport of a tokio proxy (parse,
#   forward, answer; no routing, ids, metrics or timeouts) with the same workers, for how much of
#   the gap to nginx is the runtime and how much is the gateway's work per request.
#   REUSEPORT=1 adds a target "nginx-rp": the same nginx with `reuseport` on its listen, one socket
#   per worker as Switchyard has, so the kernel spreads connections evenly between its workers
#   instead of to whichever accepts first (see the split printed below).
# The upstream alone is measured once; the proxies in interleaved rounds, their order turned by one
# place each round (nginx, switchyard, autopilot; then switchyard, autopilot, nginx; …), and the
# median of the rounds is reported, since one run on a shared 2-core machine varies by ±5 %.
# Prints requests/s and p50/p99 latency for each, the Switchyard/nginx ratios, and per round the busiest
# worker's share of each proxy's CPU (how the kernel happened to split the connections).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10s}
SETTLE=${SETTLE:-2s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
UP_PORT=18081 NGINX_PORT=18082 SY_PORT=18083 SY_ADMIN=18084 AP_PORT=18087 AP_ADMIN=18088
CMP_PORT=18089 CMP_ADMIN=18090 FLOOR_PORT=18091 RP_PORT=18092
COMPARE=${COMPARE:-}
COMPARE_SERVER=${COMPARE_SERVER:-}
FLOOR=${FLOOR:-}
REUSEPORT=${REUSEPORT:-}

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --release -q -p switchyard
if [ -n "$FLOOR" ]; then
  cargo build --release -q --manifest-path benches/proxy/floor/Cargo.toml --target-dir target/floor
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work"/{up,proxy,proxy-rp}/logs "$work/www"
chmod 755 "$work"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/www/index.html"; chmod -R a+rX "$work"

cat > "$work/up/nginx.conf" <<CONF
worker_processes 1;
daemon off; pid $work/up/nginx.pid; error_log $work/up/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_PORT; root $work/www; location / { try_files /index.html =404; } }
}
CONF
cat > "$work/proxy/nginx.conf" <<CONF
worker_processes $WORKERS;
daemon off; pid $work/proxy/nginx.pid; error_log $work/proxy/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
CONF
sed -e "s|$work/proxy/|$work/proxy-rp/|g; s|listen 127.0.0.1:$NGINX_PORT;|listen 127.0.0.1:$RP_PORT reuseport;|" \
  "$work/proxy/nginx.conf" > "$work/proxy-rp/nginx.conf"
cat > "$work/switchyard.toml" <<CONF
[server]
listen = "127.0.0.1:$SY_PORT"
workers = $WORKERS
[admin]
listen = "127.0.0.1:$SY_ADMIN"
[log]
access_log = false
level = "warn"
[[slot]]
name = "stable"
kind = "upstream"
url = "http://127.0.0.1:$UP_PORT"
[[slot]]
name = "canary"
kind = "upstream"
url = "http://127.0.0.1:$UP_PORT"
[[route]]
name = "bench"
path = "/"
stable = "stable"
canary = "canary"
canary_weight = 20
sticky = ["header:x-user-id", "cookie:uid", "ip"]
[[route.match]]
header = "x-gray-enable"
equals = "true"
slot = "canary"
[[route.match]]
cookie = "ABTEST_Bench"
slot = "canary"
CONF

sed -e "s/$SY_PORT/$AP_PORT/; s/$SY_ADMIN/$AP_ADMIN/" "$work/switchyard.toml" > "$work/autopilot.toml"
cat >> "$work/autopilot.toml" <<CONF
[route.fallback]
timeout_ms = 1000
[route.breaker]
max_error_rate = 0.05
[route.shadow]
percent = 0
CONF

nginx -p "$work/up" -c "$work/up/nginx.conf" & pids+=($!)
nginx -p "$work/proxy" -c "$work/proxy/nginx.conf" & pids+=($!)
./target/release/switchyard serve --config "$work/switchyard.toml" >"$work/switchyard.log" 2>&1 & pids+=($!)
SY_PID=$!
./target/release/switchyard serve --config "$work/autopilot.toml" >"$work/autopilot.log" 2>&1 & pids+=($!)
AP_PID=$!
CMP_PID=""
targets=(upstream nginx switchyard autopilot)
if [ -n "$COMPARE" ]; then
  sed -e "s/$SY_PORT/$CMP_PORT/; s/$SY_ADMIN/$CMP_ADMIN/" "$work/switchyard.toml" > "$work/compare.toml"
  if [ -n "$COMPARE_SERVER" ]; then
    printf '%s\n' "/^\[server\]\$/a $COMPARE_SERVER" > "$work/compare.sed"
    sed -i -f "$work/compare.sed" "$work/compare.toml"
  fi
  "$COMPARE" serve --config "$work/compare.toml" >"$work/compare.log" 2>&1 & pids+=($!)
  CMP_PID=$!
  targets+=(compare)
fi
FLOOR_PID=""
if [ -n "$FLOOR" ]; then
  ./target/floor/release/proxy-floor "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UP_PORT" "$WORKERS" & pids+=($!)
  FLOOR_PID=$!
  targets+=(floor)
fi
if [ -n "$REUSEPORT" ]; then
  nginx -p "$work/proxy-rp" -c "$work/proxy-rp/nginx.conf" & pids+=($!)
  targets+=(nginx-rp)
fi
for port in $UP_PORT $NGINX_PORT $SY_PORT $AP_PORT ${COMPARE:+$CMP_PORT} ${FLOOR:+$FLOOR_PORT} ${REUSEPORT:+$RP_PORT}; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

# Each client request carries a distinct user id so the sticky split really splits.
cat > "$work/users.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/", { ["x-user-id"] = "user-" .. n })
end
LUA

declare -A RPS P50 P99 CPU USR SPLIT
# The master process of an nginx target.
nginx_pid() {
  case $1 in upstream) cat "$work/up/nginx.pid" ;; nginx) cat "$work/proxy/nginx.pid" ;; nginx-rp) cat "$work/proxy-rp/nginx.pid" ;; esac
}
# CPU ticks used so far by each worker of a proxy, one number per worker (nginx: its worker
# processes; Switchyard: its data-plane threads; the floor: its threads). Which worker gets which of
# wrk's 50 connections is the kernel's choice (nginx: whichever worker accepts first; Switchyard and
# the floor: the SO_REUSEPORT hash), and on these shared cores a lopsided split moves a run by
# several %: the busiest worker's share of the proxy's CPU is printed with the results.
worker_ticks() {
  case $1 in
    nginx|nginx-rp) for p in $(pgrep -P "$(nginx_pid "$1")"); do awk '{print $14 + $15}' "/proc/$p/stat"; done ;;
    upstream) echo 1 ;;
    *)
      local pid
      case $1 in switchyard) pid=$SY_PID ;; autopilot) pid=$AP_PID ;; compare) pid=$CMP_PID ;; floor) pid=$FLOOR_PID ;; esac
      for t in /proc/"$pid"/task/*; do
        if [ "$1" = floor ] || grep -q '^data-' "$t/comm"; then awk '{print $14 + $15}' "$t/stat"; fi
      done ;;
  esac
}
# CPU ticks (user, system) used so far by the processes of a target (the upstream is excluded).
cpu_of() {
  local pids
  case $1 in
    upstream|nginx|nginx-rp) pids=$(nginx_pid "$1"; pgrep -P "$(nginx_pid "$1")") ;;
    switchyard) pids=$SY_PID ;;
    autopilot) pids=$AP_PID ;;
    compare) pids=$CMP_PID ;;
    floor) pids=$FLOOR_PID ;;
  esac
  local user=0 sys=0
  for p in $pids; do
    read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat")
    user=$(( user + u )); sys=$(( sys + s ))
  done
  echo "$user $sys"
}
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v } else if (v ~ /s$/) { sub(/s$/, "", v); print v*1000 } else print v }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
run() {
  local name=$1 port=$2
  # An unmeasured lead-in on the same target first (connections, pools, caches).
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$SETTLE" -s "$work/users.lua" "http://127.0.0.1:$port/" >/dev/null
  local c0; c0=$(cpu_of "$name")
  local w0; w0=$(worker_ticks "$name" | tr '\n' ' ')
  local out; out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/users.lua" "http://127.0.0.1:$port/")
  local c1; c1=$(cpu_of "$name")
  local w1; w1=$(worker_ticks "$name" | tr '\n' ' ')
  SPLIT[$name]+=" $(awk -v a="$w0" -v b="$w1" 'BEGIN { n = split(a, x, " "); split(b, y, " "); t = 0; m = 0
    for (i = 1; i <= n; i++) { d = y[i] - x[i]; t += d; if (d > m) m = d }
    printf "%.2f", (t > 0 ? m / t : 1) }')"
  local reqs; reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local per; per=$(awk -v a="$c0" -v b="$c1" -v r="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); u = (y[1] - x[1]) / hz * 1e6 / r; s = (y[2] - x[2]) / hz * 1e6 / r
    printf "%.2f %.2f", u + s, u }')
  CPU[$name]+=" ${per% *}"; USR[$name]+=" ${per#* }"
  if echo "$out" | grep -q "Non-2xx"; then echo "$out" >&2; echo "error: non-2xx responses from $name" >&2; exit 1; fi
  RPS[$name]+=" $(echo "$out" | awk '/Requests\/sec/ {print $2}')"
  P50[$name]+=" $(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")"
  P99[$name]+=" $(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")"
}
declare -A PORT=([upstream]=$UP_PORT [nginx]=$NGINX_PORT [switchyard]=$SY_PORT [autopilot]=$AP_PORT [compare]=$CMP_PORT [floor]=$FLOOR_PORT [nginx-rp]=$RP_PORT)
# The upstream alone is measured once, before the proxies: right after it was driven flat out, the
# next target measured 5–10 % slower than its own speed for over 10 s on this kind of machine,
# whichever target that was. The proxies' order turns by one place every round, since the place in
# a round still moves a run by a few % (ROUNDS = the number of proxies, or a multiple, gives every
# place the same weight).
run upstream $UP_PORT
proxies=("${targets[@]:1}")
for round in $(seq "$ROUNDS"); do
  n=${#proxies[@]}
  for i in $(seq 0 $((n - 1))); do
    t=${proxies[$(( (i + round - 1) % n ))]}
    run "$t" "${PORT[$t]}"
  done
done

echo
echo "pass-through proxy, 1 KiB responses, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS interleaved rounds, $(nproc) cores, $WORKERS workers per proxy"
printf "%-12s %12s %10s %10s %12s %12s   %s\n" target "requests/s" "p50 ms" "p99 ms" "CPU us/req" "of it user" "requests/s per round"
declare -A M_RPS M_P50 M_P99 M_CPU M_USR
for t in "${targets[@]}"; do
  M_RPS[$t]=$(echo "${RPS[$t]}" | median); M_P50[$t]=$(echo "${P50[$t]}" | median)
  M_P99[$t]=$(echo "${P99[$t]}" | median); M_CPU[$t]=$(echo "${CPU[$t]}" | median)
  M_USR[$t]=$(echo "${USR[$t]}" | median)
  printf "%-12s %12.0f %10.3f %10.3f %12.2f %12.2f  %s\n" "$t" "${M_RPS[$t]}" "${M_P50[$t]}" "${M_P99[$t]}" "${M_CPU[$t]}" "${M_USR[$t]}" "${RPS[$t]}"
done
awk -v a="${M_RPS[switchyard]}" -v b="${M_RPS[nginx]}" -v c="${M_P99[switchyard]}" -v d="${M_P99[nginx]}" -v e="${M_P50[switchyard]}" -v f="${M_P50[nginx]}" \
  -v g="${M_CPU[switchyard]}" -v h="${M_CPU[nginx]}" -v gu="${M_USR[switchyard]}" -v hu="${M_USR[nginx]}" \
  'BEGIN { printf "switchyard/nginx: throughput %.2fx, p50 %.2fx, p99 %.2fx, CPU per request %.2fx (user %.2fx, kernel %.2fx)\n", a/b, e/f, c/d, g/h, gu/hu, (g-gu)/(h-hu) }'
printf "busiest worker's share of the proxy's CPU, per round (0.50: even; 1.00: one worker took all):"
for t in "${targets[@]:1}"; do printf "  %s%s" "$t" "${SPLIT[$t]}"; done
echo
awk -v a="${M_RPS[autopilot]}" -v b="${M_RPS[switchyard]}" -v c="${M_P99[autopilot]}" -v d="${M_P99[switchyard]}" \
  'BEGIN { printf "autopilot on/off (fallback + breaker + shadow 0%%): throughput %.3fx, p99 %.2fx\n", a/b, c/d }'
canary=$(curl -s "http://127.0.0.1:$SY_ADMIN/metrics" | awk -F' ' '/^switchyard_requests_total\{route="bench",slot="canary"/ {s+=$2} /^switchyard_requests_total\{route="bench"/ {t+=$2} END { if (t) printf "%.1f", 100*s/t }')
echo "switchyard canary share during the run: ${canary}% (weight 20)"
if [ -n "$COMPARE" ]; then
  awk -v a="${M_RPS[switchyard]}" -v b="${M_RPS[compare]}" -v c="${M_CPU[switchyard]}" -v d="${M_CPU[compare]}" -v e="${M_P99[switchyard]}" -v f="${M_P99[compare]}" \
    'BEGIN { printf "switchyard/compare: throughput %.3fx, CPU per request %.3fx, p99 %.2fx\n", a/b, c/d, e/f }'
fi
if [ -n "$REUSEPORT" ]; then
  awk -v a="${M_RPS[switchyard]}" -v b="${M_RPS[nginx-rp]}" -v c="${M_CPU[switchyard]}" -v d="${M_CPU[nginx-rp]}" -v e="${M_P99[switchyard]}" -v f="${M_P99[nginx-rp]}" -v g="${M_RPS[nginx]}" \
    'BEGIN { printf "switchyard/nginx-rp: throughput %.2fx, CPU per request %.2fx, p99 %.2fx; nginx-rp/nginx: throughput %.2fx\n", a/b, c/d, e/f, b/g }'
fi
if [ -n "$FLOOR" ]; then
  awk -v a="${M_RPS[floor]}" -v b="${M_RPS[nginx]}" -v c="${M_CPU[floor]}" -v d="${M_CPU[nginx]}" -v e="${M_CPU[switchyard]}" \
    'BEGIN { printf "floor/nginx: throughput %.2fx, CPU per request %.2fx; switchyard/floor: CPU per request %.2fx\n", a/b, c/d, e/c }'
fi
