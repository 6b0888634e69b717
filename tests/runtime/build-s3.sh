#!/usr/bin/env bash
# Builds (once per machine) an S3-compatible server from its Go module: gofakes3, for s3:// tests.
set -euo pipefail
VERSION=v1.2.0
cache=${ONNX_OPERATOR_CACHE:-$HOME/.cache/onnx-operator}/s3/gofakes3-$VERSION
if [ ! -x "$cache/gofakes3" ]; then
  GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="$cache" \
    go install "github.com/johannesboyne/gofakes3/cmd/gofakes3@$VERSION"
fi
echo "$cache/gofakes3"
