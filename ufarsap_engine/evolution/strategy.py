"""A strategy (Eq. 4, 22): which plugins run, their parameters, and the unified-objective weights.

One validated value type for everything evolution touches, so a strategy read from a JSON file,
from a plugin's proposal or from the registry is checked the same way, and equal strategies
hash equal (the hash is the registry's: sha256 of the canonical JSON of
``[sorted plugins, params]``).

Registry layout (``to_registry``): ``plugins`` is the list of plugin names; ``params`` holds the
per-plugin parameters under ``"plugins"`` and the objective under ``"objective"`` (both keys
``run.prepare`` reads: a run of the active strategy trains with its objective, under any
objective settings the run sets itself). The objective is the run config's ``ObjectiveConfig``:
one schema and one set of defaults. It acts through the trainer; plugin selection and plugin
parameters also act on hook-only evaluation.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ufarsap_engine.config import ObjectiveConfig
from ufarsap_engine.errors import UserError
from ufarsap_engine.schemas import PARADIGMS, PLUGIN_NAME_RE

#: A strategy's objective is the run config's ``objective`` section (one schema, one set of
#: defaults). Registry records written before it held these flat keys; ``parse`` reads them.
LEGACY_OBJECTIVE_KEYS = {"lambdas": "lambda_paradigm", "alphas": "alpha", "objectives": "families", "beta": "beta",
                         "gamma": "gamma", "lambda_coord": "lambda_coord", "lambda_emerge": "lambda_emerge"}


def _from_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A strategy dict in the earlier flat layout (lambdas, alphas, objectives, beta, gamma,
    orchestrator.eta_*) moved into ``objective``; the retired family ``dpo`` reads as ``rwr``."""
    if not any(k in data for k in (*LEGACY_OBJECTIVE_KEYS, "orchestrator")):
        return data
    data = dict(data)
    objective = dict(data.get("objective") or {})
    for old, new in LEGACY_OBJECTIVE_KEYS.items():
        if old in data:  # the flat key wins: a proposal's flat setting over its base's objective
            objective[new] = data.pop(old)
    if isinstance(objective.get("families"), dict):
        objective["families"] = {p: "rwr" if f == "dpo" else f for p, f in objective["families"].items()}
    orchestrator = data.pop("orchestrator", None)
    if isinstance(orchestrator, dict):
        for key in ("eta_orch", "eta_paradigm"):
            if key in orchestrator:
                objective[key] = orchestrator.pop(key)
        for key in orchestrator:  # anything else is an error to report, under its old name
            objective[f"orchestrator.{key}"] = orchestrator[key]
    data["objective"] = objective
    return data


#: Range rules for plugin parameters, by name suffix: (pattern, kind, low, high). Parameters
#: that match no rule pass through (plugins check their own keys in ``ufarsap_configure``) but
#: must still be finite.
PARAM_RULES: list[tuple[re.Pattern[str], str, float, float]] = [
    (re.compile(r"threshold$"), "float", 0.0, 1.0),
    (re.compile(r"(^|_)depth$"), "int", 0, 16),
    (re.compile(r"(^|_)(agents|n_agents|num_agents)$"), "int", 1, 16),
    (re.compile(r"(^|_)rounds$"), "int", 1, 16),
    (re.compile(r"(^|_)iterations$"), "int", 1, 64),
]


def param_rule(key: str) -> tuple[str, float, float] | None:
    """The (kind, low, high) range rule for a plugin parameter name, or ``None``."""
    for pattern, kind, lo, hi in PARAM_RULES:
        if pattern.search(key):
            return kind, lo, hi
    return None


