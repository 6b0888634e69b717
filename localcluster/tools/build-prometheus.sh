#!/usr/bin/env bash
# Prometheus (and promtool) with Kubernetes service discovery, built from its Go module (cached per version) into
# .cluster/bin. Debian's `prometheus` package is built without kubernetes_sd_configs, so tests that
# discover serving pods through the API server (as a user's Prometheus does) need this one; tests
# that scrape loopback targets by static config keep using the Debian binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here/../../.cluster/bin}
PROMETHEUS_MODULE_VERSION=v0.309.1  # Prometheus 3.9.1 (its Go module is versioned v0.3xx)
cache=${ONNX_OPERATOR_CACHE:-$HOME/.cache/onnx-operator}/tools/prometheus-${PROMETHEUS_MODULE_VERSION}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# one build per cache at a time: checkouts building in parallel on one machine wait here
mkdir -p "$(dirname "$cache")" && exec 9>"$cache.lock" && flock 9
if [ ! -x "$cache/prometheus" ] || [ ! -x "$cache/promtool" ]; then
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp/src"
  t0=$(date +%s)
  # `go install pkg@version` refuses modules whose go.mod has exclude directives: build from a
  # one-line main module that requires it instead (the UI assets are left out; the HTTP API is all we use)
  (cd "$cache.tmp/src" && go mod init prometheus-build >/dev/null 2>&1 \
    && go get "github.com/prometheus/prometheus/cmd/prometheus@${PROMETHEUS_MODULE_VERSION}" \
    && go get "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_MODULE_VERSION}" \
    && go build -trimpath -ldflags "-s -w" -o "$cache.tmp/prometheus" github.com/prometheus/prometheus/cmd/prometheus \
    && go build -trimpath -ldflags "-s -w" -o "$cache.tmp/promtool" github.com/prometheus/prometheus/cmd/promtool)
  rm -rf "$cache.tmp/src" "$cache" && mv "$cache.tmp" "$cache"
  echo "built prometheus ${PROMETHEUS_MODULE_VERSION} in $(( $(date +%s) - t0 ))s"
fi
mkdir -p "$dest"
for b in prometheus promtool; do cmp -s "$cache/$b" "$dest/$b" 2>/dev/null || cp -f "$cache/$b" "$dest/$b"; done
