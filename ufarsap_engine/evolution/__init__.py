"""Adaptive evolution (Eq. 4, 22, 23): explore strategies, evaluate them on held-out probes,
integrate the beneficial ones, all recorded in the SQL strategy registry.

    from ufarsap_registry import open_registry
    from ufarsap_engine.evolution import Evolution, EvolutionConfig, ProbeEvaluator, report

    with open_registry(url) as reg, Evolution(reg, ProbeEvaluator(), EvolutionConfig()) as evo:
        for res in evo.run(rounds=3):
            print(res.summary())
        report(reg, evo.run_id, "evolution.png")

Modules, one concern each: ``strategy`` (the validated strategy type), ``probes`` (held-out
probe sets), ``explore`` (candidate proposals), ``evaluate`` (evaluator protocol, objective,
probe evaluator), ``integrate`` (the beneficial test), ``loop`` (rounds, resume),
``report`` (emergence bookkeeping and plot).
"""

from ufarsap_engine.evolution.evaluate import (
    Budget,
    Evaluation,
    EvaluationFailed,
    Evaluator,
    ObjectiveWeights,
    ProbeEvaluator,
    RepeatedEvaluator,
    scalar_objective,
)
from ufarsap_engine.evolution.explore import Candidate, Explorer, MutationSettings, Proposals
from ufarsap_engine.evolution.integrate import Decision, IntegrationSettings, beneficial_test
from ufarsap_engine.evolution.loop import Evolution, EvolutionConfig, RoundResult
from ufarsap_engine.evolution.probes import ProbeSet, default_probe_sets, load_probe_set
from ufarsap_engine.evolution.report import format_report, report
from ufarsap_engine.evolution.strategy import Strategy, load_strategy

__all__ = [
    "Budget", "Candidate", "Decision", "Evaluation", "EvaluationFailed", "Evaluator", "Evolution",
    "EvolutionConfig", "Explorer", "IntegrationSettings", "MutationSettings", "ObjectiveWeights",
    "ProbeEvaluator", "ProbeSet", "Proposals", "RepeatedEvaluator", "RoundResult", "Strategy",
    "beneficial_test", "default_probe_sets", "format_report", "load_probe_set", "load_strategy", "report",
    "scalar_objective",
]
