# onnx-operator: the two set-up commands are `make demo` and `make test`; everything else is here too.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
KUBECONFIG ?= $(CURDIR)/.cluster/kubeconfig
PYTEST_ARGS ?=
# V=1: every set-up phase prints its full output (by default one line each; the output is in .cluster/logs/)
V ?= 0
export V
PHASE := ./localcluster/phase.sh

.PHONY: help model-store deps venv test unit lint cluster cluster-bin node-images argocd-bin cluster-down demo demo-down bench crds docs docs-check run images tools protos monitoring

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install missing system packages (Debian/Ubuntu) listed in .ci/apt-packages.txt
	@$(PHASE) deps "system packages (.ci/apt-packages.txt)" --expect "a few minutes when packages are missing" \
	  -- ./.ci/install-apt-packages

$(BIN)/.installed: pyproject.toml
	@command -v go >/dev/null || { echo "Go >= 1.26 is required to build the local control plane (https://go.dev/dl)"; exit 1; }
	@$(PHASE) venv "Python virtualenv $(VENV) with every extra (pip)" --expect "1-3 min" -- bash -c \
	  "$(PY) -m venv $(VENV) && $(BIN)/pip install --upgrade pip && $(BIN)/pip install -e '.[operator,server,test,dev,docs]'"
	@touch $@

venv: $(BIN)/.installed ## create the virtualenv with every extra

cluster-bin: ## build (or reuse the cached) control-plane and node binaries into .cluster/bin; the cold build takes 8-15 min on 2 idle cores
	@$(PHASE) cluster-bin "Kubernetes, etcd, kwok and pause binaries (Go)" --expect "8-15 min cold, seconds when cached" \
	  -- ./localcluster/build.sh $(CURDIR)/.cluster/bin

argocd-bin: ## build (or reuse the cached) Argo CD binary (controller, repo server, API server, CLI) into .cluster/bin
	@$(PHASE) argocd-bin "Argo CD binary (Go)" --expect "4-8 min cold, seconds when cached" \
	  -- ./localcluster/argocd/build.sh $(CURDIR)/.cluster/bin

cluster: deps venv cluster-bin node-images ## start the local cluster: control plane, kwok nodes, one real node (builds the images)
	@$(PHASE) cluster "local cluster: control plane, kwok nodes, real node" --expect "about 1.5 min cold, 10 s warm" \
	  -- $(BIN)/python -m localcluster up
	@echo "    kubeconfig: $(CURDIR)/.cluster/kubeconfig, kubectl: $(CURDIR)/.cluster/bin/kubectl"

cluster-down: ## stop every process `make cluster` started, restore the host, remove its state
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m localcluster down; fi

node-images: venv cluster-bin ## build (or reuse) the images the real node runs: pause, runtime, operator (cached by source hash)
	@$(PHASE) node-images "images: pause, runtime, operator (buildah)" --expect "5-8 min cold, seconds when cached" \
	  -- $(BIN)/python -m localcluster images

test: deps venv lint docs-check tools cluster-bin argocd-bin node-images ## run the lint checks and the whole test suite (builds and starts the local cluster with its real node when needed)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: venv ## only the pure unit tests
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check operator runtime-image localcluster tests bench monitoring
	$(BIN)/mypy --strict operator/onnx_operator runtime-image/onnx_server monitoring

crds: venv ## regenerate crds/ (and the chart's copy) from the API models
	$(BIN)/python -m onnx_operator.api.crdgen --out crds/
	cp crds/*.yaml charts/onnx-operator/crds/

monitoring: venv ## regenerate the chart's Grafana dashboard and alert rules (and the plain rules file) from monitoring/
	$(BIN)/python -m monitoring

docs: venv ## regenerate the API reference page and the Argo CD config, then build the docs site (build/site)
	$(BIN)/python -m onnx_operator.api.reference --write docs/reference.md
	$(BIN)/python examples/argocd/generate.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

docs-check: venv ## the generated docs are up to date and the site builds with --strict (part of `make test`)
	@$(BIN)/python -m onnx_operator.api.reference --check docs/reference.md
	@$(PHASE) docs "docs site (mkdocs build --strict)" --expect "about 5 s" \
	  -- env NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

protos: venv ## regenerate onnx-server's gRPC modules from runtime-image/onnx_server/proto/inference.proto
	cd runtime-image && ../$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
	  onnx_server/proto/inference.proto

run: venv ## run the operator in the foreground against .cluster/kubeconfig (or $KUBECONFIG), with the local cluster's runtime image
	@KUBECONFIG=$(KUBECONFIG) exec $(BIN)/python -m localcluster.run_operator

model-store: venv ## serve examples/basic's model on 198.18.0.254:30080 in the foreground (`make demo` runs the same store)
	@exec $(BIN)/python -m localcluster.model_store

demo: deps venv tools cluster ## the guided demo: the operator (Helm chart) serving real models on the real node
	@$(BIN)/python -m localcluster.demo

demo-down: ## stop the demo and the local cluster
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m localcluster.demo --stop || true; fi
	@$(MAKE) --no-print-directory cluster-down

bench: deps venv ## benchmarks; results printed as ratios against a baseline measured in the same run
	$(BIN)/python bench/runtime_bench.py
	$(BIN)/python bench/grpc_bench.py
	$(BIN)/python bench/operator_bench.py
	$(BIN)/python bench/node_bench.py
	$(BIN)/python bench/large_model_bench.py
	$(BIN)/python bench/failover_bench.py
	$(BIN)/python bench/rollout_bench.py
	$(BIN)/python bench/peer_fetch_bench.py
	$(BIN)/python bench/payload_log_bench.py

images: deps venv ## build the runtime and operator images with buildah
	@$(PHASE) image-runtime "image localhost/onnx-operator/runtime:0.1.0 (buildah)" --expect "2-5 min" \
	  -- ./runtime-image/build-image.sh runtime
	@$(PHASE) image-operator "image localhost/onnx-operator/operator:0.1.0 (buildah)" --expect "1-3 min" \
	  -- ./runtime-image/build-image.sh operator

tools: venv ## helm, kubeconform and Prometheus (with Kubernetes discovery), built from their Go modules into .cluster/bin
	@$(PHASE) tools "helm and kubeconform (Go)" --expect "2-4 min cold, seconds when cached" \
	  -- ./localcluster/tools/build-tools.sh
	@$(PHASE) prometheus "Prometheus with Kubernetes discovery (Go)" --expect "3-6 min cold, seconds when cached" \
	  -- ./localcluster/tools/build-prometheus.sh
