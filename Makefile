# onnx-operator: the two set-up commands are `make demo` and `make test`; everything else is here too.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
KUBECONFIG ?= $(CURDIR)/.cluster/kubeconfig
PYTEST_ARGS ?=

.PHONY: help deps venv test unit lint cluster cluster-bin node-images argocd-bin cluster-down demo demo-down bench crds docs run images tools protos monitoring

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

cluster-bin: ## build (or reuse the cached) control-plane and node binaries into .cluster/bin; the cold build takes 8-15 min on 2 idle cores
	./localcluster/build.sh $(CURDIR)/.cluster/bin

argocd-bin: ## build (or reuse the cached) Argo CD binary (controller, repo server, API server, CLI) into .cluster/bin
	./localcluster/argocd/build.sh $(CURDIR)/.cluster/bin

cluster: deps venv cluster-bin ## start the local cluster: control plane, kwok nodes, one real node (builds the images)
	$(BIN)/python -m localcluster up

cluster-down: ## stop every process `make cluster` started, restore the host, remove its state
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m localcluster down; fi

node-images: venv cluster-bin ## build (or reuse) the images the real node runs: pause, runtime, operator (cached by source hash)
	$(BIN)/python -m localcluster images

test: deps venv lint tools cluster-bin argocd-bin node-images ## run the lint checks and the whole test suite (builds and starts the local cluster with its real node when needed)
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

docs: venv ## regenerate the README's field reference and the Argo CD config from their sources
	$(BIN)/python -m onnx_operator.api.reference --write README.md
	$(BIN)/python examples/argocd/generate.py

protos: venv ## regenerate onnx-server's gRPC modules from runtime-image/onnx_server/proto/inference.proto
	cd runtime-image && ../$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
	  onnx_server/proto/inference.proto

run: venv ## run the operator in the foreground against .cluster/kubeconfig (or $KUBECONFIG)
	KUBECONFIG=$(KUBECONFIG) $(BIN)/python -m onnx_operator

demo: deps venv tools cluster ## the guided demo: the operator (Helm chart) serving real models on the real node
	$(BIN)/python -m localcluster.demo

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
	$(BIN)/python bench/payload_log_bench.py

images: deps venv ## build the runtime and operator images with buildah
	./runtime-image/build-image.sh runtime
	./runtime-image/build-image.sh operator

tools: venv ## helm, kubeconform and Prometheus (with Kubernetes discovery), built from their Go modules into .cluster/bin
	./localcluster/tools/build-tools.sh
	./localcluster/tools/build-prometheus.sh
