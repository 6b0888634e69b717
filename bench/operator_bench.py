"""Operator scale benchmark on the local control plane (kwok nodes with room for 4,500 pods).

For each size (N ModelDeployments x R replicas, in a namespace of its own): time from the first apply
to all Ready; p50/p99 apply-to-Ready per object; the operator's own time per object separately from
the cluster's (bench/operator_timeline.py); API requests and writes per object (audit log: the
operator's identity is in the group whose reads are audited); operator CPU seconds and peak RSS.
Then: one ModelDeployment's version change among the others (time until its rollout's first write),
N objects converging while API priority and fairness answers the operator 429, and writes per
minute at rest (Lease renewals counted apart). Ratios against the first size, measured in the same run.

    python bench/operator_bench.py                      # 50, 200, 1000, 1000x3 (~12 min)
    python bench/operator_bench.py --quick              # 50, 200
    python bench/operator_bench.py --sizes 50,200 --baseline-operator /path/to/old/checkout/operator

Leader election is on (the operator's default). With --profile py-spy samples the operator during
the 1000 x 1 size (off by default: on 2 cores its own CPU would slow the run it measures).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from onnx_operator.api.parse import parse_model_deployment, parse_model_version  # noqa: E402
from onnx_operator.config import OperatorConfig  # noqa: E402
from onnx_operator.desired.names import deployment_name  # noqa: E402
from onnx_operator.desired.serving import desired_deployment, desired_service  # noqa: E402
from operator_profile import summarize_profile  # noqa: E402
from operator_timeline import (  # noqa: E402
    AuditReader,
    by_user,
    in_namespace,
    is_write,
    percentile,
    stamp,
    summary,
    timelines,
)

from localcluster.cluster import READS_AUDITED_GROUP  # noqa: E402
from localcluster.harness import ClusterHandle, started_local_cluster, wait_for  # noqa: E402
from tests.e2e.conftest import ModelStore  # noqa: E402
from tests.e2e.helpers import model_deployment, model_version  # noqa: E402

USER = "onnx-operator-bench"
ADMIN = "admin"
RESULTS = REPO / "bench" / "results"
THROTTLE = REPO / "bench" / "operator_throttle.yaml"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class OperatorRun:
    """The operator as its own process, leading its Lease, watching the bench's namespaces."""
    proc: subprocess.Popen[bytes]
    peak_rss_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mb(self, key: str = "VmRSS") -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    def sample_rss(self) -> None:
        while not self._stop.wait(0.5) and self.proc.poll() is None:
            self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_operator(handle: ClusterHandle, kubeconfig: Path, runtime_image: str, namespaces: list[str], tag: str,
                   source: Path | None, log: Path, extra_args: list[str]) -> OperatorRun:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    if source is not None:  # an earlier version's operator package, measured in the same run
        env["PYTHONPATH"] = str(source)
    identity = f"bench-{tag}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnx_operator", "--runtime-image", runtime_image, "--namespaces", ",".join(namespaces),
         "--leader-elect", "true", "--leader-elect-resource-name", f"onnx-operator-bench-{tag}",
         "--leader-elect-identity", identity, *extra_args],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, cwd="/")
    run = OperatorRun(proc)
    threading.Thread(target=run.sample_rss, daemon=True).start()
    wait_for("the operator to lead", lambda: handle.kubectl(
        "get", "lease", f"onnx-operator-bench-{tag}", "-n", "default", "-o", "jsonpath={.spec.holderIdentity}",
        check=False).strip() == identity, timeout=60)
    return run


def apply_many(handle: ClusterHandle, ns: str, count: int, replicas: int, spec: dict[str, Any]) -> None:
    """The ModelDeployments md0..md<count-1>, 100 per kubectl call, 10 calls at once."""
    docs = [model_deployment(f"md{i}", "v1", replicas=replicas, **spec) for i in range(count)]
    batches = ["\n".join(docs[s:s + 100]) for s in range(0, count, 100)]
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda batch: handle.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=batch),
                      batches))


