#!/usr/bin/env bash
# Builds an image with buildah (no Docker): a Debian base made with debootstrap when no base image
# is given (cached), the project's wheels built on the host, then `buildah bud`.
#   runtime-image/build-image.sh runtime|operator [TAG]
#   (default tags localhost/onnx-operator/runtime:0.1.0 and localhost/onnx-operator/operator:0.1.0)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
kind=${1:?usage: build-image.sh runtime|operator [TAG]}
case "$kind" in
  runtime) containerfile="$repo/runtime-image/Containerfile"; extra=server ;;
  operator) containerfile="$repo/operator/Containerfile"; extra=operator ;;
  *) echo "unknown image kind $kind: use runtime or operator" >&2; exit 2 ;;
esac
tag=${2:-localhost/onnx-operator/$kind:0.1.0}
base=${BASE_IMAGE:-localhost/onnx-operator/base:bookworm}
cache=${ONNX_OPERATOR_CACHE:-$HOME/.cache/onnx-operator}/images
bah=(buildah --storage-driver vfs)
mkdir -p "$cache"

if ! "${bah[@]}" inspect --type image "$base" >/dev/null 2>&1; then
  if [ "$base" != "localhost/onnx-operator/base:bookworm" ]; then
    echo "base image $base not found in buildah's vfs storage" >&2; exit 1
  fi
  tarball="$cache/base-bookworm.tar"
  if [ ! -s "$tarball" ]; then
    t0=$(date +%s)
    echo "making the base image with debootstrap (once per machine, a few minutes)"
    root=$(mktemp -d)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" \
      "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$cache/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    echo "base made in $(( $(date +%s) - t0 ))s"
  fi
  ctr=$("${bah[@]}" from scratch)
  "${bah[@]}" add "$ctr" "$tarball" /
  "${bah[@]}" config --env PATH=/usr/local/bin:/usr/bin:/bin "$ctr"
  "${bah[@]}" commit --quiet "$ctr" "$base" >/dev/null
  "${bah[@]}" rm "$ctr" >/dev/null
fi

rm -rf "$repo/build/wheels"
"${PYTHON:-$repo/.venv/bin/python}" -m pip wheel --quiet --wheel-dir "$repo/build/wheels" "$repo[$extra]" 2>/dev/null
t0=$(date +%s)
"${bah[@]}" bud --quiet --isolation chroot --build-arg "BASE_IMAGE=$base" -f "$containerfile" \
  -t "$tag" "$repo" >/dev/null
echo "built $tag in $(( $(date +%s) - t0 ))s"
