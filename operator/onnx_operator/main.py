"""Start the operator: settings, logging, the API client, leader election, the kopf handlers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path

import kopf

from onnx_operator.config import ConfigError, OperatorConfig, load_config
from onnx_operator.handlers import object_cache, register
from onnx_operator.handlers.context import Context
from onnx_operator.health import serve_health
from onnx_operator.kube import Kube
from onnx_operator.kube.lease import LeaseStore
from onnx_operator.leader import ElectionTiming, LeaderElector, Leadership, default_identity
from onnx_operator.metrics import serve_metrics

POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


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


def lease_namespace(config: OperatorConfig) -> str:
    if config.leader_elect_resource_namespace:
        return config.leader_elect_resource_namespace
    if POD_NAMESPACE_FILE.exists():
        return POD_NAMESPACE_FILE.read_text().strip()
    return "default"


async def run(config: OperatorConfig) -> None:
    # one connection per reconcile thread, plus the Lease renewals and discovery: a thread that finds
    # the pool empty opens a connection (a TLS handshake) and closes it afterwards
    kube = Kube.from_environment(config.field_manager, cache=object_cache(), connections=config.workers + 4)
    if config.leader_elect:
        leadership = Leadership(config.leader_elect_identity or default_identity())
        kube.may_write = leadership.is_acting
    else:
        leadership = Leadership.always()
    registry = kopf.OperatorRegistry()
    loop = register(registry, Context(kube=kube, config=config))
    health = await serve_health(config.liveness_port, leadership) if config.liveness_port else None
    elector: LeaderElector | None = None
    campaign: asyncio.Task[None] | None = None
    if config.leader_elect:
        timing = ElectionTiming(config.leader_elect_lease_duration, config.leader_elect_renew_deadline,
                                config.leader_elect_retry_period)
        store = LeaseStore(kube.api, lease_namespace(config), config.leader_elect_resource_name)
        elector = LeaderElector(store, leadership, timing, on_started=loop.resume)
        campaign = asyncio.create_task(elector.run())
    try:
        await kopf.operator(registry=registry, standalone=True, clusterwide=not config.namespaces,
                            namespaces=config.namespaces)
    finally:
        if campaign is not None and elector is not None:
            campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await campaign
            await elector.release()
        if health is not None:
            await health.cleanup()


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config)
    if config.metrics_port:
        serve_metrics(config.metrics_port)
    asyncio.run(run(config))
    return 0