def phases(handle: ClusterHandle, ns: str) -> list[str]:
    return handle.kubectl("get", "md", "-n", ns, "-o", "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
                          check=False).split()


def prepare_namespace(handle: ClusterHandle, ns: str, store: ModelStore, versions: int = 1) -> None:
    handle.create_namespace(ns)
    for v in range(1, versions + 1):
        handle.apply(model_version(f"v{v}", store.model(f"bench-v{v}.onnx", scale=float(v)), version=f"{v}.0.0"), ns)
    for v in range(1, versions + 1):
        wait_for(f"v{v} verified in {ns}", lambda v=v: handle.kubectl(
            "get", "mv", f"v{v}", "-n", ns, "-o", "jsonpath={.status.phase}", check=False) == "Ready", timeout=180)


def service_creates(events: list[dict[str, Any]]) -> dict[str, float]:
    """The operator's Service creations (server-side applies answered 201): the API server allocates each
    one's ClusterIP behind one lock, so their pace bounds how fast new ModelDeployments get children."""
    made = [e for e in events if e["objectRef"].get("resource") == "services" and is_write(e)
            and (e.get("responseStatus") or {}).get("code") == 201]
    if not made:
        return {"services_created": 0, "service_create_p50_s": math.nan, "services_per_s": math.nan}
    lat = [stamp(e["stageTimestamp"]) - stamp(e["requestReceivedTimestamp"]) for e in made]
    span = max(stamp(e["stageTimestamp"]) for e in made) - min(stamp(e["requestReceivedTimestamp"]) for e in made)
    return {"services_created": len(made), "service_create_p50_s": percentile(lat, 50),
            "services_per_s": len(made) / span if span > 0 else math.nan}


def measure(handle: ClusterHandle, audit: AuditReader, op: OperatorRun, ns: str, n: int, replicas: int,
            timeout: float, spec: dict[str, Any]) -> dict[str, Any]:
    """Applies N ModelDeployments into `ns` (prepared), waits for all Ready, returns the figures."""
    audit.skip_to_end()
    cpu0, op.peak_rss_mb = op.cpu_seconds(), op.rss_mb()
    t0 = time.time()
    apply_many(handle, ns, n, replicas, spec)
    applied = time.time() - t0
    wait_for(f"{n} Ready in {ns}", lambda: phases(handle, ns).count("Ready") == n, timeout=timeout, interval=2)
    cpu = op.cpu_seconds() - cpu0
    time.sleep(3)  # the last writes reach the audit log
    events = list(in_namespace(audit.read([ns]), ns))
    mine = by_user(events, USER)
    lines = timelines(events, ns, USER, ADMIN, {f"md{i}": deployment_name(f"md{i}", "v1") for i in range(n)})
    end = max(t.ready for t in lines) if len(lines) == n else time.time()
    return {"n": n, "replicas": replicas, "namespace": ns, "seconds_to_ready": end - t0, "apply_seconds": applied,
            "timelines": len(lines), **summary(lines),
            "children_written_s": max(t.children for t in lines) - t0 if lines else float("nan"),
            "requests_per_md": len(mine) / n, "writes_per_md": sum(map(is_write, mine)) / n,
            "operator_cpu_s": cpu, "peak_rss_mb": max(op.peak_rss_mb, op.rss_mb()),
            "throttled_429": sum(1 for e in mine if (e.get("responseStatus") or {}).get("code") == 429),
            **service_creates(mine)}


