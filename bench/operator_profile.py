"""Summarises a py-spy `--format raw` profile (collapsed stacks: `frame;frame;... count`) of the operator:
where its CPU went, by package (inclusive) and by function (self time)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")
# first match wins: the package a frame's file belongs to
GROUPS = (("onnx_operator", "onnx-operator (reconcile logic, desired state, rollout)"),
          ("kopf/", "kopf (watch streams, per-object workers, indexes)"),
          ("kubernetes/", "kubernetes client (request building, discovery)"),
          ("urllib3/", "urllib3 / http.client (HTTP to the API server)"),
          ("http/", "urllib3 / http.client (HTTP to the API server)"),
          ("aiohttp/", "aiohttp (kopf's watch connections)"), ("ssl", "TLS"),
          ("json/", "json (encode / decode)"), ("pydantic", "pydantic (spec parsing)"),
          ("asyncio/", "asyncio event loop"), ("concurrent/", "thread pool"), ("threading", "thread pool"),
          ("logging/", "logging"))


def group_of(file: str) -> str:
    return next((label for key, label in GROUPS if key in file), "other")


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        frames = []
        for raw in body.split(";"):
            m = FRAME.match(raw)
            frames.append((m["func"], m["file"]) if m else (raw, ""))
        stacks.append((frames, int(count)))
    return stacks


def summarize_profile(path: Path, n: int, top: int = 15) -> str:
    stacks = parse(path)
    total = sum(c for _, c in stacks) or 1
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    for frames, count in stacks:
        for group in {group_of(f) for _, f in frames}:
            inclusive[group] += count
        func, file = frames[-1]
        self_time[f"{func} ({file})"] += count
    out = [f"# Operator profile: py-spy, 50 samples/s while {n} ModelDeployments went Ready",
           "", f"{total} samples of a running (not idle) thread.", "",
           "| package (a sample counts for every package on its stack) | share |", "|---|---|"]
    out += [f"| {g} | {c * 100 / total:.0f}% |" for g, c in inclusive.most_common()]
    out += ["", "| function (self time) | share |", "|---|---|"]
    out += [f"| `{f}` | {c * 100 / total:.1f}% |" for f, c in self_time.most_common(top)]
    return "\n".join(out) + "\n"
