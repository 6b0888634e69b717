"""What the process may hold: descriptors (raised to the hard limit at start) and memory, and the
connection cap sized from both."""

from __future__ import annotations

import logging
import resource
from pathlib import Path

LOG = logging.getLogger("onnx_server")
RESERVED_DESCRIPTORS = 256  # model files, the metrics scrape, the event loop, logging, a margin
CONNECTION_BYTES = 64 * 1024  # what one connection may cost at most: buffers, parser, protocol objects
CONNECTION_MEMORY_SHARE = 4  # connections may take a quarter of the memory limit
MIN_CAP = 16
CGROUP_MEMORY = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def raise_descriptor_limit() -> int:
    """Raises the soft RLIMIT_NOFILE to the hard one (containers get 1024 soft since containerd 2.0,
    and Python does not raise it); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            LOG.warning("Could not raise the descriptor limit from %d to %d: %s", soft, hard, exc)
            return soft
    LOG.info("Descriptor limit: soft %d (was %d), hard %d", max(soft, hard), soft, hard)
    return max(soft, hard)


def memory_limit_bytes() -> int:
    """The container's memory limit (cgroup v2 or v1), else the machine's memory."""
    for path in CGROUP_MEMORY:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 1 << 30


def connection_cap(descriptors: int, memory_bytes: int, protocols: int = 2) -> int:
    """Connections each protocol (REST, gRPC) may hold: a quarter of the memory at CONNECTION_BYTES each
    and the descriptors beyond the reserve, shared between the protocols; never the descriptor limit
    itself (524,288 connections would not fit in memory)."""
    by_descriptors = (descriptors - RESERVED_DESCRIPTORS) // protocols
    by_memory = memory_bytes // CONNECTION_MEMORY_SHARE // CONNECTION_BYTES // protocols
    return max(MIN_CAP, min(by_descriptors, by_memory))