def service_rate(handle: ClusterHandle, audit: AuditReader, ns: str, count: int = 200) -> dict[str, float]:
    """The API server's own pace at creating Services (ClusterIP allocation), with no operator involved:
    the admin (exempt from priority and fairness) creates `count`, 20 kubectl calls at once."""
    audit.skip_to_end()
    docs = [json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc{i}"},
                        "spec": {"selector": {"app": f"svc{i}"}, "ports": [{"port": 80}]}}) for i in range(count)]
    batches = ["\n".join(docs[s:s + count // 20]) for s in range(0, count, count // 20)]
    t0 = time.time()
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda b: handle.kubectl("create", "-n", ns, "-f", "-", input=b), batches))
    seconds = time.time() - t0
    time.sleep(2)
    lat = [stamp(e["stageTimestamp"]) - stamp(e["requestReceivedTimestamp"]) for e in in_namespace(audit.read([ns]), ns)
           if e["verb"] == "create" and e["objectRef"].get("resource") == "services"]
    return {"services": count, "seconds": seconds, "per_second": count / seconds,
            "latency_p50_s": percentile(lat, 50), "latency_p99_s": percentile(lat, 99)}


def cluster_floor(handle: ClusterHandle, kubeconfig: Path, mv_ns: str, ns: str, n: int, replicas: int,
                  timeout: float, services_first: bool = False) -> dict[str, Any]:
    """The cluster's own time for N ModelDeployments' children, with no operator: the least every
    ModelDeployment needs (its Service and one version's Deployment, rendered by the operator's own
    functions, without peer fetch and without owner), applied as the operator's user in the batches
    `apply_many` uses, then polled every second until every Deployment has its replicas Ready. The namespace
    is deleted (and waited for) afterwards, so the operator's run meets the cluster the floor met.
    `services_first`: every Service is applied before any Deployment (instead of each object's Service
    and Deployment together, as a reconcile writes them)."""
    mv = parse_model_version(handle.kubectl_json("get", "mv", "v1", "-n", mv_ns))
    config = OperatorConfig(runtime_image=handle.runtime_image)
    handle.create_namespace(ns)  # not watched by the operator
    children: list[dict[str, Any]] = []
    for i in range(n):
        md = parse_model_deployment({**json.loads(model_deployment(f"md{i}", "v1", replicas=replicas)),
                                     "metadata": {"name": f"md{i}", "namespace": ns, "uid": f"floor-{i}"}})
        for obj in (desired_service(md, config), desired_deployment(md, mv, config, replicas)):
            obj["metadata"].pop("ownerReferences", None)  # no owner: the garbage collector would remove them
            children.append(obj)
    phases = ([[c for c in children if c["kind"] == "Service"], [c for c in children if c["kind"] != "Service"]]
              if services_first else [children])
    user = handle.kubectl_bin, f"--kubeconfig={kubeconfig}"
    t0 = time.time()
    for objects in phases:
        batches = [json.dumps({"apiVersion": "v1", "kind": "List", "items": objects[s:s + 200]})
                   for s in range(0, len(objects), 200)]
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(lambda b: subprocess.run([*user, "apply", "--server-side", "-n", ns, "-f", "-"], input=b,
                                                   text=True, capture_output=True, check=True), batches))
    applied = time.time() - t0
    ready_at: dict[str, float] = {}
    deadline = t0 + timeout
    for _ in range(int(timeout) + 1):  # bounded: one poll a second
        out = handle.kubectl("get", "deploy", "-n", ns, "-o", "jsonpath={range .items[*]}{.metadata.name} "
                             "{.status.readyReplicas}{\"\\n\"}{end}", check=False)
        now = time.time()
        for line in out.splitlines():
            name, _, ready = line.partition(" ")
            if ready.strip() == str(replicas):
                ready_at.setdefault(name, now - t0)
        if len(ready_at) == n or now > deadline:
            break
        time.sleep(1)
    times = list(ready_at.values())
    # its pods hold kwok capacity and its objects load the cluster: gone before the operator's run
    handle.kubectl("delete", "namespace", ns, "--wait=false")
    wait_for(f"{ns} deleted", lambda: not handle.kubectl("get", "namespace", ns, "--ignore-not-found", "-o", "name"),
             timeout=600, interval=5)
    return {"n": n, "replicas": replicas, "ready": len(times), "apply_seconds": applied,
            "order": "services first" if services_first else "per object",
            "seconds_to_ready": max(times) if len(times) == n else math.nan,
            "apply_to_ready_p50_s": percentile(times, 50), "apply_to_ready_p99_s": percentile(times, 99)}


