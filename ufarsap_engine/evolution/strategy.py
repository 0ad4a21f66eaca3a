"""A strategy (Eq. 4, 22): which plugins run, their parameters, and the unified-objective weights.

One validated value type for everything evolution touches, so a strategy read from a JSON file,
from a plugin's proposal or from the registry is checked the same way, and equal strategies
hash equal (the hash is the registry's: sha256 of the canonical JSON of
``[sorted plugins, params]``).

Registry layout (``to_registry``): ``plugins`` is the list of plugin names; ``params`` holds the
per-plugin parameters under ``"plugins"`` (the key ``run.prepare`` reads) and the objective
settings under the field names below. Training-only settings (lambdas, alphas, beta, gamma,
objective families, lambda_coord, lambda_emerge, orchestrator) act through the trainer; plugin
selection and plugin parameters also act on hook-only evaluation.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ufarsap_engine.errors import UserError
from ufarsap_engine.schemas import PARADIGMS, PLUGIN_NAME_RE

ObjectiveFamily = Literal["unlikelihood", "conditional", "rwr", "filtering", "dpo", "none"]
OBJECTIVE_FAMILIES: tuple[str, ...] = ("unlikelihood", "conditional", "rwr", "filtering", "dpo", "none")
ParadigmName = Literal["self", "reflect", "multi", "safety"]

#: Upper bound of every loss/reward weight: large enough for any sane setting, small enough to
#: catch a typo (``20`` for ``0.2``) before it wrecks a run.
MAX_WEIGHT = 10.0
Weight = Annotated[float, Field(ge=0.0, le=MAX_WEIGHT, allow_inf_nan=False)]

#: Paper defaults (lambda_i = 0.2, lambda_coord = 0.15, lambda_emerge = 0.05, eta_orch = 5e-5,
#: eta_paradigm = 1e-4). The paper gives no alpha/beta/gamma values; these are the engine's.
DEFAULT_LAMBDA = 0.2
DEFAULT_ALPHA = 0.25
DEFAULT_OBJECTIVES: dict[str, str] = {
    "safety": "unlikelihood", "self": "dpo", "reflect": "rwr", "multi": "rwr",
}

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


class OrchestratorSettings(BaseModel):
    """Learning rates of the orchestrator's weights w[s, tau] and of the paradigm modules."""

    model_config = ConfigDict(extra="forbid")
    eta_orch: float = Field(5e-5, gt=0.0, le=1.0, allow_inf_nan=False)
    eta_paradigm: float = Field(1e-4, gt=0.0, le=1.0, allow_inf_nan=False)


class Strategy(BaseModel):
    """What one candidate strategy sets. Invalid values fail naming the field."""

    model_config = ConfigDict(extra="forbid")

    plugins: list[str] = Field(default_factory=list, description="active plugin names (a set; kept sorted)")
    plugin_params: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                     description="per active plugin: thresholds, depths, agents ...")
    lambdas: dict[ParadigmName, Weight] = Field(default_factory=dict, validate_default=True,
                                                description="lambda_i per paradigm (Eq. 5)")
    alphas: dict[ParadigmName, Weight] = Field(default_factory=dict, validate_default=True,
                                               description="alpha_i per paradigm (Eq. 12)")
    beta: Weight = Field(0.1, description="synergy weight (Eq. 12)")
    gamma: Weight = Field(0.05, description="emergence weight (Eq. 12)")
    objectives: dict[ParadigmName, ObjectiveFamily] = Field(default_factory=dict, validate_default=True,
                                                            description="training-signal family per paradigm")
    lambda_coord: Weight = 0.15
    lambda_emerge: Weight = 0.05
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)

    @field_validator("plugins")
    @classmethod
    def _plugin_names(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not PLUGIN_NAME_RE.match(n)]
        if bad:
            raise ValueError(f"'{bad[0]}' is not a plugin name (paradigm.name, paradigm one of {', '.join(PARADIGMS)})")
        return sorted(set(names))

    @field_validator("lambdas", "alphas", "objectives", mode="after")
    @classmethod
    def _fill_paradigms(cls, value: dict, info) -> dict:
        default = {"lambdas": DEFAULT_LAMBDA, "alphas": DEFAULT_ALPHA}.get(info.field_name)
        return {p: value.get(p, default if default is not None else DEFAULT_OBJECTIVES[p]) for p in PARADIGMS}

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
            return cls.model_validate(data)
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
