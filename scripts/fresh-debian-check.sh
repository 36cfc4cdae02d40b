#!/usr/bin/env bash
# Proves the first install on a bare Debian 12, as a newcomer meets it.
# Root only; not part of the default test run (it takes minutes and the
# network to the Debian mirror).
#
#   scripts/fresh-debian-check.sh [REPO [WORKDIR]]
#
# REPO: the git repository to clone (a path or URL; default: this one), at
# its HEAD. WORKDIR: where the roots are made (default: a new
# /var/tmp/cg-fresh.XXXXXX, removed at the end unless CG_KEEP=1).
#
# 1. debootstrap --variant=minbase bookworm (what a debian:12 image holds),
#    from the mirror this host's apt sources name (or CG_FRESH_MIRROR);
#    /etc/resolv.conf and
#    /etc/hosts are copied in, as a container runtime would.
# 2. In a copy of it, a fresh `git clone` of REPO, and the README's two
#    commands, nothing else first:
#      scripts/run.sh --listen 127.0.0.1:PORT --upstream http://127.0.0.1:SIMPORT
#    in the background until GET /healthz answers 200 (the simulator the
#    build made, build/contacts-sim, started as the upstream once it exists;
#    one contacts request is then relayed through it), SIGTERM, then
#      scripts/test.sh
#    (then it_packaging again, verbosely, to show which of its checks ran:
#    systemd-analyze verify needs systemd, which that test installs), and
#    scripts/package.sh builds the Debian package there.
# 3. In a second fresh copy: apt-get install ./the.deb (Depends resolved from
#    the mirror), `contacts-gateway --version`, `-t` on the shipped config,
#    a start of the installed gateway in front of the installed simulator,
#    and a check that the install made no user and no state directory.
# Prints PASS/FAIL per step and a summary; exits 0 only if every step passed.
# Logs of each step stay in WORKDIR/logs with CG_KEEP=1.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
repo=${1:-$here}
work=${2:-}
step_timeout=${CG_FRESH_STEP_TIMEOUT:-1800} # seconds for one step

