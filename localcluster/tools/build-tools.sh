#!/usr/bin/env bash
# `make tools`: helm and kubeconform built from their Go modules (cached per version), placed in
# .cluster/bin next to kubectl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here/../../.cluster/bin}
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
cache=${ONNX_OPERATOR_CACHE:-$HOME/.cache/onnx-operator}/tools/helm-${HELM_VERSION}-kubeconform-${KUBECONFORM_VERSION}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# one build per cache at a time: checkouts building in parallel on one machine wait here
mkdir -p "$(dirname "$cache")" && exec 9>"$cache.lock" && flock 9
if [ ! -x "$cache/helm" ] || [ ! -x "$cache/kubeconform" ]; then
  mkdir -p "$cache.tmp"
  t0=$(date +%s)
  GOBIN="$cache.tmp" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  GOBIN="$cache.tmp" go install -ldflags "-s -w" "github.com/yannh/kubeconform/cmd/kubeconform@${KUBECONFORM_VERSION}"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
  echo "built helm ${HELM_VERSION} and kubeconform ${KUBECONFORM_VERSION} in $(( $(date +%s) - t0 ))s"
fi
mkdir -p "$dest"
for b in helm kubeconform; do cmp -s "$cache/$b" "$dest/$b" 2>/dev/null || cp -f "$cache/$b" "$dest/$b"; done
