"""Explore (Eq. 22): candidate strategies from the active one and the registry's history.

Operators (all draws from one RNG seeded by ``(seed, round)``, so a round is reproducible):

* **plugin proposals** (origin ``plugin``): whatever installed plugins return from the
  ``ufarsap_propose_strategies`` hook (by default: the active strategy's plugins). A proposal's
  ``params`` use the registry layout and are merged over the active strategy's; proposals that
  do not validate, or that name plugins that are not installed, are dropped with the reason.
* **crossover** (origin ``crossover``): the active strategy x one of the best other complete
  strategies: shared plugins kept, the others each taken with probability 1/2; every
  parameter from one parent or the other.
* **exploit** (origin ``exploit``, PBT style): copy the best-scoring strategy in the history
  that is not the active one, and perturb it.
* **mutate** / **toggle** (origin ``explore``): perturb one or two numeric parameters within
  their bounds, or switch one installed plugin on or off.

Candidates whose content hash is already in the registry (any state) or already proposed this
round are dropped, so nothing is evaluated twice.
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ufarsap_engine.alignment.objectives import LOSS_FAMILIES
from ufarsap_engine.config import MAX_WEIGHT
from ufarsap_engine.errors import EngineError, UserError
from ufarsap_engine.evolution.strategy import Strategy, param_rule
from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.schemas import AlignmentState, StrategyProposal

EVOLUTION_ORIGINS = ("explore", "exploit", "crossover", "plugin")
#: The families a mutation switches between: the loss-side ones (a data-side family changes the
#: training data itself, so a strategy chooses one explicitly; see ``alignment/data_families.py``).
MUTABLE_FAMILIES: tuple[str, ...] = (*LOSS_FAMILIES, "none")
#: The objective's numeric settings a training mutation moves (per paradigm where a dict).
TUNED_WEIGHTS = ("lambda_paradigm", "alpha", "beta", "gamma", "lambda_coord", "lambda_emerge", "eta_orch")


class MutationSettings(BaseModel):
    """How far and how often explore moves."""

    model_config = ConfigDict(extra="forbid")
    sigma: float = Field(0.15, gt=0, le=1, description="bounded floats: std as a share of the range")
    log_sigma: float = Field(0.3, gt=0, le=3, description="weights and rates: std of the log-factor")
    p_toggle: float = Field(0.5, ge=0, le=1, description="share of explore candidates that toggle a plugin")
    p_family: float = Field(0.1, ge=0, le=1, description="chance a training mutation switches an objective family")
    min_plugins: int = Field(1, ge=0)
    max_plugin_proposals: float = Field(0.5, ge=0, le=1, description="share of the population plugins may fill")
    crossover_pool: int = Field(3, ge=1, description="partners drawn from this many best strategies")


@dataclass
class Candidate:
    """A strategy to evaluate, with where it came from (for the registry's lineage)."""

    strategy: Strategy
    origin: str
    parent_id: int | None
    reason: str


@dataclass
class Proposals:
    candidates: list[Candidate] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (source, why)


def _objective(record) -> float | None:
    v = record.scores.get("objective")
    return v if v is not None and math.isfinite(v) else None


def known_hashes(history: Iterable[Any]) -> set[str]:
    """Content hashes of every strategy in the history, raw and normalised (defaults filled in)."""
    seen = set()
    for rec in history:
        seen.add(rec.content_hash)
        try:
            seen.add(Strategy.from_record(rec).content_hash())
        except UserError:
            pass
    return seen


class Explorer:
    """Proposes up to ``n`` new, distinct candidates per round."""

    def __init__(self, installed: Iterable[str], *, seed: int = 0, settings: MutationSettings | None = None,
                 tune_training_weights: bool = False, proposers: list[str] | None = None,
                 host_factory: Callable[[list[str]], PluginHost] | None = None):
        entries = installed if isinstance(installed, dict) else None
        self.installed = set(installed)
        self.seed = seed
        self.settings = settings or MutationSettings()
        self.tune_training_weights = tune_training_weights
        self.proposers = proposers
        self.host_factory = host_factory or (
            lambda names: PluginHost(names, strict=False, installed=entries, announce=False))

    def propose(self, incumbent: Strategy, incumbent_id: int, history: list[Any], n: int, round_index: int,
                state: AlignmentState | None = None) -> Proposals:
        rng = random.Random(self.seed * 1_000_003 + round_index)
        out = Proposals()
        seen = known_hashes(history) | {incumbent.content_hash()}

        def offer(cand: Candidate, source: str) -> bool:
            h = cand.strategy.content_hash()
            if h in seen:
                out.dropped.append((source, f"duplicate of a strategy already in the registry or this round ({h[:12]})"))
                return False
            missing = [p for p in cand.strategy.plugins if p not in self.installed]
            if missing:
                out.dropped.append((source, f"names plugins that are not installed: {', '.join(missing)}"))
                return False
            seen.add(h)
            out.candidates.append(cand)
            return True

        # 1. plugin proposals, up to a share of the population
        room = max(1, math.floor(n * self.settings.max_plugin_proposals)) if n else 0
        for cand, source in self._plugin_proposals(incumbent, incumbent_id, state or AlignmentState(round=round_index), out):
            if len(out.candidates) < room:
                offer(cand, source)
            else:
                out.dropped.append((source, "population full"))
        others = sorted((r for r in history if r.id != incumbent_id and r.state == "complete"
                         and _objective(r) is not None and r.lifecycle != "active"),
                        key=lambda r: (-_objective(r), r.id))
        parsed = []
        for r in others:
            try:
                parsed.append((r, Strategy.from_record(r)))
            except UserError as exc:
                out.dropped.append((f"history {r.id}", f"unreadable strategy: {exc}"))
        # 2. crossover with one of the best others
        if parsed and len(out.candidates) < n:
            for _ in range(5):
                rec, other = rng.choice(parsed[: self.settings.crossover_pool])
                child = self.crossover(incumbent, other, rng)
                if child is not None and offer(Candidate(child, "crossover", incumbent_id,
                                                         f"crossover of {incumbent_id} x {rec.id}"), "crossover"):
                    break
        # 3. exploit the best other strategy
        if parsed and len(out.candidates) < n:
            rec, best = parsed[0]
            for _ in range(5):
                child = self.mutate(best, rng) or self.toggle(best, rng)
                if child is not None and offer(Candidate(child, "exploit", rec.id,
                                                         f"exploit best strategy {rec.id} "
                                                         f"(objective {_objective(rec):.4f}), perturbed"), "exploit"):
                    break
        # 4. mutations and toggles of the active strategy fill the rest
        attempts = 0
        while len(out.candidates) < n and attempts < 25 * max(1, n):
            attempts += 1
            if rng.random() < self.settings.p_toggle or not self._genes(incumbent):
                child, what = self.toggle(incumbent, rng), "toggle"
            else:
                child, what = self.mutate(incumbent, rng), "mutate"
            if child is None:
                continue
            before = len(out.dropped)
            if offer(Candidate(child, "explore", incumbent_id, f"{what} of {incumbent_id}: {_diff(incumbent, child)}"),
                     what):
                continue
            if out.dropped[before:] and out.dropped[-1][1].startswith("duplicate"):
                out.dropped.pop()  # routine collisions of random moves are not worth reporting
        return out

    # -- plugin proposals -------------------------------------------------------------------
    def _plugin_proposals(self, incumbent: Strategy, incumbent_id: int, state: AlignmentState,
                          out: Proposals) -> list[tuple[Candidate, str]]:
        names = [p for p in (self.proposers if self.proposers is not None else incumbent.plugins)
                 if p in self.installed]
        if not names:
            return []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quarantined proposers are reported as dropped below
            try:
                host = self.host_factory(names)
            except EngineError as exc:
                out.dropped.append(("plugins", f"could not load proposers: {exc}"))
                return []
            for name in list(host.names):
                host.call("ufarsap_configure", only=[name], params=dict(incumbent.plugin_params.get(name, {})))
            plugins, params = incumbent.to_registry()
            results = host.call("ufarsap_propose_strategies", active_plugins=plugins, params=params, state=state)
        for name, why in host.quarantined.items():
            out.dropped.append((f"plugin {name}", why))
        cands = []
        for name, items in sorted(results.items()):
            if not isinstance(items, list):
                out.dropped.append((f"plugin {name}", f"returned {type(items).__name__}, not a list of StrategyProposal"))
                continue
            for i, item in enumerate(items):
                source = f"plugin {name} proposal {i}"
                try:
                    prop = item if isinstance(item, StrategyProposal) else StrategyProposal.model_validate(item)
                except ValidationError as exc:
                    e = exc.errors()[0]
                    out.dropped.append((source, f"invalid proposal: {'.'.join(map(str, e['loc']))}: {e['msg']}"))
                    continue
                try:
                    strategy = merge_proposal(incumbent, prop.plugins, prop.params, source=source)
                except UserError as exc:
                    out.dropped.append((source, str(exc).replace("\n", "; ")))
                    continue
                why = f"proposed by plugin {name}" + (f": {prop.rationale}" if prop.rationale else "")
                cands.append((Candidate(strategy, "plugin", incumbent_id, why), source))
        return cands

    # -- operators --------------------------------------------------------------------------
    def _genes(self, s: Strategy) -> list[tuple[str, ...]]:
        """Mutable numeric settings of ``s`` as paths into its JSON form."""
        genes: list[tuple[str, ...]] = []
        for plugin in s.plugins:
            for key, value in s.plugin_params.get(plugin, {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    genes.append(("plugin_params", plugin, key))
        if self.tune_training_weights:
            obj = s.objective
            genes.extend(("objective", "families", p) for p in obj.families)
            for key in TUNED_WEIGHTS:
                value = getattr(obj, key)
                genes.extend([("objective", key, p) for p in value] if isinstance(value, dict) else [("objective", key)])
        return genes

    def mutate(self, s: Strategy, rng: random.Random) -> Strategy | None:
        """Perturb one or two numeric settings within bounds; ``None`` if there is nothing to move."""
        genes = self._genes(s)
        if not genes:
            return None
        data = s.model_dump(mode="json")
        for path in rng.sample(genes, k=min(len(genes), rng.choice((1, 1, 2)))):
            node = data
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = self._perturb(path, node[path[-1]], rng)
        try:
            return Strategy.model_validate(data)
        except ValidationError:
            return None

    def _perturb(self, path: tuple[str, ...], value: Any, rng: random.Random) -> Any:
        st = self.settings
        if path[:2] == ("objective", "families"):
            if rng.random() < st.p_family:
                return rng.choice([f for f in MUTABLE_FAMILIES if f != value])
            return value
        if path[0] == "plugin_params":
            rule = param_rule(path[-1])
            if rule is not None:
                kind, lo, hi = rule
                if kind == "int":
                    return int(min(hi, max(lo, value + rng.choice((-1, 1)))))
                return round(min(hi, max(lo, value + rng.gauss(0, st.sigma * (hi - lo)))), 4)
            if isinstance(value, int):
                return value + rng.choice((-1, 1)) if value != 0 else rng.choice((0, 1))
            return _sig(value * math.exp(rng.gauss(0, st.log_sigma)) if value else rng.gauss(0, st.sigma))
        if path == ("objective", "eta_orch"):
            return _sig(min(1.0, value * math.exp(rng.gauss(0, st.log_sigma))))
        base = value if value > 0 else 0.05
        return _sig(min(MAX_WEIGHT, base * math.exp(rng.gauss(0, st.log_sigma))))

    def toggle(self, s: Strategy, rng: random.Random) -> Strategy | None:
        """Switch one installed plugin on, or one active plugin off (keeping ``min_plugins``)."""
        can_add = sorted(self.installed - set(s.plugins))
        can_remove = list(s.plugins) if len(s.plugins) > self.settings.min_plugins else []
        if not can_add and not can_remove:
            return None
        data = s.model_dump(mode="json")
        if can_add and (not can_remove or rng.random() < 0.5):
            data["plugins"] = sorted(s.plugins + [rng.choice(can_add)])
        else:
            gone = rng.choice(can_remove)
            data["plugins"] = [p for p in s.plugins if p != gone]
            data["plugin_params"].pop(gone, None)
        return Strategy.model_validate(data)

    def crossover(self, a: Strategy, b: Strategy, rng: random.Random) -> Strategy | None:
        """Uniform crossover of two strategies; ``None`` if the child equals a parent."""
        da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
        shared = set(a.plugins) & set(b.plugins)
        either = (set(a.plugins) ^ set(b.plugins)) & self.installed
        plugins = sorted(shared | {p for p in sorted(either) if rng.random() < 0.5})
        if len(plugins) < self.settings.min_plugins:
            return None
        child: dict[str, Any] = {"plugins": plugins, "plugin_params": {}}
        for p in plugins:
            pa, pb = da["plugin_params"].get(p), db["plugin_params"].get(p)
            if pa is not None and pb is not None:
                child["plugin_params"][p] = {k: (pa if rng.random() < 0.5 else pb).get(k, pa.get(k, pb.get(k)))
                                             for k in sorted(set(pa) | set(pb))}
            elif pa is not None or pb is not None:
                child["plugin_params"][p] = dict(pa if pa is not None else pb)
        oa, ob = da["objective"], db["objective"]
        child["objective"] = {}
        for key in oa:  # per setting, per paradigm where it is a per-paradigm table
            if isinstance(oa[key], dict) and isinstance(ob[key], dict):
                child["objective"][key] = {k: (oa if rng.random() < 0.5 else ob)[key].get(k, oa[key][k]) for k in oa[key]}
            else:
                child["objective"][key] = (oa if rng.random() < 0.5 else ob)[key]
        try:
            strategy = Strategy.model_validate(child)
        except ValidationError:
            return None
        if strategy.content_hash() in (a.content_hash(), b.content_hash()):
            return None
        return strategy


def merge_proposal(base: Strategy, plugins: list[str], params: dict[str, Any], *, source: str) -> Strategy:
    """A proposal's (plugins, registry-layout params) over ``base``: given settings replace
    the base's, per-plugin parameters merge per plugin; plugins not proposed lose theirs."""
    data = base.model_dump(mode="json")
    params = dict(params or {})
    plugin_params = params.pop("plugins", {}) or {}
    if not isinstance(plugin_params, dict):
        raise UserError(f"{source}: params.plugins must map plugin names to parameter dicts")
    merged = {p: dict(data["plugin_params"].get(p, {})) for p in plugins}
    for p, values in plugin_params.items():
        if not isinstance(values, dict):
            raise UserError(f"{source}: params.plugins.{p} must be a dict of parameters")
        merged.setdefault(p, {}).update(values)
    if isinstance(params.get("objective"), dict):  # merged per setting, like the plugin parameters
        params["objective"] = {**data["objective"], **params["objective"]}
    data.update(params)
    data["plugins"] = list(plugins)
    data["plugin_params"] = merged
    return Strategy.parse(data, source=source)


def _sig(x: float, digits: int = 4) -> float:
    """Round to ``digits`` significant digits, so hashes of mutated values stay stable."""
    return float(f"{x:.{digits}g}")


def _diff(a: Strategy, b: Strategy) -> str:
    """A short description of what changed from ``a`` to ``b`` (for lineage reasons)."""
    parts = []
    added, removed = sorted(set(b.plugins) - set(a.plugins)), sorted(set(a.plugins) - set(b.plugins))
    if added:
        parts.append("+" + ",+".join(added))
    if removed:
        parts.append("-" + ",-".join(removed))
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                if path == "" and k == "plugins":
                    continue
                walk(x.get(k), y.get(k), f"{path}.{k}" if path else k)
        elif x != y and x is not None and y is not None:
            parts.append(f"{path} {x} -> {y}")

    walk(da, db, "")
    return "; ".join(parts) or "no change"
