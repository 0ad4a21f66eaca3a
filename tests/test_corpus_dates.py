"""The embedded corpus does not depend on the day (or time zone) it is built on.

Faker's date helpers count from today; scripts/build_corpus.py draws against a fixed reference
date, so a rebuild on any day reproduces the committed files byte for byte.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = REPO / "ufarsap_engine" / "data" / "embedded"


def _build_corpus():
    spec = importlib.util.spec_from_file_location("build_corpus_dates", REPO / "scripts" / "build_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("day", [
    dt.datetime(2031, 7, 15, 12, 0, tzinfo=ZoneInfo("UTC")),
    dt.datetime(2020, 2, 29, 23, 30, tzinfo=ZoneInfo("Pacific/Kiritimati")),
    dt.datetime(2045, 1, 1, 0, 5, tzinfo=ZoneInfo("America/Adak")),
], ids=["2031", "leap-day-utc+14", "2045-utc-10"])
def test_rebuild_on_another_day_is_byte_identical(day):
    faker = pytest.importorskip("faker")
    time_machine = pytest.importorskip("time_machine")
    mod = _build_corpus()
    if faker.VERSION != mod.FAKER_VERSION:
        pytest.skip(f"corpus was generated with Faker {mod.FAKER_VERSION}, found {faker.VERSION}")
    kb = json.loads(mod.KB_PATH.read_text(encoding="utf-8"))
    with time_machine.travel(day, tick=False):
        assert dt.date.today() == day.date()  # the clock really is faked
        records, labels = mod.build(kb)
    assert mod.dumps(records) == (EMBEDDED / "corpus.jsonl").read_text(encoding="utf-8")
    assert mod.dumps(labels) == (EMBEDDED / "labels.jsonl").read_text(encoding="utf-8")


def test_build_refuses_another_faker_version(monkeypatch, capsys):
    faker = pytest.importorskip("faker")
    mod = _build_corpus()
    monkeypatch.setattr(faker, "VERSION", "0.0.1")
    assert mod.main(["--check"]) == 2
    assert f"Faker=={mod.FAKER_VERSION}" in capsys.readouterr().err
