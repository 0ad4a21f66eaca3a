"""The hook specs: the whole contract between the engine and its plugins (version
``ufarsap_engine.HOOK_CONTRACT_VERSION``).

A plugin is an object (or module) whose methods are marked with ``@hookimpl`` and named like the
specs below. An implementation may accept any subset of a spec's arguments, so new arguments can
be added without breaking plugins (the pluggy rule). Every spec here has a docstring with its
arguments, its return value, and when the engine calls it; ``tests/test_hookspecs.py`` checks this.

Scoring: one hook per scale (token, sentence, document, conversation). The engine calls a
plugin's scoring hook only for the (scale, horizon) cells the plugin declares in
``ufarsap_plugin_info``; the ``horizon`` argument says which horizon the call is for:
``immediate`` on the model's own samples (the on-policy phase, ``alignment/onpolicy.py``),
``short`` every training step, ``medium`` at the end of a window of steps, ``long`` at an
evaluation/evolution round.

Plugins that build on others' results: a plugin whose ``PluginInfo.uses`` names paradigms
(``"safety"``) or plugins (``"safety.privacy"``) is scored after them, and its ``batch.upstream``
holds their results on the same batch at the same horizon, ``{plugin: {scale: ScaleScores}}``,
for the *selected* plugins only (so ``no:X`` removes X everywhere). It reads them there and never
calls another plugin; a dependency cycle is a one-line error. Everyone else gets an empty
``upstream``.
"""

from __future__ import annotations

from typing import Any

import pluggy

from ufarsap_engine.schemas import (
    AgentVote,
    AlignmentState,
    ConsensusResult,
    Feedback,
    Horizon,
    PluginInfo,
    Refinement,
    RoundReport,
    RunContext,
    Sample,
    ScaleScores,
    StepReport,
    StrategyProposal,
    TextBatch,
    WindowReport,
)

PROJECT = "ufarsap_engine"
hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorate plugin methods with this: ``from ufarsap_engine import hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- metadata -----------------------------------------------------------------------------

@hookspec
def ufarsap_plugin_info() -> PluginInfo:
    """Describe the plugin: its paradigm, the scales and horizons it serves, a description.

    Returns: ``PluginInfo``. Called once when the plugin is loaded (and by
    ``ufarsap-engine plugins``). Every plugin must implement it. ``PluginInfo.uses`` (optional)
    names the paradigms or plugins whose results the plugin reads from ``batch.upstream``.
    """


@hookspec
def ufarsap_configure(params: dict[str, Any]) -> None:
    """Receive this plugin's parameters from the active strategy or the config.

    Args: ``params``: the plugin's own parameter dict (thresholds, depths, ...); unknown keys
    should raise ``ValueError`` so the user learns of a typo. Called before ``ufarsap_run_start``
    and again whenever the active strategy changes the parameters.
    """


# --- scoring, one hook per scale ------------------------------------------------------------

@hookspec
def ufarsap_score_token(batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores | None:
    """Score a batch at token scale: which character spans are misaligned.

    Args: ``batch`` the samples (``batch.upstream``: the results of the selected plugins this one
    ``uses``, see the module docstring); ``horizon`` which horizon the call is for; ``state`` the
    current alignment state a(t). Returns ``ScaleScores`` with ``spans`` (flagged spans per sample, the
    engine maps them onto tokens) and ``sample_scores``; ``None`` to abstain.
    """


@hookspec
def ufarsap_score_sentence(batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores | None:
    """Score a batch at sentence scale.

    Args: ``batch`` the samples (each sample's ``sentences`` holds the engine's sentence
    boundaries); ``horizon`` which horizon the call is for; ``state`` a(t). Returns ``ScaleScores`` with ``unit_scores`` (one score per sentence, per sample)
    and ``sample_scores``; ``None`` to abstain.
    """


@hookspec
def ufarsap_score_document(batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores | None:
    """Score a batch at document scale: one alignment score per sample.

    Args: ``batch`` the samples; ``horizon`` which horizon the call is for; ``state`` a(t).
    Returns ``ScaleScores``; ``None`` to abstain.
    """


@hookspec
def ufarsap_score_conversation(batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores | None:
    """Score multi-turn conversations as a whole (samples whose ``messages`` is set).

    Args: ``batch`` the samples; ``horizon`` which horizon the call is for; ``state`` a(t).
    Returns ``ScaleScores`` with ``None`` for samples that are not conversations; ``None`` to
    abstain.
    """


# --- lifecycle --------------------------------------------------------------------------------

@hookspec
def ufarsap_run_start(run: RunContext, state: AlignmentState) -> None:
    """Called once when a run starts, after plugins are configured and before the first step.

    Args: ``run`` the run's id, output directory, plugin names and config; ``state`` a(0).
    """


@hookspec
def ufarsap_run_end(run: RunContext, summary: dict[str, Any]) -> None:
    """Called once when a run ends (also after a failure, with ``summary["status"]``).

    Args: ``run`` as at start; ``summary`` the run summary that is written to summary.json.
    """


@hookspec
def ufarsap_step_end(report: StepReport, state: AlignmentState) -> None:
    """Called after every training step (the short horizon) with its loss and metrics.

    Args: ``report`` the step's loss and metrics; ``state`` a(t) after the step.
    """


@hookspec
def ufarsap_window_end(report: WindowReport, state: AlignmentState) -> None:
    """Called at the end of every window of steps (the medium horizon).

    Args: ``report`` the window's first/last step and mean metrics; ``state`` a(t).
    """


@hookspec
def ufarsap_round_end(report: RoundReport, state: AlignmentState) -> None:
    """Called at the end of every evaluation/evolution round (the long horizon).

    Args: ``report`` the round number, step and probe metrics; ``state`` a(t).
    """


# --- reflection, consensus, strategies ------------------------------------------------------

@hookspec
def ufarsap_refine(sample: Sample, feedback: Feedback, state: AlignmentState) -> Refinement | None:
    """Propose a refinement of a sample given the paradigms' feedback (recursive reflection).

    Args: ``sample`` the text to refine; ``feedback`` flagged spans (what the selected plugins
    flagged) and per-paradigm scores; ``state`` a(t). Refine from these; do not re-run detectors. Returns a ``Refinement`` or ``None`` when the plugin has nothing to offer.
    The engine re-scores each refinement and keeps it only if it scores better.
    """


@hookspec
def ufarsap_consensus(sample: Sample, votes: list[AgentVote], state: AlignmentState) -> ConsensusResult | None:
    """Combine several agents' votes on one sample into a consensus (multi-agent paradigm).

    Args: ``sample`` the text; ``votes`` one ``AgentVote`` per agent; ``state`` a(t).
    Returns a ``ConsensusResult`` or ``None`` to abstain.
    """


@hookspec
def ufarsap_propose_strategies(active_plugins: list[str], params: dict[str, Any], state: AlignmentState) -> list[StrategyProposal] | None:
    """Contribute candidate strategies to adaptive evolution (Explore, Eq. 22).

    Args: ``active_plugins`` and ``params`` of the active strategy; ``state`` a(t).
    Returns a list of ``StrategyProposal`` (or ``None``); the engine validates, scores and
    records every proposal in the strategy registry.
    """
