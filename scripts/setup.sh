#!/usr/bin/env bash
# Installs the Debian 12 packages the gateway needs to build, run and test,
# only those that are missing. Needs root (or sudo) the first time.
set -euo pipefail

# The one list of what building, testing and packaging need. Each name was
# found missing on a bare Debian 12 root (debootstrap --variant=minbase, like
# a debian:12 image) by scripts/fresh-debian-check.sh:
#   libc6-dev          gcc without its recommends cannot link (no crt1.o)
#   ca-certificates    TLS to the vendor (libcurl only recommends it)
#   dpkg-dev, file     the Debian package's Depends (dpkg-shlibdeps)
#   groff-base         the man page check
# libsystemd-dev: sd_notify and socket activation (sd_listen_fds).
# zlib1g-dev, libbrotli-dev, libzstd-dev: compressed answers (cache/repr.c).
packages=(gcc libc6-dev make cmake pkg-config libevent-dev libcurl4-openssl-dev
          libcjson-dev liblmdb-dev libssl-dev libxxhash-dev libcmocka-dev libsystemd-dev
          zlib1g-dev libbrotli-dev libzstd-dev
          python3 curl ca-certificates dpkg-dev file groff-base)
if [ "${CG_SETUP_EXTRA:-}" != "" ]; then
  read -r -a extra <<<"$CG_SETUP_EXTRA"
  packages+=("${extra[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