def rollout_latency(handle: ClusterHandle, audit: AuditReader, ns: str) -> float:
    """Seconds from md0's change to v2 until the operator's first write of md0's v2 Deployment."""
    audit.skip_to_end()
    handle.apply(model_deployment("md0", "v2", replicas=1), ns)
    dep = deployment_name("md0", "v2")
    wait_for("md0's v2 Deployment", lambda: handle.kubectl("get", "deploy", dep, "-n", ns, check=False), timeout=60)
    time.sleep(2)
    events = list(in_namespace(audit.read([ns]), ns))
    changed = min(e["requestReceivedTimestamp"] for e in events if e["user"]["username"] == ADMIN
                  and e["objectRef"].get("name") == "md0" and e["objectRef"]["resource"] == "modeldeployments")
    started = min(e["stageTimestamp"] for e in events if e["user"]["username"] == USER
                  and e["objectRef"].get("name") == dep and is_write(e))
    return stamp(started) - stamp(changed)


def at_rest(audit: AuditReader, seconds: float) -> dict[str, float]:
    audit.skip_to_end()
    time.sleep(seconds)
    writes = [e for e in by_user(audit.read([USER]), USER) if is_write(e)]
    leases = [e for e in writes if e["objectRef"].get("resource") == "leases"]
    return {"writes_per_minute_at_rest": (len(writes) - len(leases)) * 60 / seconds,
            "lease_writes_per_minute": len(leases) * 60 / seconds}


def md_spec(args: argparse.Namespace) -> dict[str, Any]:
    """What the bench's ModelDeployments set besides their version and replicas (nothing by default)."""
    return {} if args.peer_fetch is None else {"runtime": {"peerFetch": args.peer_fetch}}


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, text.split(",")):
        n, _, r = part.strip().partition("x")
        out.append((int(n), int(r or 1)))
    return out


def run_operator(args: argparse.Namespace, handle: ClusterHandle, kubeconfig: Path, store: ModelStore,
                 audit: AuditReader, tag: str, source: Path | None, sizes: list[tuple[int, int]],
                 extras: bool) -> dict[str, Any]:
    salt = f"{random.randrange(16**4):04x}"
    names = [f"bench-{tag}-{n}x{r}-{salt}" for n, r in sizes]
    throttle_ns = f"bench-{tag}-throttle-{salt}"
    log = handle.extra["paths"].logs / f"bench-operator-{tag}.log"
    extra = ["--workers", str(args.workers)] if args.workers and source is None else []
    op = start_operator(handle, kubeconfig, handle.runtime_image, [*names, throttle_ns], tag, source, log, extra)
    result: dict[str, Any] = {"operator": tag, "sizes": []}
    try:
        for (n, r), ns in zip(sizes, names, strict=True):
            prepare_namespace(handle, ns, store, versions=2 if extras and n == max(s[0] for s in sizes) else 1)
            profiler = None
            if args.profile and n >= 1000 and r == 1 and extras:
                profiler = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                                             str(op.proc.pid), "--rate", "50", "--format", "raw", "--nonblocking",
                                             "--output", str(RESULTS / "operator-profile.txt")],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if (n, r) in parse_sizes(args.floor) and extras:
                floor = cluster_floor(handle, kubeconfig, ns, f"bench-floor-{n}x{r}-{salt}", n, r, args.timeout,
                                      args.floor_services_first)
                result.setdefault("floor", []).append(floor)
                print(f"[cluster alone, {floor['order']}] N={n}x{r}: applied in {floor['apply_seconds']:.1f}s, "
                      f"all Ready {floor['seconds_to_ready']:.1f}s, p50/p99 {floor['apply_to_ready_p50_s']:.1f}/"
                      f"{floor['apply_to_ready_p99_s']:.1f}s", flush=True)
            row = measure(handle, audit, op, ns, n, r, args.timeout, md_spec(args))
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
                (RESULTS / "operator-profile.md").write_text(summarize_profile(RESULTS / "operator-profile.txt", n))
            result["sizes"].append(row)
            print(f"[{tag}] N={n}x{r}: all Ready {row['seconds_to_ready']:.1f}s, p50/p99 apply-to-Ready "
                  f"{row['apply_to_ready_p50_s']:.1f}/{row['apply_to_ready_p99_s']:.1f}s, operator p99 "
                  f"{row['operator_p99_s']:.1f}s, {row['requests_per_md']:.1f} requests and {row['writes_per_md']:.1f} "
                  f"writes per MD, CPU {row['operator_cpu_s']:.1f}s, peak RSS {row['peak_rss_mb']:.0f} MB, "
                  f"{row['services_created']} Services created at {row['services_per_s']:.1f}/s "
                  f"(p50 {row['service_create_p50_s']:.2f}s)", flush=True)
        if extras:
            big = names[[n for n, _ in sizes].index(max(n for n, _ in sizes))]
            result["rollout_start_s"] = rollout_latency(handle, audit, big)
            print(f"[{tag}] version change among {max(n for n, _ in sizes)}: rollout started in "
                  f"{result['rollout_start_s']:.2f}s", flush=True)
            if args.throttle:
                handle.kubectl("apply", "-f", str(THROTTLE))
                try:
                    prepare_namespace(handle, throttle_ns, store)
                    result["throttled"] = measure(handle, audit, op, throttle_ns, args.throttle, 1, args.timeout,
                                                  md_spec(args))
                finally:
                    handle.kubectl("delete", "-f", str(THROTTLE), check=False)
                print(f"[{tag}] under APF limits: {args.throttle} Ready in "
                      f"{result['throttled']['seconds_to_ready']:.1f}s after {result['throttled']['throttled_429']} "
                      "answers 429", flush=True)
            wait_for("md0 on v2", lambda: handle.kubectl("get", "md", "md0", "-n", big, "-o",
                                                          "jsonpath={.status.servingVersion}/{.status.phase}",
                                                          check=False) == "v2/Ready", timeout=120)
            time.sleep(5)
            result.update(at_rest(audit, args.rest_seconds))
            print(f"[{tag}] at rest: {result['writes_per_minute_at_rest']:.1f} writes/min "
                  f"(+ {result['lease_writes_per_minute']:.0f} Lease renewals/min)", flush=True)
    finally:
        op.stop()
    return result


