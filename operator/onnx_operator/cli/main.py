"""`kubectl model COMMAND NAME`: status, promote, abort, pause, resume, history, rollback.

promote/abort/pause/resume write the annotation the operator acts on
(`serving.onnx-operator.io/action: <verb>@<id>`), so plain kubectl can do the same.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

from kubernetes import config as k8s_config

from onnx_operator.api import API_VERSION
from onnx_operator.cli.render import render_history, render_status
from onnx_operator.desired.names import ANNOTATION_ACTION
from onnx_operator.kube import Kube

ACTIONS = {"promote", "abort", "pause", "resume"}


class CliError(Exception):
    """A message for the user; exit code 1."""


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return str(args.namespace)
    try:
        _, active = k8s_config.list_kube_config_contexts(config_file=args.kubeconfig)
        return str(active.get("context", {}).get("namespace") or "default")
    except (k8s_config.ConfigException, OSError):
        return "default"


def _get(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    md = kube.get(API_VERSION, "ModelDeployment", ns, name)
    if md is None:
        raise CliError(f'modeldeployment "{name}" not found in namespace "{ns}"')
    return md


def _action(kube: Kube, ns: str, md: dict[str, Any], verb: str) -> str:
    rollout = (md.get("status") or {}).get("rollout") or {}
    name = md["metadata"]["name"]
    if not rollout.get("version"):
        raise CliError(f"{name} has no rollout in progress: nothing to {verb.split('-')[0]}")
    if verb == "resume" and not rollout.get("paused"):
        raise CliError(f"{name} is not paused")
    if verb == "pause" and rollout.get("paused"):
        raise CliError(f"{name} is already paused")
    value = f"{verb}@{uuid.uuid4().hex[:12]}"
    kube.dyn.resources.get(api_version=API_VERSION, kind="ModelDeployment").patch(
        name=name, namespace=ns, body={"metadata": {"annotations": {ANNOTATION_ACTION: value}}},
        content_type="application/merge-patch+json")
    return f"{name}: {verb} requested for {rollout['version']}"


def _rollback(kube: Kube, ns: str, md: dict[str, Any], version: str) -> str:
    name = md["metadata"]["name"]
    mv = kube.get(API_VERSION, "ModelVersion", ns, version)
    if mv is None:
        raise CliError(f'--to: modelversion "{version}" not found in namespace "{ns}"')
    if (mv.get("status") or {}).get("phase") != "Ready":
        raise CliError(f"--to: modelversion {version} is not verified (phase {(mv.get('status') or {}).get('phase')})")
    if md["spec"].get("modelVersion") == version:
        raise CliError(f"{name} already has spec.modelVersion {version}")
    kube.dyn.resources.get(api_version=API_VERSION, kind="ModelDeployment").patch(
        name=name, namespace=ns, body={"spec": {"modelVersion": version}}, content_type="application/merge-patch+json")
    return (f"{name}: spec.modelVersion set to {version} (GitOps users: change it in Git instead, "
            "or the next sync reverts this)")


def _watch(kube: Kube, ns: str, name: str, interval: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        md = _get(kube, ns, name)
        sys.stdout.write("\x1b[H\x1b[2J" if sys.stdout.isatty() else "\n")
        print("\n".join(render_status(md)), flush=True)
        status = md.get("status") or {}
        settled = status.get("observedGeneration") == md["metadata"].get("generation") and \
            status.get("phase") in ("Ready", "Degraded") and not (status.get("rollout") or {}).get("version")
        if settled or time.monotonic() > deadline:
            return
        time.sleep(interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's)")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="versions, weights, step, gates and readiness")
    status.add_argument("--watch", "-w", action="store_true", help="refresh until the rollout settles")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    status.add_argument("--timeout", type=float, default=3600, help="stop watching after this many seconds")
    promote = sub.add_parser("promote", help="advance one step (blue/green: switch traffic)")
    promote.add_argument("--full", action="store_true", help="skip the remaining steps")
    for verb in ("abort", "pause", "resume"):
        sub.add_parser(verb, help=f"{verb} the rollout in progress")
    sub.add_parser("history", help="past rollouts with result and reason")
    rollback = sub.add_parser("rollback", help="set spec.modelVersion back to a verified version")
    rollback.add_argument("--to", required=True, metavar="VERSION", help="ModelVersion name to serve")
    for p in sub.choices.values():
        p.add_argument("name", metavar="NAME", help="the ModelDeployment")
        p.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace (default: the context's)")
    return parser


def run(args: argparse.Namespace) -> str | None:
    kube = Kube.from_environment("kubectl-model", args.kubeconfig)
    ns = _namespace(args)
    md = _get(kube, ns, args.name)
    if args.command == "status":
        if args.watch:
            _watch(kube, ns, args.name, args.interval, args.timeout)
            return None
        return "\n".join(render_status(md))
    if args.command == "history":
        return "\n".join(render_history(md))
    if args.command == "rollback":
        return _rollback(kube, ns, md, args.to)
    verb = "promote-full" if args.command == "promote" and args.full else args.command
    return _action(kube, ns, md, verb)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = run(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if out:
        print(out)
    return 0
