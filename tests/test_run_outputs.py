"""What a run does with bad numbers, its directory, and what it shows: non-finite scores and
losses stop it (nothing of it is saved as if it were fine), it never silently continues another
run, and its metrics, summary and progress say what happened (issue: trust first)."""

import json
import math
import os
import sqlite3
from datetime import datetime, timezone

import pytest

from helpers import good_plugin_source, make_plugin_dist, run_cli

LATE_NAN = '''
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import PluginInfo, ScaleScores

class Plugin:
    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="safety", description="NaN after the fact", scales=["document"], horizons=["short", "long"])

    @hookimpl
    def ufarsap_score_document(self, batch):
        {body}
'''
LATE = 'res = ScaleScores(sample_scores=[1.0 for _ in batch.samples]); res.sample_scores[0] = float("nan"); return res'
CONSTRUCT = 'return ScaleScores.model_construct(sample_scores=[float("inf")] * len(batch.samples))'
TYPO = '''
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import PluginInfo

class Plugin:
    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="safety", description="strict parameters", scales=["document"], horizons=["short"])

    @hookimpl
    def ufarsap_configure(self, params):
        unknown = set(params) - {"threshold"}
        if unknown:
            raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}; known: threshold")
'''
# Documents of odd length are flagged at the document scale: mixed batches on any corpus.
ODD = "[0.0 if len(s.text) % 2 else 1.0 for s in batch.samples]"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run_outputs")
    site = tmp / "site"
    make_plugin_dist(site, "good-dist", {"safety.good": "goodplug:Plugin"}, {"goodplug": good_plugin_source(doc_scores=ODD)})
    make_plugin_dist(site, "late-dist", {"safety.late": "lateplug:Plugin"}, {"lateplug": LATE_NAN.format(body=LATE)})
    make_plugin_dist(site, "construct-dist", {"safety.construct": "constructplug:Plugin"},
                     {"constructplug": LATE_NAN.format(body=CONSTRUCT)})
    make_plugin_dist(site, "typo-dist", {"safety.typo": "typoplug:Plugin"}, {"typoplug": TYPO})
    reg = tmp / "reg.sqlite"
    env = {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "UFARSAP_REGISTRY_URL": f"sqlite:///{reg}",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return tmp, env, reg


def one_line_error(res, code, *needles):
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    progress = ("run ", "evaluate: ", "registry: ", "run directory: ")  # progress and context lines
    lines = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith(progress)]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def run_status(reg, out):
    """The registry's status of the run whose directory is ``out``."""
    run_id = json.loads((out / "summary.json").read_text())["run_id"]
    con = sqlite3.connect(reg)
    try:
        return con.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    finally:
        con.close()


