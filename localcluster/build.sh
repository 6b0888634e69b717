#!/usr/bin/env bash
# Builds (or reuses) the local control plane's binaries and places them in DEST (default .cluster/bin).
# Binaries are cached per version under $ONNX_OPERATOR_CACHE (default ~/.cache/onnx-operator), so a
# fresh clone on the same machine does not rebuild; Go's module and build caches make rebuilds cheap.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"
dest=${1:-$here/../.cluster/bin}
cache=${ONNX_OPERATOR_CACHE:-$HOME/.cache/onnx-operator}/cluster-bin/${KUBE_VERSION}-etcd${ETCD_VERSION}-kwok${KWOK_VERSION}-node$(cat "$here/pause/main.go" | sha256sum | cut -c1-12)
bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd kwok pause)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

have_all() { for b in "${bins[@]}"; do [ -x "$1/$b" ] || return 1; done; }

# one build per cache at a time: checkouts building in parallel on one machine wait here
mkdir -p "$(dirname "$cache")" && exec 9>"$cache.lock" && flock 9
if ! have_all "$cache"; then
  mkdir -p "$cache.tmp"
  start=$(date +%s)
  minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=${KUBE_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor} -X $pkg.gitTreeState=clean"
  echo "building Kubernetes ${KUBE_VERSION}, etcd ${ETCD_VERSION}, kwok ${KWOK_VERSION} (cold build: 8-15 min on 2 cores; cached afterwards)"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    t0=$(date +%s)
    (cd "$here/k8s" && go build -ldflags "$ldflags" -o "$cache.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
    echo "  built $cmd in $(( $(date +%s) - t0 ))s"
  done
  t0=$(date +%s)
  (cd "$here/etcd" && go build -ldflags "-s -w" -o "$cache.tmp/etcd" .)
  echo "  built etcd in $(( $(date +%s) - t0 ))s"
  t0=$(date +%s)
  GOBIN="$cache.tmp" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  echo "  built kwok in $(( $(date +%s) - t0 ))s"
  # the sandbox ("pause") image's only binary: no registry is reachable, so it is built here
  (cd "$here/pause" && go build -ldflags "-s -w" -o "$cache.tmp/pause" .)
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
  echo "cold build took $(( $(date +%s) - start ))s"
fi
mkdir -p "$dest"
for b in "${bins[@]}"; do
  cmp -s "$cache/$b" "$dest/$b" 2>/dev/null || cp -f "$cache/$b" "$dest/$b"
done
# The kwok module ships the stage definitions that the cluster's config is built from.
kwok_mod=$(cd "$(mktemp -d)" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
echo "$kwok_mod" > "$dest/kwok-module-dir"
