"""The evolution loop (Eq. 4, 22, 23): explore -> evaluate -> integrate, one round at a time.

All state lives in the registry, so a killed process loses nothing but the round it was in:

* the round index is derived from the registry (1 + the highest generation of any evolution
  or seed strategy of the scope, or of the active one, or the last round's index recorded on
  its incumbent as ``evolution.round.index``); a candidate's ``generation`` is the
  round that proposed it, a seed's is the round before the one that had to seed (0 at first);
* a round records its whole population first, then marks it ``running`` and evaluates it
  while heartbeating the run; a kill leaves those ``running`` under a run whose heartbeat goes
  stale, and the next ``Evolution`` (``resume``) fails them through ``Registry.reap_stale``
  and carries on from the active strategy.

One evolution process per scope at a time (as with PBT); a second one would not corrupt the
registry (activation is transactional, and a winner is not activated if the active strategy
changed during the round) but would waste work.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from ufarsap_engine.config import DEFAULT_PLUGINS
from ufarsap_engine.errors import EngineError, EngineFailure, UserError
from ufarsap_engine.evolution import integrate
from ufarsap_engine.evolution.evaluate import Budget, Evaluation, Evaluator
from ufarsap_engine.evolution.explore import EVOLUTION_ORIGINS, Explorer, MutationSettings
from ufarsap_engine.evolution.integrate import IntegrationSettings
from ufarsap_engine.evolution.strategy import Strategy
from ufarsap_engine.plugin_host import installed_plugins
from ufarsap_engine.schemas import AlignmentState

log = logging.getLogger("ufarsap_engine.evolution")


class EvolutionConfig(BaseModel):
    """Settings of an evolution run (config-file key ``evolution``)."""

    model_config = ConfigDict(extra="forbid")
    scope: str = Field("default", min_length=1, max_length=64)
    population_size: int = Field(4, ge=1, le=64)
    seed: int = Field(1234, ge=0)
    default_plugins: list[str] = Field(default_factory=lambda: list(DEFAULT_PLUGINS),
                                       description="seed strategy when the scope has no active one")
    seed_plugin_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    eval_steps: int = Field(0, ge=0, description="training steps per evaluation (model-based evaluators)")
    bootstrap: int = Field(200, ge=0, le=10_000)
    stale_after_s: float = Field(300.0, ge=0, description="a run silent this long is dead")
    heartbeat_s: float = Field(30.0, gt=0, description="heartbeat period during an evaluation")
    tune_training_weights: bool | None = Field(None, description="None: when the evaluator trains a model")
    proposers: list[str] | None = Field(None, description="plugins asked for proposals; None: the active ones")
    measure_generalisation: bool = True
    integration: IntegrationSettings = Field(default_factory=IntegrationSettings)
    mutation: MutationSettings = Field(default_factory=MutationSettings)


@dataclass
class RoundResult:
    """What one round did (also derivable from the registry)."""

    round_index: int
    run_id: str
    incumbent_id: int
    incumbent_objective: float
    seeded_id: int | None = None
    candidates: dict[int, str] = field(default_factory=dict)  # id -> origin
    objectives: dict[int, float] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    integrated_id: int | None = None
    improvement: float | None = None
    gen_improvement: float | None = None
    margin: float | None = None
    reaped: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        won = (f"integrated {self.integrated_id} (+{self.improvement:.4f} > margin {self.margin:.4f})"
               if self.integrated_id is not None else "nothing integrated")
        return (f"round {self.round_index}: {len(self.candidates)} candidates, {len(self.failed)} failed, "
                f"{len(self.rejected)} rejected; {won}; incumbent {self.incumbent_id} "
                f"objective {self.incumbent_objective:.4f}")


class _Heartbeat:
    """Heartbeats the run from a thread while a (possibly long) evaluation runs."""

    def __init__(self, reg, run_id: str, period: float):
        self.reg, self.run_id, self.period = reg, run_id, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="ufarsap-evolution-heartbeat")

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.reg.heartbeat(self.run_id)
            except Exception as exc:  # a missed beat must not kill the evaluation
                log.warning("heartbeat failed: %s", exc)

    def __enter__(self) -> "_Heartbeat":
        self.reg.heartbeat(self.run_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Evolution:
    """Adaptive evolution over the registry of one scope.

    ``registry``: an open ``ufarsap_registry.Registry``; ``evaluator``: any :class:`Evaluator`
    (``ProbeEvaluator``, or the trainer's model-based one); ``run_id``: the registry run this
    belongs to (None: start one, ended by :meth:`close`); ``state_fn``: returns a(t) for the
    plugins' proposal hook (default: the incumbent's probe scores as the long horizon).
    """

    def __init__(self, registry, evaluator: Evaluator, config: EvolutionConfig | None = None, *,
                 run_id: str | None = None, installed: dict | None = None,
                 state_fn: Callable[[], AlignmentState] | None = None,
                 explorer: Explorer | None = None):
        self.reg = registry
        self.evaluator = evaluator
        self.config = config or EvolutionConfig()
        self.installed = installed if installed is not None else installed_plugins()
        tune = self.config.tune_training_weights
        self.explorer = explorer or Explorer(
            self.installed, seed=self.config.seed, settings=self.config.mutation,
            tune_training_weights=evaluator.trains_model if tune is None else tune,
            proposers=self.config.proposers)
        self.state_fn = state_fn
        self.run_id = run_id
        self._own_run = run_id is None
        self._resumed = False
        self._reaped = 0

    # -- run bookkeeping --------------------------------------------------------------------
    def start(self) -> str:
        """Start (or join) the registry run and clear what dead runs left behind."""
        if self.run_id is not None:
            self.reg.heartbeat(self.run_id)  # a joined run must not look dead to the reaper
        if not self._resumed:
            self.resume()
        if self.run_id is None:
            self.run_id = self.reg.start_run("evolution", {"evolution": self.config.model_dump(mode="json"),
                                                           "evaluator": self.evaluator.name}, scope=self.config.scope)
        return self.run_id

    def resume(self) -> int:
        """Fail candidates of dead runs: ``running`` ones via ``reap_stale``, and evolution
        candidates never started (state ``candidate``) older than the stale timeout."""
        self._resumed = True
        n = self.reg.reap_stale(self.config.stale_after_s)
        cutoff = datetime.now(UTC) - timedelta(seconds=self.config.stale_after_s)
        for rec in self.reg.list(state="candidate", scope=self.config.scope):
            if rec.origin in EVOLUTION_ORIGINS and rec.run_id != self.run_id and rec.created_at <= cutoff:
                self.reg.set_state(rec.id, "failed", f"abandoned: run {rec.run_id} stopped before evaluating it")
                n += 1
        self._reaped = n
        return n

    def close(self, status: str = "complete") -> None:
        """End the run this object started (a run passed in is the caller's to end)."""
        if self._own_run and self.run_id is not None:
            self.reg.end_run(self.run_id, status)
            self.run_id = None

    def __enter__(self) -> "Evolution":
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.close("complete" if exc_type is None else "failed")

    def next_round_index(self) -> int:
        """1 + the highest generation of the scope's evolution/seed strategies or active one,
        or of a round that proposed nothing new (its index is a score of its incumbent)."""
        recs = self.reg.list(scope=self.config.scope)
        gens = [r.generation for r in recs if r.origin in EVOLUTION_ORIGINS or r.origin == "seed" or r.lifecycle == "active"]
        gens += [int(v) for r in recs if (v := r.scores.get("evolution.round.index")) is not None and v == v]
        return 1 + max(gens, default=0)

    # -- one round --------------------------------------------------------------------------
    def run_round(self, round_index: int | None = None) -> RoundResult:
        """Explore, evaluate and integrate once; returns what happened."""
        t0 = time.perf_counter()
        run_id = self.start()
        r = self.next_round_index() if round_index is None else round_index
        scope = self.config.scope
        budget = Budget(steps=self.config.eval_steps, bootstrap=self.config.bootstrap)

        incumbent_rec, seeded, inc_eval = self._incumbent(r, budget)
        incumbent = Strategy.from_record(incumbent_rec)
        if inc_eval is None:
            inc_eval = self._evaluate_or_fail(incumbent, budget, what=f"active strategy {incumbent_rec.id}")
            self.reg.record_scores(incumbent_rec.id, inc_eval.scores(prefix="incumbent."), step=r)
        result = RoundResult(r, run_id, incumbent_rec.id, inc_eval.objective, seeded_id=seeded, reaped=self._reaped)
        self._reaped = 0

        history = self.reg.list(scope=scope)
        state = self.state_fn() if self.state_fn else _state_from(inc_eval, r)
        proposals = self.explorer.propose(incumbent, incumbent_rec.id, history, self.config.population_size, r, state)
        result.dropped = proposals.dropped
        for source, why in proposals.dropped:
            log.info("round %d: dropped %s: %s", r, source, why)

        ids = self._record_population(proposals.candidates, r, result)
        evals = self._evaluate_population(ids, budget, r, result)
        self._integrate(ids, evals, incumbent_rec.id, incumbent, inc_eval, budget, r, result)
        self.reg.record_scores(incumbent_rec.id, {
            "evolution.round.index": float(r), "evolution.round.candidates": float(len(ids)),
            "evolution.round.failed": float(len(result.failed)),
            "evolution.round.integrated": float(result.integrated_id is not None),
        }, step=r)
        self.reg.heartbeat(run_id)
        result.seconds = round(time.perf_counter() - t0, 3)
        log.info(result.summary())
        return result

    def run(self, rounds: int, on_round: Callable[[RoundResult], None] | None = None) -> list[RoundResult]:
        """``rounds`` rounds in a row (continuing the registry's round count)."""
        results = []
        for _ in range(rounds):
            res = self.run_round()
            results.append(res)
            if on_round:
                on_round(res)
        return results

    # -- round steps ------------------------------------------------------------------------
    def _record_population(self, candidates, r: int, result: RoundResult) -> list[tuple[int, Any]]:
        """Write every candidate first (so a kill leaves them visible), then mark them running."""
        ids = []
        for cand in candidates:
            plugins, params = cand.strategy.to_registry()
            sid = self.reg.add_strategy(plugins=plugins, params=params, origin=cand.origin, run_id=self.run_id,
                                        parent_id=cand.parent_id, generation=r, state="candidate",
                                        scope=self.config.scope, reason=cand.reason)
            ids.append((sid, cand))
            result.candidates[sid] = cand.origin
        for sid, _ in ids:
            self.reg.set_state(sid, "running", f"round {r}: evaluating")
        return ids

    def _evaluate_population(self, ids, budget: Budget, r: int, result: RoundResult) -> dict[int, Evaluation]:
        """Evaluate each candidate (heartbeating); scores and complete, or failed with the why."""
        evals: dict[int, Evaluation] = {}
        for sid, cand in ids:
            try:
                with _Heartbeat(self.reg, self.run_id, self.config.heartbeat_s):
                    ev = self.evaluator.evaluate(cand.strategy, budget)
            except Exception as exc:  # one candidate's failure (even an evaluator bug) is recorded, not fatal
                if not isinstance(exc, (EngineError, ValueError)):
                    log.warning("round %d: evaluating strategy %d raised", r, sid, exc_info=True)
                text = str(exc).splitlines()[0] if str(exc) else ""
                why = f"round {r}: evaluation failed: {text or type(exc).__name__}"
                self.reg.set_state(sid, "failed", why)
                result.failed[sid] = why
                continue
            self.reg.record_scores(sid, ev.scores(), step=r)
            self.reg.set_state(sid, "complete", f"round {r}: objective {ev.objective:.4f} +- {ev.noise_std:.4f}")
            evals[sid] = ev
            result.objectives[sid] = ev.objective
        return evals

    def _integrate(self, ids, evals: dict[int, Evaluation], inc_id: int, incumbent: Strategy, inc_eval: Evaluation,
                   budget: Budget, r: int, result: RoundResult) -> None:
        """Eq. 23 over the evaluated candidates; activate the winner, reject the rest."""
        decisions = [integrate.beneficial_test(sid, ev, inc_eval, self.config.integration) for sid, ev in evals.items()]
        winner = integrate.choose(decisions)
        gen_gain, extra = None, ""
        if winner is not None and self.config.measure_generalisation:
            gen_gain, extra = self._generalisation(winner.candidate_id, dict(ids)[winner.candidate_id].strategy,
                                                   inc_id, incumbent, budget, r)
        activated = integrate.apply(self.reg, incumbent_id=inc_id, decisions=decisions, winner=winner,
                                    round_index=r, scope=self.config.scope, extra_reason=extra,
                                    gen_improvement=gen_gain)
        for d in decisions:
            if d.candidate_id != activated:
                result.rejected[d.candidate_id] = self.reg.get(d.candidate_id).reason
        for sid, why in result.failed.items():
            self.reg.reject(sid, why)
        if activated is not None:
            result.integrated_id, result.improvement, result.margin = activated, winner.improvement, winner.margin
            result.gen_improvement = gen_gain

    # -- helpers ----------------------------------------------------------------------------
    def _incumbent(self, r: int, budget: Budget):
        """The active strategy, or a freshly seeded and activated one (with its evaluation)."""
        scope = self.config.scope
        active = self.reg.active_strategy(scope)
        if active is not None:
            missing = [p for p in active.plugins if p not in self.installed]
            if missing:
                raise UserError(f"active strategy {active.id} needs plugins that are not installed: "
                                f"{', '.join(missing)}")
            return active, None, None
        names = [p for p in self.config.default_plugins if p in self.installed]
        if not names:
            raise UserError(f"scope '{scope}' has no active strategy and none of the default plugins "
                            f"({', '.join(self.config.default_plugins)}) is installed")
        params = {p: v for p, v in self.config.seed_plugin_params.items() if p in names}
        seed = Strategy.parse({"plugins": names, "plugin_params": params}, source="seed strategy")
        plugins, sparams = seed.to_registry()
        sid = self.reg.add_strategy(plugins=plugins, params=sparams, origin="seed", run_id=self.run_id,
                                    generation=max(0, r - 1), state="running", scope=scope,
                                    reason=f"seed: scope '{scope}' had no active strategy; default plugins")
        try:
            with _Heartbeat(self.reg, self.run_id, self.config.heartbeat_s):
                ev = self.evaluator.evaluate(seed, budget)
        except (EngineError, ValueError) as exc:
            self.reg.set_state(sid, "failed", f"seed evaluation failed: {exc}")
            raise EngineFailure(f"cannot evaluate the seed strategy ({seed.short()}): {exc}") from None
        self.reg.record_scores(sid, ev.scores(), step=r)
        self.reg.record_scores(sid, ev.scores(prefix="incumbent."), step=r)
        self.reg.set_state(sid, "complete", f"seed objective {ev.objective:.4f} +- {ev.noise_std:.4f}")
        rec = self.reg.activate(sid, reason=f"seed: no active strategy in scope '{scope}'; "
                                            f"objective {ev.objective:.4f}")
        return rec, sid, ev

    def _evaluate_or_fail(self, strategy: Strategy, budget: Budget, *, what: str) -> Evaluation:
        try:
            with _Heartbeat(self.reg, self.run_id, self.config.heartbeat_s):
                return self.evaluator.evaluate(strategy, budget)
        except (EngineError, ValueError) as exc:
            raise EngineFailure(f"cannot evaluate the {what}: {exc}") from None

    def _generalisation(self, cand_id: int, cand: Strategy, inc_id: int, inc: Strategy, budget: Budget,
                        r: int) -> tuple[float | None, str]:
        """Objective gain of the winner on the second probe set (never used for selection)."""
        second = Budget(steps=budget.steps, probe="secondary", bootstrap=0)
        try:
            with _Heartbeat(self.reg, self.run_id, self.config.heartbeat_s):
                ce, ie = self.evaluator.evaluate(cand, second), self.evaluator.evaluate(inc, second)
        except (EngineError, ValueError, KeyError) as exc:
            log.warning("round %d: generalisation not measured: %s", r, exc)
            return None, ""
        self.reg.record_scores(cand_id, {"gen.objective": ce.objective}, step=r)
        self.reg.record_scores(inc_id, {"incumbent.gen.objective": ie.objective}, step=r)
        gain = ce.objective - ie.objective
        return gain, f"; second probe set: gain {gain:+.4f} ({ie.objective:.4f} -> {ce.objective:.4f})"


def _state_from(ev: Evaluation, r: int) -> AlignmentState:
    """a(t) for the proposal hook: the incumbent's per-paradigm probe means as the long view."""
    long = {k.split(".")[1]: v for k, v in ev.metrics.items() if k.startswith("probe.") and k.count(".") == 1
            and k.split(".")[1] in ("self", "reflect", "multi", "safety")}
    return AlignmentState(round=r, long=long)
