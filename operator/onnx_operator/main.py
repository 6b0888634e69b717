"""Start the operator: settings, logging, the API client, the kopf handlers."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import kopf

from onnx_operator.config import ConfigError, OperatorConfig, load_config
from onnx_operator.handlers import register
from onnx_operator.handlers.context import Context
from onnx_operator.kube import Kube
from onnx_operator.metrics import serve_metrics


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record), "level": record.levelname,
                           "logger": record.name, "message": record.getMessage()})


def setup_logging(config: OperatorConfig) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # one line per handled event is noise


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config)
    kube = Kube.from_environment(config.field_manager)
    registry = kopf.OperatorRegistry()
    register(registry, Context(kube=kube, config=config))
    liveness = f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None
    if config.metrics_port:
        serve_metrics(config.metrics_port)
    asyncio.run(kopf.operator(
        registry=registry,
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=liveness,
    ))
    return 0