def read_metrics(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


# --- 1: non-finite scores and losses -------------------------------------------------------------

@pytest.mark.parametrize("plugin, needle", [("safety.late", "sample_scores[0] is nan"),
                                            ("safety.construct", "sample_scores[0] is inf")])
def test_score_changed_after_validation_stops_a_strict_training_run(world, plugin, needle):
    tmp, env, reg = world
    out = tmp / f"nan-{plugin}"
    res = run_cli("run", "--plugins", plugin, "--steps", "3", "--out", str(out), cwd=tmp, env=env)
    one_line_error(res, 1, f"plugin '{plugin}'", "ufarsap_score_document", needle)
    assert run_status(reg, out) == "failed"
    assert not (out / "checkpoints").exists()
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"


def test_tolerant_run_quarantines_the_plugin_with_a_non_finite_score(world):
    tmp, env, _ = world
    out = tmp / "nan-tolerant"
    res = run_cli("run", "--plugins", "safety.late,safety.good", "--tolerant", "--no-train", "--steps", "2",
                  "--out", str(out), "--json", cwd=tmp, env=env)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert list(summary["quarantined"]) == ["safety.late"] and "nan" in summary["quarantined"]["safety.late"]["reason"]
    assert all(not k.startswith("score.safety.late") for m in read_metrics(out) for k in m)


def test_non_finite_loss_stops_the_run_before_any_checkpoint(world):
    """Whatever the source (here a learning rate that blows the weights up; no clipping, so no
    gradient norm to catch it first): exit 1 naming the step and the loss, the registry says
    failed, no checkpoint is written."""
    tmp, env, reg = world
    out = tmp / "nan-loss"
    res = run_cli("run", "--plugins", "none", "--steps", "4", "--out", str(out), "--set", "train.lr=1e30",
                  "--set", "train.min_lr=1e30", "--set", "train.clip_grad=0", cwd=tmp, env=env)
    line = one_line_error(res, 1, "the loss (total objective) is")
    assert "no checkpoint of these weights was written" in line
    assert run_status(reg, out) == "failed"
    assert not (out / "checkpoints").exists()
    steps = read_metrics(out)
    assert steps[-1]["loss"] is None and all(m["loss"] is not None for m in steps[:-1])


def test_check_scores_sees_changes_made_after_validation():
    from ufarsap_engine.alignment.scoring import check_scores, make_sample
    from ufarsap_engine.schemas import ScaleScores, Span, TextBatch

    batch = TextBatch(samples=[make_sample("a", "some text"), make_sample("b", "more text")])
    res = ScaleScores(sample_scores=[1.0, 1.0])
    assert check_scores(res, batch, "document") is None
    res.sample_scores[1] = float("nan")
    assert "sample_scores[1] is nan" in check_scores(res, batch, "document")
    spans = ScaleScores.model_construct(sample_scores=[1.0, 1.0], spans=[[Span.model_construct(start=0, end=2, severity=math.inf)], []])
    assert "severity inf" in check_scores(spans, batch, "token")
    assert "not a list" in check_scores(ScaleScores.model_construct(sample_scores=None), batch, "document")


def test_check_step_names_the_non_finite_terms():
    from ufarsap_engine.trainer.finite import NonFiniteError, check_step

    check_step({"step": 1, "loss": 1.0, "lm_loss": 1.0, "grad_norm": float("nan")}, grad_norm_computed=False)
    with pytest.raises(NonFiniteError, match=r"step 2: the loss .* is nan .*terms not finite: loss.safety"):
        check_step({"step": 2, "loss": math.nan, "lm_loss": 1.0, "loss.safety": math.nan, "loss.lm": 1.0}, True)
    with pytest.raises(NonFiniteError, match="gradient norm is inf"):
        check_step({"step": 3, "loss": 1.0, "lm_loss": 1.0, "grad_norm": math.inf}, True)


# --- 13: a plugin rejecting its parameters is a user error -----------------------------------------

@pytest.mark.parametrize("mode", ["--strict", "--tolerant"])
def test_configure_value_error_is_a_user_error(world, mode):
    tmp, env, _ = world
    res = run_cli("run", "--plugins", "safety.typo", mode, "--no-train", "--steps", "1", "--out", str(tmp / "typo"),
                  "--set", 'plugin_params={"safety.typo": {"treshold": 1}}', cwd=tmp, env=env)
    one_line_error(res, 2, "plugin 'safety.typo' rejected its parameters", "unknown parameter 'treshold'")
    assert not (tmp / "typo").exists()


# --- 2: run directories -------------------------------------------------------------------------

def test_fresh_out_dir_is_timestamped_and_unique(tmp_path):
    from ufarsap_engine.run_dir import fresh_out_dir

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    first = fresh_out_dir(tmp_path, now)
    assert first == str(tmp_path / "20260102-030405")
    os.makedirs(first)
    assert fresh_out_dir(tmp_path, now) == str(tmp_path / "20260102-030405-2")


def test_runs_without_out_get_their_own_directories(world):
    tmp, env, _ = world
    cwd = tmp / "no-out"
    cwd.mkdir()
    dirs = []
    for plugins in ("safety.good", "none"):
        res = run_cli("run", "--plugins", plugins, "--no-train", "--steps", "2", "--json", cwd=cwd, env=env)
        assert res.returncode == 0, res.stderr
        summary = json.loads(res.stdout)
        assert f"run directory: {summary['out_dir']} (new run" in res.stderr
        assert "run step" not in res.stderr  # --json: no progress
        dirs.append(summary["out_dir"])
    assert dirs[0] != dirs[1] and all(d.startswith("runs" + os.sep) for d in dirs)
    assert sorted(p.name for p in (cwd / "runs").iterdir()) == sorted(os.path.basename(d) for d in dirs)


@pytest.fixture(scope="module")
def trained(world):
    """A 2-step training run with safety.good, then the same settings grown to 3 steps."""
    tmp, env, reg = world
    out = tmp / "trained"
    first = run_cli("run", "--plugins", "safety.good", "--steps", "2", "--out", str(out), cwd=tmp, env=env)
    assert first.returncode == 0, first.stderr
    other = run_cli("run", "--plugins", "none", "--steps", "2", "--out", str(out), cwd=tmp, env=env)
    resumed = run_cli("run", "--plugins", "safety.good", "--steps", "3", "--out", str(out), "--set", "log_every=1",
                      cwd=tmp, env=env)
    assert resumed.returncode == 0, resumed.stderr
    return out, first, other, resumed


def test_resume_with_other_settings_is_refused(trained, world):
    out, _, other, _ = trained
    line = one_line_error(other, 2, f"{out} holds a run with other settings", "plugins",
                          '["safety.good"] -> []', "--overwrite")
    assert "another --out" in line
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]  # the refused run changed nothing