def _check_param(path: str, key: str, value: Any, problems: list[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                problems.append(f"{path}: keys must be strings")
            else:
                _check_param(f"{path}.{k}", k, v, problems)
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_param(f"{path}[{i}]", key, v, problems)
        return
    if value is None or isinstance(value, (str, bool)):
        return
    if not isinstance(value, (int, float)):
        problems.append(f"{path}: must be JSON data (number, string, bool, list, dict), got {type(value).__name__}")
        return
    if not math.isfinite(value):
        problems.append(f"{path}: must be a finite number, got {value}")
        return
    rule = param_rule(key)
    if rule is None:
        return
    kind, lo, hi = rule
    if kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
        problems.append(f"{path}: must be a whole number in [{lo:g}, {hi:g}], got {value}")
    elif not lo <= value <= hi:
        problems.append(f"{path}: must be within [{lo:g}, {hi:g}], got {value}")


class Strategy(BaseModel):
    """What one candidate strategy sets. Invalid values fail naming the field."""

    model_config = ConfigDict(extra="forbid")

    plugins: list[str] = Field(default_factory=list, description="active plugin names (a set; kept sorted)")
    plugin_params: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                     description="per active plugin: thresholds, depths, agents ...")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig,
                                       description="the unified objective a run of this strategy trains with")

    @field_validator("plugins")
    @classmethod
    def _plugin_names(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not PLUGIN_NAME_RE.match(n)]
        if bad:
            raise ValueError(f"'{bad[0]}' is not a plugin name (paradigm.name, paradigm one of {', '.join(PARADIGMS)})")
        return sorted(set(names))

    @field_validator("plugin_params")
    @classmethod
    def _params_match_plugins(cls, value: dict[str, dict[str, Any]], info) -> dict[str, dict[str, Any]]:
        plugins = info.data.get("plugins")
        problems: list[str] = []
        for name, params in value.items():
            if plugins is not None and name not in plugins:
                problems.append(f"plugin_params.{name}: names a plugin that is not in plugins")
            for key, v in params.items():
                _check_param(f"plugin_params.{name}.{key}", key, v, problems)
        if problems:
            raise ValueError("\n".join(problems))
        return value

    # -- identity ---------------------------------------------------------------------------
    def to_registry(self) -> tuple[list[str], dict[str, Any]]:
        """``(plugins, params)`` as ``Registry.add_strategy`` takes them."""
        data = self.model_dump(mode="json")
        plugins = data.pop("plugins")
        params = {"plugins": {n: data["plugin_params"][n] for n in sorted(data["plugin_params"])}}
        del data["plugin_params"]
        params.update(data)
        return plugins, params

    def content_hash(self) -> str:
        """The registry's content hash of this strategy (equal strategies hash equal)."""
        plugins, params = self.to_registry()
        return content_hash(plugins, params)

    def short(self) -> str:
        """A one-line description for reasons and logs."""
        return "+".join(self.plugins) or "(no plugins)"

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_registry(cls, plugins: list[str], params: dict[str, Any], *, source: str = "strategy") -> "Strategy":
        """Rebuild from registry ``(plugins, params)``; raises ``UserError`` naming fields."""
        data = dict(params or {})
        data["plugin_params"] = data.pop("plugins", {}) or {}
        data["plugins"] = list(plugins)
        return cls.parse(data, source=source)

    @classmethod
    def from_record(cls, record: Any) -> "Strategy":
        """From a ``ufarsap_registry.StrategyRecord``."""
        return cls.from_registry(record.plugins, record.params, source=f"strategy {record.id}")

    @classmethod
    def parse(cls, data: Any, *, source: str = "strategy") -> "Strategy":
        """Validate a dict; ``UserError`` with one line per problem (``source: field: message``)."""
        try:
            return cls.model_validate(_from_legacy(data) if isinstance(data, dict) else data)
        except ValidationError as exc:
            raise UserError("\n".join(validation_lines(exc, source))) from None


def validation_lines(exc: ValidationError, source: str) -> list[str]:
    """One line per problem, naming the field (model-level problems carry their own path)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: {loc}: unknown field")
        elif err["type"] == "value_error" and msg.removeprefix("Value error, ").startswith(loc + "."):
            # multi-problem validators write full field paths, one problem a line
            lines.extend(f"{source}: {line}" for line in msg.removeprefix("Value error, ").splitlines())
        else:
            lines.append(f"{source}: {loc or '(top level)'}: {msg.removeprefix('Value error, ')}")
    return lines


def load_strategy(path: str | Path) -> Strategy:
    """Read a strategy JSON file (the ``Strategy`` fields); ``UserError`` on any problem."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"strategy file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read strategy file {p}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"strategy file {p} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise UserError(f"strategy file {p} must hold a JSON object")
    return Strategy.parse(data, source=str(p))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(plugins: list[str], params: dict[str, Any]) -> str:
    """sha256 of canonical ``[sorted plugins, params]``: the same digest the registry stores."""
    return hashlib.sha256(canonical_json([sorted(plugins), params]).encode()).hexdigest()
