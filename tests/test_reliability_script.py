"""`scripts/reliability.py --quick` on a couple of cases: real kill -9s and a tampered checkpoint
come out clean, and the table's totals add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reliability.py"


def test_quick_kill9_and_tamper_cases_are_clean(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--only", "kill9,tamper", "--json",
                        "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=900)
    report = json.loads(p.stdout)
    cases = [o["case"] for o in report["outcomes"]]
    assert cases == ["kill9", "kill9", "tamper-metadata-stealthy"]
    assert report["tried"] == 3 and report["lost_work"] == 0
    assert report["clean"] == 3, report
    assert p.returncode == 0


def test_table_totals(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import reliability
    finally:
        sys.path.remove(str(SCRIPT.parent))
    text = reliability.table([reliability.Outcome("kill9", True), reliability.Outcome("kill9", False, True),
                              reliability.Outcome("plugin-hang", False)])
    assert text.splitlines()[-1] == "cases tried / clean / lost work: 3 / 1 / 1"
    assert text.splitlines()[1].split() == ["kill9", "2", "1", "1"]