def test_resume_with_the_same_settings_continues(trained):
    out, _, _, resumed = trained
    assert f"run directory: {out} (resuming from step 2, 3 steps)" in resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["training"]["start_step"] == 2 and summary["training"]["end_step"] == 3


def test_overwrite_discards_the_old_run(world, tmp_path):
    tmp, env, _ = world
    out = tmp_path / "ow"
    assert run_cli("run", "--plugins", "safety.good", "--no-train", "--steps", "2", "--out", str(out), cwd=tmp,
                   env=env).returncode == 0
    refused = run_cli("run", "--plugins", "none", "--no-train", "--steps", "3", "--out", str(out), cwd=tmp, env=env)
    one_line_error(refused, 2, "other settings")
    res = run_cli("run", "--plugins", "none", "--no-train", "--steps", "3", "--out", str(out), "--overwrite",
                  cwd=tmp, env=env)
    assert res.returncode == 0, res.stderr
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]
    assert json.loads((out / "run_settings.json").read_text())["plugins"] == []


def test_run_past_its_checkpoint_is_refused(trained, world):
    tmp, env, _ = world
    out = trained[0]
    res = run_cli("run", "--plugins", "safety.good", "--steps", "2", "--out", str(out), cwd=tmp, env=env)
    one_line_error(res, 2, "already at step 3, past --steps 2")


# --- 6, 7, 8: what a run shows ------------------------------------------------------------------

def test_metrics_have_per_plugin_per_scale_scores_and_flagged_shares(trained):
    out = trained[0]
    steps = read_metrics(out)
    for m in steps:
        for scale in ("token", "document"):
            assert 0.0 <= m[f"score.safety.good.{scale}"] <= 1.0 and 0.0 <= m[f"flagged.safety.good.{scale}"] <= 1.0
        # Document scores are 0 (flagged) or 1: the mean score and the flagged share add up to 1.
        assert m["score.safety.good.document"] + m["flagged.safety.good.document"] == pytest.approx(1.0)
    means = json.loads((out / "summary.json").read_text())["plugin_scores"]
    assert means["flagged.safety.good.document"] == pytest.approx(
        sum(m["flagged.safety.good.document"] for m in steps) / len(steps), abs=1e-6)
    assert 0.0 < means["flagged.safety.good.document"] < 1.0


def test_hook_only_metrics_have_flagged_shares(world):
    tmp, env, _ = world
    out = tmp / "hook-only"
    assert run_cli("run", "--plugins", "safety.good", "--no-train", "--steps", "3", "--out", str(out), cwd=tmp,
                   env=env).returncode == 0
    for m in read_metrics(out):
        assert m["score.safety.good.document"] + m["flagged.safety.good.document"] == pytest.approx(1.0)
        assert 0.0 <= m["flagged_sample_frac"] <= 1.0


