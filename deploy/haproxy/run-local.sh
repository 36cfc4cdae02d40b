#!/usr/bin/env bash
# A contacts-gateway cluster on this machine, on loopback: the vendor
# simulator, N gateways (default 3) each with its own cache directory and
# instance name, and HAProxy in front with deploy/haproxy/haproxy.cfg.
# Prints the ports and what to try; Ctrl-C stops everything it started.
#
# Usage: deploy/haproxy/run-local.sh [N]          (1 <= N <= 8)
# Environment:
#   CG_BUILD      build tree with contacts-gateway and contacts-sim (default: build)
#   CG_PORT       HAProxy's port (default 8080); gateway i listens on CG_PORT+i,
#                 the simulator on CG_PORT+10, the stats page on CG_PORT+324 (8404)
#   CG_RUN_DIR    cache directories, logs and pid files (default:
#                 ${TMPDIR:-/tmp}/contacts-gateway-cluster); kept, so a second run
#                 starts warm
#   CG_UPSTREAM   a real vendor URL instead of the simulator (then no simulator)
#   CG_GW_ARGS    more gateway flags, e.g. "--ttl 300 --upstream-rate 5"
# Needs haproxy 2.4 or later (Debian 12: apt-get install haproxy) and curl.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
n=${1:-3}
build=${CG_BUILD:-$root/build}
port=${CG_PORT:-8080}
dir=${CG_RUN_DIR:-${TMPDIR:-/tmp}/contacts-gateway-cluster}
sim_port=$((port + 10))
stats_port=$((port + 324))
keys=sim-key-alpha,sim-key-bravo,sim-key-charlie,sim-key-delta,sim-key-echo,sim-key-foxtrot

die() { echo "run-local: $*" >&2; exit 1; }
[[ $n =~ ^[1-8]$ ]] || die "N must be 1 to 8 (haproxy.cfg has servers gw1..gw8)"
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$haproxy" ] || die "haproxy not found: apt-get install haproxy (Debian 12 has 2.6)"
command -v curl >/dev/null || die "curl not found: apt-get install curl"
[ -x "$build/contacts-gateway" ] && [ -x "$build/contacts-sim" ] ||
  die "no binaries in $build: scripts/build.sh build (or set CG_BUILD)"
mkdir -p "$dir"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "run-local: stopping"
  # the gateways by their pid files (a gateway restarted by hand writes its own)
  for i in $(seq 1 "$n"); do
    if [ -f "$dir/gw$i.pid" ]; then
      pid=$(cat "$dir/gw$i.pid")
      if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--instance-name gw$i "; then
        kill -TERM "$pid" 2>/dev/null || true
      fi
      rm -f "$dir/gw$i.pid"
    fi
  done
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "run-local: stopped; caches and logs kept in $dir"
}
trap cleanup INT TERM EXIT

# wait_http URL SECONDS: until URL answers at all
wait_http() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  return 1
}

if [ -n "${CG_UPSTREAM:-}" ]; then
  upstream=$CG_UPSTREAM
else
  "$build/contacts-sim" --listen "127.0.0.1:$sim_port" --keys "$keys" 2>>"$dir/sim.log" &
  pids+=($!)
  upstream=http://127.0.0.1:$sim_port
  wait_http "$upstream/__sim/stats" 10 || die "the simulator did not start: $dir/sim.log"
fi

for i in $(seq 1 "$n"); do
  # one script per gateway, so that one killed by hand can be started again
  # as the same instance: same port, same cache directory, same name
  cat >"$dir/gw$i.sh" <<EOF
#!/bin/sh
echo \$\$ > "$dir/gw$i.pid"
exec "$build/contacts-gateway" --listen 127.0.0.1:$((port + i)) --upstream "$upstream" \\
  --cache-dir "$dir/gw$i" --instance-name gw$i --threads 1 ${CG_GW_ARGS:-} 2>>"$dir/gw$i.log"
EOF
  chmod +x "$dir/gw$i.sh"
  "$dir/gw$i.sh" &
  pids+=($!)
done
for i in $(seq 1 "$n"); do
  wait_http "http://127.0.0.1:$((port + i))/readyz" 10 || die "gw$i did not start: $dir/gw$i.log"
done

export CG_HAPROXY_BIND=127.0.0.1:$port CG_HAPROXY_STATS=127.0.0.1:$stats_port CG_HAPROXY_LOG=stdout
for i in $(seq 1 8); do unset "CG_GW$i"; done
for i in $(seq 1 "$n"); do export "CG_GW$i=127.0.0.1:$((port + i))"; done
"$haproxy" -c -q -f "$here/haproxy.cfg" || die "haproxy -c refused $here/haproxy.cfg"
"$haproxy" -db -f "$here/haproxy.cfg" >>"$dir/haproxy.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$stats_port/" 10 || die "haproxy did not start: $dir/haproxy.log"
sleep 0.5

base=http://127.0.0.1:$port
echo "contacts-gateway cluster on loopback: $n gateway(s) behind HAProxy ($dir)"
echo "  HAProxy    $base            stats http://127.0.0.1:$stats_port/  log $dir/haproxy.log"
for i in $(seq 1 "$n"); do
  echo "  gw$i        http://127.0.0.1:$((port + i))  pid $(cat "$dir/gw$i.pid")  cache $dir/gw$i  log $dir/gw$i.log"
done
[ -z "${CG_UPSTREAM:-}" ] && echo "  simulator  $upstream  keys $keys"
if [ -z "${CG_UPSTREAM:-}" ]; then
  echo "Which gateway owns each key (balance hdr(x-api-key), consistent hashing):"
  for k in ${keys//,/ }; do
    by=$(curl -s -o /dev/null -D - -H "x-api-key: $k" "$base/api/public/contacts?days=30&limit=1" |
      tr -d '\r' | sed -n 's/^[Xx]-[Ss]erved-[Bb]y: //p')
    echo "  $k -> ${by:-?}"
  done
fi
cat <<EOF
Try:
  curl -si -H 'x-api-key: sim-key-alpha' '$base/api/public/contacts?days=30&limit=2' | grep -i -e x-served-by -e cache-status
  curl -si -H 'x-api-key: sim-key-alpha' '$base/api/public/contacts?limit=2&days=030' | grep -i -e x-served-by -e cache-status
  curl -s $base/api/public/contacts?days=30      # no key: 401, from any instance (round robin)
  kill -9 \$(cat $dir/gw1.pid)                    # gw1's keys move to the others; see the stats page
  $dir/gw1.sh &                                   # gw1 again, same cache: its keys come back
Ctrl-C stops everything.
EOF
sleep infinity &
pids+=($!)
wait $! || true   # a trap interrupts wait (not a foreground sleep)
