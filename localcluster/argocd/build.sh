#!/usr/bin/env bash
# `make argocd-bin`: builds (or reuses) Argo CD's multi-call binary from its Go module (wrapper module in
# localcluster/argocd/module) and places it in DEST (default .cluster/bin) with the names it dispatches on.
# Cached per version under $ONNX_OPERATOR_CACHE (default ~/.cache/onnx-operator); Go's module and build
# caches make a rebuild after a version bump cheaper. ARGOCD_BUILD_PARALLEL sets `go build -p`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"
dest=${1:-$here/../../.cluster/bin}
cache=${ONNX_OPERATOR_CACHE:-$HOME/.cache/onnx-operator}/argocd/${ARGOCD_VERSION}-$(cat "$here/module/go.mod" "$here/module/go.sum" | sha256sum | cut -c1-12)
names=(argocd-application-controller argocd-repo-server argocd-server)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# one build per cache at a time: checkouts building in parallel on one machine wait here
mkdir -p "$(dirname "$cache")" && exec 9>"$cache.lock" && flock 9
if [ ! -x "$cache/argocd" ]; then
  mkdir -p "$cache.tmp"
  start=$(date +%s)
  pkg=github.com/argoproj/argo-cd/v3/common
  ldflags="-s -w -X $pkg.version=${ARGOCD_VERSION#v} -X $pkg.gitTag=${ARGOCD_VERSION} -X $pkg.gitTreeState=clean"
  echo "building Argo CD ${ARGOCD_VERSION} (cold build: 4-8 min on 2 cores; cached afterwards)"
  (cd "$here/module" && go build -p "${ARGOCD_BUILD_PARALLEL:-2}" -ldflags "$ldflags" -o "$cache.tmp/argocd" \
    github.com/argoproj/argo-cd/v3/cmd)
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
  echo "argocd cold build took $(( $(date +%s) - start ))s"
fi
mkdir -p "$dest"
cmp -s "$cache/argocd" "$dest/argocd" 2>/dev/null || cp -f "$cache/argocd" "$dest/argocd"
for n in "${names[@]}"; do ln -sfn argocd "$dest/$n"; done
# Argo CD's CRDs and base config maps (argocd-cm, argocd-secret, ...), applied by the tests as a user
# installs them, from the same module the binary is built from.
manifests=$(cd "$here/module" && go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)/manifests
mkdir -p "$dest/argocd-crds" "$dest/argocd-config"
cp -f "$manifests"/crds/*-crd.yaml "$dest/argocd-crds/"
find "$manifests/base/config" -name 'argocd-*.yaml' -exec cp -f {} "$dest/argocd-config/" \;