def test_closing_summary_names_losses_paths_and_mean_throughput(trained):
    out, _, _, resumed = trained
    text = resumed.stdout
    assert "OUT/" not in text
    for needle in (str(out / "metrics.jsonl"), str(out / "summary.json"), "loss: total objective, last step",
                   "LM loss, all tokens, last step", "LM loss, kept tokens, last step", "throughput, mean over the run",
                   "flagged.safety.good.document (run mean)"):
        assert needle in text, needle
    summary = json.loads((out / "summary.json").read_text())
    steps = [m for m in read_metrics(out) if m["step"] > summary["training"]["start_step"]]
    mean = sum(m["tokens"] for m in steps) / sum(m["step_time_s"] for m in steps)
    assert summary["tokens_per_s"] == pytest.approx(mean) == pytest.approx(summary["training"]["tokens_per_s"])
    assert f"{mean:,.0f} tokens/s" in text
    assert summary["metrics_file"] == str(out / "metrics.jsonl") and summary["checkpoint"].startswith(str(out))


def test_plain_progress_lines_when_stderr_is_not_a_terminal(trained):
    first, resumed = trained[1], trained[3]
    lines = [x for x in resumed.stderr.splitlines() if x.startswith("run step")]
    assert [x.split()[2] for x in lines] == ["3/3"]
    assert "loss " in lines[0] and "flagged " in lines[0] and "of tokens" in lines[0]
    assert [x.split()[2] for x in first.stderr.splitlines() if x.startswith("run step")] == ["1/2", "2/2"]


def test_progress_interval():
    from ufarsap_engine.progress import default_every

    assert [default_every(n) for n in (1, 5, 20, 300, 5000)] == [1, 1, 2, 30, 50]


def test_settings_differences_name_nested_keys(tmp_path):
    from ufarsap_engine.config import RunConfig
    from ufarsap_engine.errors import UserError
    from ufarsap_engine.run_dir import check_out_dir, run_settings, start_out_dir

    old = RunConfig(seed=1, steps=10)
    start_out_dir(tmp_path, run_settings(old, ["safety.toxicity"], {}))
    (tmp_path / "metrics.jsonl").write_text("")
    same = run_settings(old.model_copy(update={"steps": 20, "log_every": 3}), ["safety.toxicity"], {})
    assert check_out_dir(tmp_path, same, steps=20) is None  # steps may grow; no checkpoint yet
    new = RunConfig(seed=2, steps=10, objective={"lambda_coord": 0.5})
    with pytest.raises(UserError) as err:
        check_out_dir(tmp_path, run_settings(new, None, {}), steps=10)
    msg = str(err.value)
    assert "seed 1 -> 2" in msg and "objective.lambda_coord 0.15 -> 0.5" in msg
    assert "plugins [\"safety.toxicity\"] -> \"the registry's active strategy\"" in msg
    assert check_out_dir(tmp_path, run_settings(new, None, {}), steps=10, overwrite=True) is None


def test_evaluate_refuses_a_non_finite_loss(trained, world):
    """A checkpoint whose loss is not finite is a failure, never ``loss nan`` with exit 0."""
    import subprocess
    import sys

    tmp, env, _ = world
    data = tmp / "heldout.txt"
    data.write_text("A short held-out paragraph.\n\nAnother one, a little longer than the first.\n")
    script = ("import math, sys, ufarsap_engine.trainer.generate as g; "
              "g.sequence_logprobs = lambda gpt, chunks: [[math.nan] for _ in chunks]; "
              "from ufarsap_engine.cli import main; "
              f"sys.exit(main(['evaluate', '--checkpoint', {str(trained[0])!r}, '--data', {str(data)!r}]))")
    res = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=300)
    one_line_error(res, 1, "non-finite loss (nan)", "weights are not usable")
