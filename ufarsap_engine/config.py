"""The run configuration: one pydantic model, loaded from TOML/YAML and overridden by flags.

Precedence: built-in defaults < config file < ``--set key=value`` < explicit CLI flags.
Invalid values produce one line per problem naming the field (see :func:`validation_lines`).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ufarsap_engine.errors import UserError
from ufarsap_engine.plugin_host import CALL_TIMEOUT_S, IMPORT_TIMEOUT_S
from ufarsap_engine.schemas import PARADIGMS

#: Plugins a run uses when neither ``--plugins`` nor the registry's active strategy says.
DEFAULT_PLUGINS = ["reflect.crossparadigm", "safety.privacy", "safety.toxicity"]


#: Upper bound of every loss/reward weight: large enough for any sane setting, small enough to
#: catch a typo (``20`` for ``0.2``) before it wrecks a run.
MAX_WEIGHT = 10.0
Weight = Annotated[float, Field(ge=0.0, le=MAX_WEIGHT, allow_inf_nan=False)]
ParadigmName = Literal["self", "reflect", "multi", "safety"]
FamilyName = Literal["unlikelihood", "rwr", "filtering", "mask", "conditional", "hidden", "tags", "none"]
#: The family a paradigm trains with when nothing says otherwise.
DEFAULT_FAMILIES: dict[str, str] = {"safety": "unlikelihood", "reflect": "unlikelihood", "self": "rwr", "multi": "rwr"}


class ObjectiveConfig(BaseModel):
    """The unified objective (Eq. 5) and its baselines; weight defaults are the paper's.

    The one objective schema: the run config's ``objective`` section and a strategy's
    ``objective`` (what evolution mutates and the registry stores) are this model.

    ``mode``: unified (orchestrated, interaction, emergence), weighted (fixed lambda_i, no
    learned orchestration), parallel (plain average of paradigm losses), sequential (one
    paradigm per phase of the run), individual (only ``individual_paradigm``).
    ``families``: the loss family per paradigm (see ``alignment/objectives.py``).
    """

    model_config = ConfigDict(extra="forbid")
    mode: Literal["unified", "weighted", "parallel", "sequential", "individual"] = "unified"
    individual_paradigm: ParadigmName = "safety"
    families: dict[ParadigmName, FamilyName] = Field(default_factory=lambda: dict(DEFAULT_FAMILIES),
                                                      validate_default=True)
    lambda_paradigm: dict[ParadigmName, Weight] = Field(default_factory=dict, validate_default=True,
                                                        description="lambda_i per paradigm (one number: all); "
                                                                    "missing ones are 0.2")
    lambda_coord: Weight = 0.15
    lambda_emerge: Weight = 0.05
    lambda_interact: Weight = Field(1.0, description="weight of the interaction network's prediction loss")
    eta_orch: float = Field(5e-5, gt=0, le=1.0, allow_inf_nan=False)
    eta_paradigm: float = Field(1e-4, gt=0, le=1.0, allow_inf_nan=False)
    alpha: dict[ParadigmName, Weight] = Field(default_factory=dict, validate_default=True,
                                              description="alpha_i per paradigm (Eq. 12); missing ones are 1.0")
    beta: Weight = Field(0.5, description="Synergy weight in the unified reward")
    gamma: Weight = Field(0.1, description="Emergence weight in the unified reward")
    target: dict[str, float] = Field(default_factory=lambda: {"self": 1.0, "reflect": 1.0, "multi": 1.0, "safety": 1.0},
                                     description="a*: the target alignment state of Eq. 6")
    flag_threshold: float = Field(0.5, ge=0, le=1, description="sentence/document/conversation scores below this flag their tokens")
    rwr_beta: float = Field(0.5, gt=0)
    filter_threshold: float = Field(0.5, ge=0, le=1)
    orchestration: bool = Field(True, description="ablation switch: False = uniform, frozen cell weights")
    emergence: bool = Field(True, description="ablation switch: False = no emergence term or reward part")
    coordination: bool = Field(True, description="ablation switch: False = no coordination loss, no interaction")

    @field_validator("families", mode="after")
    @classmethod
    def _all_families(cls, v: dict) -> dict:
        """Every paradigm named, so equal objectives compare (and hash) equal."""
        return {p: v.get(p, DEFAULT_FAMILIES[p]) for p in PARADIGMS}

    @field_validator("lambda_paradigm", mode="before")
    @classmethod
    def _one_for_all(cls, v):
        return {p: v for p in PARADIGMS} if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("lambda_paradigm", "alpha", mode="after")
    @classmethod
    def _all_paradigms(cls, v: dict, info) -> dict:
        default = 0.2 if info.field_name == "lambda_paradigm" else 1.0
        return {p: v.get(p, default) for p in PARADIGMS}

    def lam(self, paradigm: str) -> float:
        return float(self.lambda_paradigm.get(paradigm, 0.2))

    def over(self, base: "ObjectiveConfig") -> "ObjectiveConfig":
        """``base`` with the fields set explicitly here (config file, ``--set``, flags) on top:
        how a run's own objective settings win over its strategy's."""
        return base.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})


class PluginTimeouts(BaseModel):
    """Time limits for plugin code; a plugin over its limit fails (strict) or is quarantined."""

    model_config = ConfigDict(extra="forbid")

    call_s: float = Field(CALL_TIMEOUT_S, ge=0, description="one hook call, seconds (0: no limit)")
    import_s: float = Field(IMPORT_TIMEOUT_S, ge=0, description="importing one plugin, seconds (0: no limit)")


class OnPolicyConfig(BaseModel):
    """The on-policy phase: every ``every`` steps the model samples ``samples`` continuations of
    ``prompts`` prompts, the plugins score them at the immediate horizon, and (best, worst) pairs
    train through a DPO term for the next ``train_steps`` steps (reference: the policy at the
    phase). ``every = 0`` turns it off."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(0, ge=0, description="steps between on-policy phases (0: off)")
    samples: int = Field(4, ge=2, description="K: continuations sampled per prompt (a pair needs two)")
    prompts: int = Field(8, ge=1, description="prompts per phase and data-parallel rank")
    prompt_tokens: int = Field(16, ge=1, description="tokens of a document's start used as a prompt")
    new_tokens: int = Field(32, ge=1, description="tokens sampled per continuation")
    temperature: float = Field(1.0, gt=0, le=10, allow_inf_nan=False)
    top_k: int = Field(0, ge=0, description="0: off")
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    beta: float = Field(0.1, gt=0, le=100, allow_inf_nan=False, description="DPO beta")
    lam: float = Field(0.1, ge=0, le=100, allow_inf_nan=False,
                       description="weight of the DPO term (per pair mean) against the per-token loss")
    train_steps: int = Field(10, ge=1, description="steps each phase's pairs are trained on")
    pairs_from: Literal["flagged", "score"] = Field(
        "flagged", description="flagged: a prompt gives a pair when some samples are flagged and some not "
                               "(chosen: the best unflagged, rejected: the worst flagged); score: best vs worst "
                               "mean plugin score whenever they differ by more than min_gap")
    min_gap: float = Field(0.0, ge=0, le=1, description="a pair needs best - worst score above this")
    prompts_file: str | None = Field(None, description="JSONL of {\"prompt\": ...}; half of each phase's "
                                                       "prompts come from it (--prompts)")


