"""The hook contract is documented, and every hook is exercised by a test."""

import inspect
import re
from pathlib import Path

from ufarsap_engine import hookspecs

SPECS = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("ufarsap_")]


def test_there_is_a_hook_per_scale_and_the_lifecycle():
    for scale in ("token", "sentence", "document", "conversation"):
        assert f"ufarsap_score_{scale}" in SPECS
    for hook in ("run_start", "run_end", "step_end", "window_end", "round_end", "refine", "consensus",
                 "propose_strategies", "plugin_info", "configure"):
        assert f"ufarsap_{hook}" in SPECS


def test_every_hook_spec_is_documented():
    for name in SPECS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 60, f"{name} has no real docstring"
        params = [p for p in inspect.signature(getattr(hookspecs, name)).parameters]
        for p in params:
            assert f"``{p}``" in doc, f"{name}: argument {p} is not described"
        assert "Returns" in doc or "Called" in doc or "called" in doc, f"{name}: says neither what it returns nor when it is called"


def test_every_hook_spec_has_a_test():
    tests = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    missing = [n for n in SPECS if not re.search(rf"def test_hook_{n}\b", tests)]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"
