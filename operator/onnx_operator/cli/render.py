"""Text views of a ModelDeployment for the terminal (pure: status dict in, lines out)."""

from __future__ import annotations

from typing import Any

BAR = 24
VERDICTS = {"Passed": "PASS", "Failed": "FAIL", "Inconclusive": "INCONCLUSIVE"}


def progress_bar(fraction: float, width: int = BAR) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def render_status(md: dict[str, Any]) -> list[str]:
    meta, spec, status = md["metadata"], md.get("spec", {}), md.get("status") or {}
    strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
    lines = [f"ModelDeployment {meta['name']} (namespace {meta['namespace']})  phase: {status.get('phase', '-')}"
             f"  strategy: {strategy}",
             f"desired: {status.get('desiredVersion') or spec.get('modelVersion')}   "
             f"serving: {status.get('servingVersion') or '-'}   ready: {status.get('readyText') or '-'}"]
    rollout = status.get("rollout") or {}
    if rollout.get("version"):
        count = int(rollout.get("stepCount") or 0)
        if strategy == "Canary" and count:
            step = int(rollout.get("stepIndex", 0)) + 1
            weight = int(rollout.get("weight", 0))
            lines.append(f"rollout {rollout.get('from')} -> {rollout['version']}: step {step}/{count} "
                         f"{progress_bar(weight / 100)} {weight}%")
            steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps") or []
            pause = steps[step - 1].get("pause") if step <= len(steps) else None
            if pause and rollout.get("stepReadyAt"):
                lines.append(f"holding {weight}% for {pause} from {rollout['stepReadyAt']} (its pods are Ready)")
        else:
            lines.append(f"rollout {rollout.get('from')} -> {rollout['version']} ({strategy})"
                         + (" switched" if rollout.get("switchedAt") else ""))
        if rollout.get("paused"):
            lines.append(f"paused: resume with `kubectl model resume {meta['name']}`")
        elif rollout.get("awaitingPromotion"):
            lines.append(f"waiting: promote with `kubectl model promote {meta['name']}` "
                         f"(or abort with `kubectl model abort {meta['name']}`)")
    elif rollout.get("blockedVersion"):
        lines.append(f"{rollout['blockedVersion']} was rolled back; change spec.modelVersion to roll out again")
    versions = status.get("versions") or []
    if versions:
        # SERVED: the share of requests each version answered in the last minute (during a rollout, with
        # Prometheus); WEIGHT is the share it should get
        rows = [["VERSION", "REPLICAS", "READY", "WEIGHT", "SERVED"]] + [
            [v["name"], str(v.get("replicas", 0)), f"{v.get('readyReplicas', 0)}/{v.get('replicas', 0)}",
             f"{v.get('weight', 0)}%", "-" if v.get("observedShare") is None else f"{v['observedShare']:.0%}"]
            for v in versions]
        lines += ["", *_table(rows)]
        for v in versions:
            if v.get("stuckReason"):
                count = int(v.get("stuckPods") or 0)
                lines.append(f"  {v['name']}: {count} pod{'s' if count != 1 else ''} stuck, {v['stuckReason']}: "
                             f"{v.get('lastError') or ''}")
        if rollout.get("underServed"):
            lines.append(f"under-served: {rollout['underServed']}")
    gates = rollout.get("gates") or []
    if gates:
        lines += ["", "gates:"]
        for g in gates:
            value = "no data" if g.get("value") is None else f"{g['value']:.4g}"
            verdict = g.get("verdict") or ("Passed" if g.get("passed") else "Failed")
            lines.append(f"  {VERDICTS.get(verdict, verdict.upper())}  {g['name']}: {value} "
                         f"(threshold {g.get('threshold')})")
            if verdict == "Inconclusive":
                lines.append(f"        {g.get('message', '')}")
        if rollout.get("gatesInconclusiveSince"):
            lines.append(f"holding since {rollout['gatesInconclusiveSince']}: gates without data never pass; "
                         "still inconclusive at the progress deadline, the rollout rolls back")
    conds = status.get("conditions") or []
    if conds:
        lines += ["", "conditions:"]
        lines += ["  " + line for line in _table([["TYPE", "STATUS", "REASON", "MESSAGE"]] + [
            [c["type"], c["status"], c.get("reason", ""), c.get("message", "")] for c in conds])]
    return lines


def render_history(md: dict[str, Any]) -> list[str]:
    history = (md.get("status") or {}).get("history") or []
    if not history:
        return [f"no rollouts recorded for {md['metadata']['name']}"]
    rows = [["VERSION", "FROM", "STRATEGY", "STARTED", "FINISHED", "RESULT", "REASON"]] + [
        [h.get("version", ""), h.get("from") or "-", h.get("strategy") or "-", h.get("startedAt") or "-",
         h.get("finishedAt") or "-", h.get("result", ""), h.get("reason") or ""] for h in history]
    return _table(rows)
