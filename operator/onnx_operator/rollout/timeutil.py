"""Durations and timestamps as the API writes them (RFC 3339, `2m30s`)."""

from __future__ import annotations

import datetime as dt
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]+)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """`1h30m`, `2m`, `500ms` -> seconds; raises ValueError naming the bad text."""
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 2m, 1h30m")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def seconds_between(earlier: str, later: str) -> float:
    return (parse_time(later) - parse_time(earlier)).total_seconds()