die() { echo "fresh-debian-check: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, mount)"
for tool in git curl python3; do
	command -v "$tool" >/dev/null || die "needs $tool on the host"
done

# The Debian mirror the host's apt sources use (one-line or deb822 format).
mirror=$(
	{
		grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
			grep -E '[[:space:]]bookworm([[:space:]]|$)' | sed -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/'
		for f in /etc/apt/sources.list.d/*.sources; do
			[ -f "$f" ] || continue
			awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm([ \n]|$)/ && !/bookworm-security/ {
				if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { u = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", u); print u } }' "$f"
		done
	} | head -n 1
)
mirror=${CG_FRESH_MIRROR:-$mirror}
[ -n "$mirror" ] || die "no bookworm mirror in /etc/apt sources; set CG_FRESH_MIRROR=URL"

if ! command -v debootstrap >/dev/null; then
	echo "fresh-debian-check: installing debootstrap" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } ||
		die "cannot install debootstrap"
fi

if [ -z "$work" ]; then
	work=$(mktemp -d /var/tmp/cg-fresh.XXXXXX)
else
	mkdir -p "$work"
	work=$(cd "$work" && pwd)
fi
logs=$work/logs
mkdir -p "$logs"
mounts=()   # mounted paths, unmounted in reverse order
pids=()     # background processes we started
results=()  # "PASS|FAIL step detail"

cleanup() {
	local i
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" 2>/dev/null
	done
	if [ "${CG_KEEP:-}" = 1 ]; then
		echo "fresh-debian-check: kept $work" >&2
	else
		# only after every mount is gone: never delete through a bind of /dev
		if ! grep -q " $work/" /proc/mounts; then
			rm -rf "$work"
		else
			echo "fresh-debian-check: $work still has mounts; not removed" >&2
		fi
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

record() { # record PASS|FAIL "step" "detail"
	results+=("$1|$2|$3")
	printf '%s %s: %s\n' "$1" "$2" "$3"
}

mount_root() { # the kernel file systems a build and the tests need
	local r=$1
	mount -t proc proc "$r/proc" && mounts+=("$r/proc")
	mount -t sysfs sysfs "$r/sys" && mounts+=("$r/sys")
	mount --bind /dev "$r/dev" && mounts+=("$r/dev")
	mount --bind /dev/pts "$r/dev/pts" && mounts+=("$r/dev/pts")
	mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm" && mounts+=("$r/dev/shm")
	cp /etc/resolv.conf "$r/etc/resolv.conf"
	cp /etc/hosts "$r/etc/hosts"
}

umount_root() {
	local r=$1 i
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		case "${mounts[$i]}" in
		"$r"/*) umount "${mounts[$i]}" || umount -l "${mounts[$i]}"; unset 'mounts[i]' ;;
		esac
	done
	mounts=("${mounts[@]}")
}

in_root() { # in_root ROOT LOG COMMAND...: runs bash -c COMMAND in the chroot
	local r=$1 log=$2
	shift 2
	timeout "$step_timeout" chroot "$r" /usr/bin/env -i HOME=/root TERM=dumb \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
		/bin/bash -c "$*" >"$log" 2>&1
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
head=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo "?")
echo "fresh-debian-check: $started, repository $repo at $head, mirror $mirror, in $work"

# ---- 1. a bare bookworm root ----
t0=$SECONDS
if debootstrap --variant=minbase bookworm "$work/pristine" "$mirror" >"$logs/debootstrap.log" 2>&1; then
	record PASS "debootstrap" "minbase bookworm ($(cat "$work/pristine/etc/debian_version")) in $((SECONDS - t0)) s"
else
	record FAIL "debootstrap" "see $logs/debootstrap.log: $(tail -n 1 "$logs/debootstrap.log")"
	echo "SUMMARY: FAIL (no root to test in)"
	exit 1
fi

# ---- 2. the README's two commands in a fresh clone ----
r1=$work/root-build
cp -a "$work/pristine" "$r1"
mount_root "$r1"
if git clone -q "$repo" "$r1/src" 2>"$logs/clone.log"; then
	head=$(git -C "$r1/src" rev-parse --short HEAD) # what is tested, if REPO moved on
	record PASS "clone" "$(git -C "$r1/src" log -1 --format='%h %s' | cut -c1-70)"
else
	record FAIL "clone" "$(tail -n 1 "$logs/clone.log")"
fi

port=$(free_port)
simport=$(free_port)
while [ "$simport" = "$port" ]; do simport=$(free_port); done
t0=$SECONDS
timeout "$step_timeout" chroot "$r1" /usr/bin/env -i HOME=/root TERM=dumb \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
	/bin/bash -c "cd /src && exec scripts/run.sh --listen 127.0.0.1:$port --upstream http://127.0.0.1:$simport" \
	>"$logs/run.log" 2>&1 &
run_pid=$!
pids+=("$run_pid")
sim_pid=""
health=""
while kill -0 "$run_pid" 2>/dev/null && [ $((SECONDS - t0)) -lt "$step_timeout" ]; do
	if [ -z "$sim_pid" ] && [ -x "$r1/src/build/contacts-sim" ]; then
		chroot "$r1" /src/build/contacts-sim --listen "127.0.0.1:$simport" >"$logs/sim.log" 2>&1 &
		sim_pid=$!
		pids+=("$sim_pid")
	fi
	health=$(curl -s -m 2 "http://127.0.0.1:$port/healthz" 2>/dev/null) && [ -n "$health" ] && break
	health=""
	sleep 1
done
if [ -n "$health" ]; then
	record PASS "scripts/run.sh" "setup + build + start in $((SECONDS - t0)) s; /healthz: $health"
	# one request relayed through the gateway to the simulator
	code=""
	for _ in $(seq 1 50); do
		code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -H 'x-api-key: sim-key-alpha' \
			"http://127.0.0.1:$port/api/public/contacts?days=30&limit=2") && [ "$code" = 200 ] && break
		sleep 0.2
	done
	if [ "$code" = 200 ]; then
		record PASS "contacts via the gateway" "200 from the simulator through 127.0.0.1:$port"
	else
		record FAIL "contacts via the gateway" "HTTP $code"
	fi
	kill -TERM "$run_pid"
	if wait "$run_pid"; then
		record PASS "SIGTERM" "the gateway drained and exited 0"
	else
		record FAIL "SIGTERM" "exit status $?; see $logs/run.log"
	fi
else
	record FAIL "scripts/run.sh" "no /healthz after $((SECONDS - t0)) s: $(tail -n 3 "$logs/run.log" | tr '\n' ' ' | cut -c1-300)"
	kill -TERM "$run_pid" 2>/dev/null
	wait "$run_pid" 2>/dev/null
fi
[ -n "$sim_pid" ] && kill -TERM "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null

t0=$SECONDS
if in_root "$r1" "$logs/test.log" "cd /src && scripts/test.sh"; then
	record PASS "scripts/test.sh" "$(grep -E 'tests passed|tests failed' "$logs/test.log" | tail -n 1) in $((SECONDS - t0)) s"
else
	record FAIL "scripts/test.sh" "$(grep -E 'tests passed|tests failed|^FAIL' "$logs/test.log" | tail -n 3 | tr '\n' ' ' | cut -c1-300)"
fi

# which of the packaging checks ran there (ctest shows a passing test's
# output only verbosely): man page lint, systemd-analyze verify, the .deb
if in_root "$r1" "$logs/packaging.log" "cd /src/build && ctest -R it_packaging -V"; then
	ran=$(grep -cE '^[0-9]+: PASS ' "$logs/packaging.log")
	skipped=$(grep -E '^[0-9]+: SKIP ' "$logs/packaging.log" | sed -E 's/^[0-9]+: //' | tr '\n' ' ')
	record PASS "packaging checks (it_packaging)" "$ran passed${skipped:+; $skipped}"
else
	record FAIL "packaging checks (it_packaging)" "$(grep -E '^[0-9]+: FAIL' "$logs/packaging.log" | head -n 2 | tr '\n' ' ' | cut -c1-300)"
fi

t0=$SECONDS
deb=""
if in_root "$r1" "$logs/package.log" "cd /src && scripts/package.sh /out"; then
	deb=$(ls "$r1"/out/*.deb 2>/dev/null | head -n 1)
	record PASS "scripts/package.sh" "$(basename "$deb") in $((SECONDS - t0)) s; Depends: $(dpkg-deb -f "$deb" Depends)"
else
	record FAIL "scripts/package.sh" "$(tail -n 2 "$logs/package.log" | tr '\n' ' ' | cut -c1-300)"
fi
umount_root "$r1"

# ---- 3. the package on a second bare root ----
if [ -n "$deb" ]; then
	r2=$work/root-pkg
	cp -a "$work/pristine" "$r2"
	mount_root "$r2"
	cp "$deb" "$r2/tmp/"
	name=$(basename "$deb")
	users_before=$(cut -d: -f1 "$r2/etc/passwd" | sort | tr '\n' ' ')
	t0=$SECONDS
	if in_root "$r2" "$logs/install.log" \
		"export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends /tmp/$name"; then
		record PASS "apt-get install ./$name" "in $((SECONDS - t0)) s"
	else
		record FAIL "apt-get install ./$name" "$(tail -n 2 "$logs/install.log" | tr '\n' ' ' | cut -c1-300)"
	fi
	if in_root "$r2" "$logs/version.log" "contacts-gateway --version"; then
		record PASS "contacts-gateway --version" "$(cat "$logs/version.log")"
	else
		record FAIL "contacts-gateway --version" "$(tail -n 2 "$logs/version.log" | tr '\n' ' ')"
	fi
	if in_root "$r2" "$logs/check.log" "contacts-gateway -t --config /etc/contacts-gateway/contacts-gateway.conf"; then
		record PASS "contacts-gateway -t (shipped config)" "$(tr '\n' ' ' <"$logs/check.log")"
	else
		record FAIL "contacts-gateway -t (shipped config)" "$(tr '\n' ' ' <"$logs/check.log" | cut -c1-300)"
	fi
	users_after=$(cut -d: -f1 "$r2/etc/passwd" | sort | tr '\n' ' ')
	if [ "$users_before" = "$users_after" ] && [ ! -e "$r2/var/lib/contacts-gateway" ] &&
		[ ! -e "$r2/var/lib/private/contacts-gateway" ]; then
		record PASS "install created nothing" "no new user, no /var/lib/contacts-gateway (DynamicUser + StateDirectory)"
	else
		record FAIL "install created nothing" "users before: $users_before; after: $users_after"
	fi
	# the installed gateway in front of the installed simulator
	port=$(free_port)
	simport=$(free_port)
	chroot "$r2" contacts-gateway-sim --listen "127.0.0.1:$simport" >"$logs/pkg-sim.log" 2>&1 &
	psim=$!
	pids+=("$psim")
	chroot "$r2" contacts-gateway --config /etc/contacts-gateway/contacts-gateway.conf \
		--listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$simport" \
		--cache-dir /tmp/cg-cache >"$logs/pkg-gateway.log" 2>&1 &
	pgw=$!
	pids+=("$pgw")
	code=""
	for _ in $(seq 1 100); do
		code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -H 'x-api-key: sim-key-alpha' \
			"http://127.0.0.1:$port/api/public/contacts?days=30&limit=2") && [ "$code" = 200 ] && break
		sleep 0.1
	done
	if [ "$code" = 200 ]; then
		record PASS "installed gateway + simulator" "200 through 127.0.0.1:$port"
	else
		record FAIL "installed gateway + simulator" "HTTP $code; $(tail -n 2 "$logs/pkg-gateway.log" | tr '\n' ' ')"
	fi
	kill -TERM "$pgw" "$psim" 2>/dev/null
	wait "$pgw" "$psim" 2>/dev/null
	umount_root "$r2"
else
	record FAIL "package install" "no package was built"
fi

failed=0
passed=0
for r in "${results[@]}"; do
	case "$r" in PASS*) passed=$((passed + 1)) ;; *) failed=$((failed + 1)) ;; esac
done
echo
echo "fresh-debian-check summary ($started, $head, Debian $(cat "$work/pristine/etc/debian_version") minbase from the host's apt mirror):"
for r in "${results[@]}"; do
	IFS='|' read -r verdict step detail <<<"$r"
	printf '  %s  %-36s %s\n' "$verdict" "$step" "$detail"
done
if [ "$failed" -eq 0 ]; then
	echo "SUMMARY: PASS ($passed steps)"
	exit 0
fi
echo "SUMMARY: FAIL ($failed of $((passed + failed)) steps failed; logs in $logs, kept with CG_KEEP=1)"
exit 1
