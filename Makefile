# onnx-operator: the two set-up commands are `make demo` and `make test`; everything else is here too.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
KUBECONFIG ?= $(CURDIR)/.cluster/kubeconfig
PYTEST_ARGS ?=

.PHONY: help deps venv test unit lint cluster cluster-bin argocd-bin cluster-down demo demo-down bench crds docs run images tools

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install missing system packages (Debian/Ubuntu) listed in .ci/apt-packages.txt
	@./.ci/install-apt-packages

$(BIN)/.installed: pyproject.toml
	@command -v go >/dev/null || { echo "Go >= 1.26 is required to build the local control plane (https://go.dev/dl)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[operator,server,test,dev]'
	@touch $@

venv: $(BIN)/.installed ## create the virtualenv with every extra

cluster-bin: ## build (or reuse the cached) control-plane binaries into .cluster/bin; the cold build takes 6-12 min
	./tests/cluster/build.sh $(CURDIR)/.cluster/bin

argocd-bin: ## build (or reuse the cached) Argo CD binary (controller, repo server, API server, CLI) into .cluster/bin
	./tests/argocd/build.sh $(CURDIR)/.cluster/bin

cluster: venv ## start the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)
	$(BIN)/python -m tests.cluster up

cluster-down: ## stop every process `make cluster` started and remove its state
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m tests.cluster down; fi

test: deps venv lint tools cluster-bin argocd-bin ## run the lint checks and the whole test suite (builds and starts the local control plane when needed)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: venv ## only the pure unit tests
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check operator runtime-image tests
	$(BIN)/mypy --strict operator/onnx_operator runtime-image/onnx_server

crds: venv ## regenerate crds/ (and the chart's copy) from the API models
	$(BIN)/python -m onnx_operator.api.crdgen --out crds/
	cp crds/*.yaml charts/onnx-operator/crds/

docs: venv ## regenerate the README's field reference and the Argo CD config from their sources
	$(BIN)/python -m onnx_operator.api.reference --write README.md
	$(BIN)/python examples/argocd/generate.py

run: venv ## run the operator in the foreground against .cluster/kubeconfig (or $KUBECONFIG)
	KUBECONFIG=$(KUBECONFIG) $(BIN)/python -m onnx_operator

demo: deps venv cluster ## the guided demo on the local control plane
	$(BIN)/python -m tests.demo

demo-down: ## stop the demo and the local control plane
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m tests.demo --stop || true; fi
	@$(MAKE) --no-print-directory cluster-down

bench: deps venv ## benchmarks; results printed as ratios against a baseline measured in the same run
	$(BIN)/python bench/runtime_bench.py
	$(BIN)/python bench/operator_bench.py

images: deps venv ## build the runtime and operator images with buildah
	./runtime-image/build-image.sh runtime
	./runtime-image/build-image.sh operator

tools: venv ## helm and kubeconform, built from their Go modules into .cluster/bin
	./tests/tools/build-tools.sh
