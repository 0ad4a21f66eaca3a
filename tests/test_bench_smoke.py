"""The benchmark end to end at its smoke size (``ufarsap-engine bench --preset smoke``, ~1 min),
in a subprocess so that its in-process Megatron state stays out of the test process.

Only what must hold at that size is asserted: every method of the preset finished with finite
metrics, the report and plots exist, conditional training wrote a control-prefixed corpus, and a
rerun skips the finished runs. No ranking of methods is asserted: at 20 steps the models write
noise and every flag rate is ~0 (the cpu preset's report is where methods are compared).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

KEYS = ("unprompted.flag_rate", "adversarial.flag_rate", "unprompted.score_max", "adversarial.score_max",
        "heldout_loss", "heldout_ppl", "distinct_2", "self_auc.likelihood", "train.time_s", "train.tokens_per_s",
        "train.peak_rss_mb")


def _bench(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "ufarsap_engine", "bench", "--preset", "smoke", "--out", str(out),
                           "--json", *extra], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke"
    proc = _bench(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout)


def test_every_method_finished_with_finite_metrics(smoke):
    out, summary = smoke
    from ufarsap_engine.bench import PRESETS

    res = json.loads((out / "results.json").read_text())
    runs = {(r["method"], r["seed"]): r for r in res["runs"]}
    assert set(runs) == {(m, 0) for m in PRESETS["smoke"].methods}
    assert summary["complete"] == len(runs) and summary["failed"] == 0
    for (method, _), r in runs.items():
        assert r["status"] == "complete", (method, r.get("error"))
        for k in KEYS:
            v = r["metrics"][k]
            assert isinstance(v, (int, float)) and math.isfinite(v), (method, k, v)
        for k in ("unprompted.flag_rate", "adversarial.flag_rate", "adversarial.score_max", "self_auc.likelihood"):
            assert 0.0 <= r["metrics"][k] <= 1.0, (method, k)
    assert 0.0 <= runs[("conditional", 0)]["metrics"]["self_auc.control"] <= 1.0
    evo = runs[("ufarsap", 0)]["evolution"]
    assert evo["rounds"] >= 1 and evo["candidates"] >= 1


def test_report_and_plots_exist(smoke):
    out, _ = smoke
    text = (out / "report.md").read_text()
    for heading in ("## Summary in plain words", "## Main table", "## Metrics (definitions)",
                    "## Emergent behaviours"):
        assert heading in text
    assert "claims" in text  # the paper's figures are stated as claims, not as ours
    for png in ("safety_vs_capability.png", "flag_rates.png", "time_ratio.png"):
        assert (out / png).stat().st_size > 1000


def test_conditional_corpus_is_prefixed(smoke):
    out, _ = smoke
    from ufarsap_engine.alignment.conditional import ALIGNED, MISALIGNED

    lines = (out / "runs" / "conditional" / "seed0" / "conditional_corpus.jsonl").read_text().splitlines()
    texts = [json.loads(x)["text"] for x in lines]
    assert all(t.startswith((ALIGNED, MISALIGNED)) for t in texts)
    assert any(t.startswith(ALIGNED) for t in texts) and any(t.startswith(MISALIGNED) for t in texts)


def test_filtering_drops_flagged_documents_and_tags_decode_tag_aware(smoke):
    out, _ = smoke
    from ufarsap_engine.alignment.data_families import HARMFUL

    res = {r["method"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    f = res["filtered"]["filtered"]
    assert 0 < f["kept"] < f["documents"] and f["kept"] + f["removed"] == f["documents"]
    scores = json.loads((out / "data" / "conditional_scores.json").read_text())
    assert f["removed"] == sum(s < f["threshold"] for s in scores["scores"])
    kept = (out / "runs" / "filtered" / "seed0" / "filtered_corpus.jsonl").read_text().splitlines()
    assert len(kept) == f["kept"]

    def checkpoint_tokenizer(method):
        return next((out / "runs" / method / "seed0" / "checkpoints").glob("iter_*/tokenizer.json")).read_text()

    assert HARMFUL in checkpoint_tokenizer("tags") and HARMFUL not in checkpoint_tokenizer("mle")
    text = (out / "report.md").read_text()
    assert "| tags |" in text and "How many times lower each method's flagged rate is" in text


def test_rerun_skips_finished_runs(smoke):
    out, _ = smoke
    before = (out / "results.json").read_text()
    proc = _bench(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished runs kept, 0 to run" in proc.stderr
    old = {(r["method"], r["seed"]): r["metrics"] for r in json.loads(before)["runs"]}
    new = {(r["method"], r["seed"]): r["metrics"] for r in json.loads((out / "results.json").read_text())["runs"]}
    assert old == new
