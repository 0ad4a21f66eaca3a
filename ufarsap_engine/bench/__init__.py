"""The alignment benchmark (``ufarsap-engine bench``): every method of the paper's tables trained on
the same data, budget and seeds, evaluated by judges independent of the training-time plugins.

``presets.py`` methods and presets; ``data.py`` training corpus, held-out sets, shared tokenizer;
``judges.py`` the independent evaluators; ``evaluate.py`` generation + metrics of a checkpoint;
``runner.py`` the resumable loop writing ``results.json``; ``report.py`` ``report.md`` + plots.
"""

from ufarsap_engine.bench.presets import METHODS, PRESETS, get_preset, parse_methods

__all__ = ["METHODS", "PRESETS", "get_preset", "parse_methods", "run_bench"]


def run_bench(*args, **kwargs):
    from ufarsap_engine.bench.runner import run_bench as _run

    return _run(*args, **kwargs)
