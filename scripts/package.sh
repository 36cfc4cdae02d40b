#!/usr/bin/env bash
# Builds the Debian package (CPack DEB, Depends from the shared libraries)
# from this tree, in its own build tree configured for the prefix /usr, and
# copies it into OUTDIR. Prints the package's path on stdout.
#   scripts/package.sh OUTDIR [BUILDDIR]     (BUILDDIR: build-pkg)
# Install it with: apt-get install ./contacts-gateway_VERSION_ARCH.deb
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: scripts/package.sh OUTDIR [BUILDDIR]" >&2; exit 2; }
out=$1
dir=${2:-build-pkg}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
scripts/setup.sh
scripts/build.sh "$dir" -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_BUILD_TYPE=Release
rm -rf "$dir/packages"
(cd "$dir" && cpack -G DEB -B "$PWD/packages" >&2)
deb=$(ls "$dir"/packages/*.deb)
[ "$(echo "$deb" | wc -l)" -eq 1 ] || { echo "package: expected one .deb, got: $deb" >&2; exit 1; }
cp "$deb" "$out/"
echo "$out/$(basename "$deb")"
