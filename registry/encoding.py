"""How values are checked and encoded on their way into the registry.

Parameters are canonical JSON (so equal strategies hash equal); scores keep non-finite values
explicitly because SQL ``REAL``/JSON cannot carry NaN or infinities portably.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from typing import Any

from .errors import InvalidArgument

#: Entry-point names (which are plugin names) allow ``[\w.-]+``.
PLUGIN_NAME = re.compile(r"^[\w.-]+$")
MAX_NAME = 200
MAX_SCOPE = 100


def json_value(value: Any, *, what: str) -> Any:
    """Return ``value`` as plain JSON data, or raise naming ``what`` if it is not JSON."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"{what} must be JSON data (str, finite numbers, bools, None, lists, dicts with str"
            f" keys): {exc}"
        ) from None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(plugins: Iterable[str], params: Any) -> str:
    """sha256 of the canonical JSON of ``[sorted plugins, params]``."""
    return hashlib.sha256(canonical_json([sorted(plugins), params]).encode()).hexdigest()


def plugin_names(plugins: Iterable[str]) -> list[str]:
    """Sorted unique plugin names, each checked against the entry-point name pattern."""
    if isinstance(plugins, str):
        raise InvalidArgument(f"plugins must be a list of plugin names, not the string {plugins!r}")
    names = set()
    for name in plugins:
        if not isinstance(name, str) or not PLUGIN_NAME.match(name) or len(name) > MAX_NAME:
            raise InvalidArgument(
                f"invalid plugin name {name!r}: use letters, digits, '_', '.' or '-'"
                f" (at most {MAX_NAME} characters)"
            )
        names.add(name)
    return sorted(names)


def choice(value: Any, allowed: tuple[str, ...], *, what: str) -> str:
    if value not in allowed:
        raise InvalidArgument(f"invalid {what} {value!r}: use one of {', '.join(allowed)}")
    return value


def name(value: Any, *, what: str, max_len: int = MAX_NAME) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise InvalidArgument(f"{what} must be a non-empty string of at most {max_len} characters")
    return value


def encode_score(value: Any, *, metric: str) -> tuple[float | None, str]:
    """(stored value, value_kind) for one score."""
    if isinstance(value, bool):
        raise InvalidArgument(f"score {metric!r} must be a number, got {value!r}")
    if not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars, tensors' .item() results, Decimal
        except (TypeError, ValueError):
            raise InvalidArgument(f"score {metric!r} must be a number, got {value!r}") from None
    value = float(value)
    if math.isnan(value):
        return None, "nan"
    if math.isinf(value):
        return None, "inf" if value > 0 else "-inf"
    return value, "finite"


def decode_score(value: float | None, kind: str) -> float:
    if kind == "finite":
        return float(value)  # type: ignore[arg-type]
    return float(kind)  # "nan", "inf", "-inf" are what float() reads


def score_to_json(value: float) -> float | str:
    """Non-finite scores as the strings "nan"/"inf"/"-inf" (JSON has no such numbers)."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value
