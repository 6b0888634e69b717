"""Is a live object already what we want? Pure comparison, so unchanged objects cost no write."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity

# Fields the API server owns or that server-side apply handles itself.
_IGNORED_TOP = {"status"}
_IGNORED_META = {"managedFields", "resourceVersion", "uid", "generation", "creationTimestamp"}


def _quantity(value: Any) -> Decimal | None:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return None
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, InvalidOperation, TypeError):
        return None


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have:
        return True
    # the API server normalises quantities ("0.5" -> "500m", "1Gi" stays); compare their values
    if isinstance(want, str) or isinstance(have, str):
        a, b = _quantity(want), _quantity(have)
        return a is not None and a == b
    return False


def is_satisfied(desired: Any, live: Any, _top: bool = True) -> bool:
    """True when every field set in `desired` has the same value in `live`.

    Fields only `live` has (defaults filled in by the API server, fields of other managers) are
    ignored, as server-side apply would leave them alone. Lists must match item by item.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        for key, want in desired.items():
            if _top and key in _IGNORED_TOP:
                continue
            if key == "metadata" and _top and isinstance(want, Mapping):
                want = {k: v for k, v in want.items() if k not in _IGNORED_META}
            if key not in live:
                if want in (None, {}, []):
                    continue
                return False
            if not is_satisfied(want, live[key], _top=False):
                return False
        return True
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(is_satisfied(w, h, _top=False) for w, h in zip(desired, live, strict=True))
    return _same_scalar(desired, live)


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning `old` into `new`: removed keys become null."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif key not in old or before != value:
            patch[key] = value
    return patch