def table(run: dict[str, Any]) -> str:
    rows = run["sizes"]
    base = rows[0]["seconds_to_ready"] / rows[0]["n"]
    head = (f"| N x replicas | all Ready (s) | s per MD | vs N={rows[0]['n']} | apply-to-Ready p50 / p99 (s) | "
            "operator p50 / p99 (s) | cluster p50 / p99 (s) | requests / MD | writes / MD | operator CPU (s) | "
            "peak RSS (MB) | Services created / s (p50 s) |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        per = r["seconds_to_ready"] / r["n"]
        lines.append(f"| {r['n']} x {r['replicas']} | {r['seconds_to_ready']:.1f} | {per:.3f} | {per / base:.2f}x | "
                     f"{r['apply_to_ready_p50_s']:.1f} / {r['apply_to_ready_p99_s']:.1f} | "
                     f"{r['operator_p50_s']:.1f} / {r['operator_p99_s']:.1f} | "
                     f"{r['cluster_p50_s']:.1f} / {r['cluster_p99_s']:.1f} | {r['requests_per_md']:.1f} | "
                     f"{r['writes_per_md']:.1f} | {r['operator_cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r.get('services_per_s', math.nan):.1f} ({r.get('service_create_p50_s', math.nan):.2f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50,200,1000,1000x3", help="N or NxREPLICAS, comma-separated")
    parser.add_argument("--quick", action="store_true", help="sizes 50,200 and a 30 s rest window")
    parser.add_argument("--rest-seconds", type=float, default=60)
    parser.add_argument("--throttle", type=int, default=100, help="objects to converge under 429s (0: skip)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one size may take to get Ready")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=False,
                        help="py-spy during the 1000 x 1 size (costs ~1/6 of a core: a run apart from the figures)")
    parser.add_argument("--peer-fetch", action=argparse.BooleanOptionalAction, default=None,
                        help="set spec.runtime.peerFetch on the ModelDeployments (default: left unset, i.e. on)")
    parser.add_argument("--floor", default="1000", help="sizes whose children the bench also applies itself, with no "
                        "operator, just before the operator's run of that size: the cluster's own time ('' to skip)")
    parser.add_argument("--floor-services-first", action="store_true",
                        help="the floor applies every Service before any Deployment (default: per object)")
    parser.add_argument("--baseline-operator", type=Path, help="an earlier operator/ directory, measured first")
    parser.add_argument("--baseline-sizes", help="sizes for the baseline operator (default: --sizes)")
    parser.add_argument("--workers", type=int, help="the operator's --workers (default: its own default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "operator.json")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.rest_seconds, args.floor = "50,200", 30, "200"
    sizes = parse_sizes(args.sizes)
    cluster, handle = started_local_cluster()
    kubeconfig = handle.user_kubeconfig(USER, (READS_AUDITED_GROUP,))
    handle.kubectl("create", "clusterrolebinding", USER, "--clusterrole=cluster-admin", f"--user={USER}", check=False)
    (RESULTS / "models").mkdir(parents=True, exist_ok=True)
    store = ModelStore(RESULTS / "models")
    audit = AuditReader(cluster.paths.audit_log)
    runs: list[dict[str, Any]] = []
    services: dict[str, float] = {}
    try:
        ns = f"bench-services-{random.randrange(16**4):04x}"
        handle.create_namespace(ns)
        services = service_rate(handle, audit, ns)
        print(f"API server alone: {services['services']:.0f} Services created at {services['per_second']:.1f}/s, "
              f"p50 {services['latency_p50_s']:.2f}s", flush=True)
        if args.baseline_operator:
            runs.append(run_operator(args, handle, kubeconfig, store, audit, "before", args.baseline_operator,
                                     parse_sizes(args.baseline_sizes or args.sizes), extras=False))
        runs.append(run_operator(args, handle, kubeconfig, store, audit, "after", None, sizes, extras=True))
    finally:
        store.httpd.shutdown()
        for ns in [f for f in handle.kubectl("get", "ns", "-o", "name").split() if "bench-" in f]:
            handle.kubectl("delete", ns, "--wait=false", check=False)
    report = "\n\n".join(f"**{run['operator']}**\n\n{table(run)}" for run in runs)
    after = runs[-1]
    report += (f"\n\nversion change among the others: rollout started in {after['rollout_start_s']:.2f} s "
               "(target < 5 s); "
               f"at rest: {after['writes_per_minute_at_rest']:.1f} writes/min besides "
               f"{after['lease_writes_per_minute']:.0f} Lease renewals/min (target 0)")
    if "throttled" in after:
        t = after["throttled"]
        report += (f"; under APF limits {t['n']} ModelDeployments all Ready in {t['seconds_to_ready']:.1f} s "
                   f"after {t['throttled_429']} answers 429 to the operator")
    for f in after.get("floor", []):
        report += (f"\n\nthe cluster alone (no operator: the bench applied each ModelDeployment's Service and "
                   f"Deployment itself, {f['order']}, {f['n']} x {f['replicas']}, just before the operator's run of "
                   "that size): all "
                   f"Ready {f['seconds_to_ready']:.1f} s, p50 / p99 {f['apply_to_ready_p50_s']:.1f} / "
                   f"{f['apply_to_ready_p99_s']:.1f} s (polled each second), applied in {f['apply_seconds']:.1f} s")
    report += (f"\n\nthe API server alone (no operator) created {services['services']:.0f} Services at "
               f"{services['per_second']:.1f}/s (p50 {services['latency_p50_s']:.2f} s each, 20 at once)")
    print("\n" + report)
    args.out.write_text(json.dumps({"runs": runs, "services_alone": services}, indent=2))
    (RESULTS / "operator.md").write_text(report + "\n")
    print(f"written {args.out} and {RESULTS / 'operator.md'}")


if __name__ == "__main__":
    main()