TrackerName = Literal["tensorboard", "mlflow"]


class TrackersConfig(BaseModel):
    """Experiment trackers the step metrics also go to (``run --log-to``; ``trackers.py``)."""

    model_config = ConfigDict(extra="forbid")
    log_to: list[TrackerName] = Field(default_factory=list, description="tensorboard and/or mlflow")
    every: int = Field(10, ge=1, description="steps between tracker writes (the last step is always written)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; None: sqlite:///OUT/mlflow.db")
    mlflow_experiment: str = Field("ufarsap-engine", min_length=1)

    @field_validator("log_to", mode="before")
    @classmethod
    def _comma_list(cls, v):
        if isinstance(v, str):
            v = [x.strip() for x in v.split(",")] if v.strip() not in ("", "none") else []
        return list(dict.fromkeys(v)) if isinstance(v, list) else v


class RunConfig(BaseModel):
    """Everything ``ufarsap-engine run`` needs. Field names are the config-file keys."""

    model_config = ConfigDict(extra="forbid")

    plugins: list[str] | None = Field(None, description="None: the registry's active strategy decides")
    strict_plugins: bool = Field(True, description="False: quarantine a failing plugin instead of stopping")
    plugin_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    plugin_timeouts: PluginTimeouts = Field(default_factory=PluginTimeouts)
    data: str | None = Field(None, description="text/JSONL file or saved HF dataset; None: embedded corpus")
    steps: int = Field(300, ge=1)
    seed: int = Field(1234, ge=0)
    out: str | None = Field(None, description="run directory; None: a fresh runs/<UTC timestamp>")
    overwrite: bool = Field(False, description="discard a run with other settings in `out` instead of refusing")
    log_every: int | None = Field(None, ge=1, description="steps between progress lines when stderr is not a "
                                                          "terminal; None: every 10% of the run, at most 50")
    registry: str | None = None
    registry_heartbeat_s: float = Field(30.0, gt=0, description="seconds between a run's registry heartbeats")
    registry_wait_s: float = Field(30.0, ge=0, description="at the end of a run, how long to wait for registry "
                                   "writes an outage held back before warning what was not recorded")
    scope: str = Field("default", min_length=1, max_length=64)
    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    nproc: int = Field(1, ge=1)
    device: Literal["cpu", "cuda"] = "cpu"
    model: str = Field("tiny", description="model preset name")
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict, description="trainer settings (lr, batch ...)")
    window_steps: int = Field(10, ge=1, description="steps in a medium-horizon window")
    window_samples: int = Field(16, ge=0, description="documents of a window re-scored at its end (medium horizon)")
    round_steps: int = Field(100, ge=1, description="steps in a long-horizon round")
    probe_documents: int = Field(64, ge=0, description="documents held out of training and scored every round")
    batch_samples: int = Field(8, ge=1, description="samples scored per step in hook-only mode")
    annotate_workers: int = Field(2, ge=0, description="processes annotating raw training data ahead of the steps "
                                                       "(0: a thread of the training process)")
    train_model: bool = Field(True, description="False: run the plugin hooks without a model update")
    evolve: bool = Field(False, description="run an evolution round at every round boundary")
    evolution: dict[str, Any] = Field(default_factory=dict, description="EvolutionConfig settings")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    onpolicy: OnPolicyConfig = Field(default_factory=OnPolicyConfig)
    trackers: TrackersConfig = Field(default_factory=TrackersConfig)
    trace_plugins: bool = False

    @field_validator("plugins")
    @classmethod
    def _plugin_list(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        names = [p.strip() for p in v]
        if any(not n for n in names):
            raise ValueError(f"empty plugin name in {','.join(names)!r}: give names separated by commas, "
                             "or 'none' for no plugins")
        return names

    @field_validator("out")
    @classmethod
    def _out_is_a_directory(cls, v: str) -> str:
        """A run directory that is a file (or under one) would fail half-way; say so up front."""
        path = Path(v)
        for p in (path, *path.parents):
            if p.exists():
                if not p.is_dir():
                    raise ValueError(f"{p} is a file, not a directory; give --out a directory path")
                break
        return v


def validation_lines(exc: ValidationError, source: str = "config") -> list[str]:
    """One human line per validation problem: ``source: field.path: message``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        lines.append(f"{source}: {loc}: {msg}")
    return lines


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {p}: {exc.__class__.__name__}: {exc}") from None
    try:
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        first = str(exc).splitlines()[0]
        kind = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}.get(p.suffix, "TOML")
        raise UserError(f"config file {p} is not valid {kind}: {first}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a table/mapping at the top level")
    return data


_KEY_PART = re.compile(r'"([^"]+)"|([^."]+)')


def split_set_key(key: str) -> list[str]:
    """``a.b.c`` -> ``[a, b, c]``; a double-quoted part may hold dots (``plugin_params."safety.spam".x``).

    Plugin names are always ``paradigm.name`` (no further dots), so an unquoted
    ``plugin_params.safety.spam.max_links`` also means the plugin ``safety.spam``."""
    parts, pos, quoted = [], 0, []
    while True:
        m = _KEY_PART.match(key, pos)
        if not m:
            raise UserError(f"--set: cannot read the key '{key}' (use dotted names; quote a name holding dots: "
                            'plugin_params."safety.spam".max_links=5)')
        parts.append(m.group(1) if m.group(1) is not None else m.group(2))
        quoted.append(m.group(1) is not None)
        pos = m.end()
        if pos == len(key):
            break
        if key[pos] != ".":
            raise UserError(f"--set: cannot read the key '{key}' (expected '.' after {parts[-1]!r})")
        pos += 1
    if parts[0] == "plugin_params" and len(parts) >= 3 and not quoted[1] and not quoted[2]:
        parts[1:3] = [f"{parts[1]}.{parts[2]}"]
    return parts


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set train.lr=3e-4`` -> nested dict; values parsed as JSON where possible."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got '{item}'")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = split_set_key(key)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def load_config(path: str | None = None, sets: list[str] | None = None, **flags: Any) -> RunConfig:
    """Build the run config; raises ``UserError`` with one line per invalid value."""
    data: dict[str, Any] = read_config_file(path) if path else {}
    data = _merge(data, parse_set(sets or []))
    data = _merge(data, {k: v for k, v in flags.items() if v is not None})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError("\n".join(validation_lines(exc, path or "config"))) from None
