"""The README's test command stays short: slow tests are left out by default and CI runs both."""

from __future__ import annotations

import shlex
import tomllib

from helpers import REPO

README_TEST_COMMAND = "bash scripts/setup.sh --with-postgres && python3 -m pytest -q"


def _addopts() -> list[str]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return shlex.split(cfg["tool"]["pytest"]["ini_options"]["addopts"])


def test_default_run_leaves_out_slow_tests(pytestconfig):
    opts = _addopts()
    assert opts[opts.index("-m") + 1] == "not slow"
    assert any(m.startswith("slow:") for m in pytestconfig.getini("markers"))


def test_ci_runs_the_readme_command_and_then_the_slow_tests():
    assert README_TEST_COMMAND in (REPO / "README.md").read_text(encoding="utf-8")
    lines = [x.strip() for x in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    # CI installs everything itself: what the README's command installs, and the browser the
    # dashboard's (slow) browser test drives
    assert "bash scripts/setup.sh --with-postgres --with-browser" in lines
    assert lines.index("python3 -m pytest -q") < lines.index("python3 -m pytest -q -m slow")
    assert '-m ""' in (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")  # how to run all
