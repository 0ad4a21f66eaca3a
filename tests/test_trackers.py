"""``run --log-to tensorboard,mlflow``: what a run writes is read back with TensorBoard's and
MLflow's own readers and equals ``metrics.jsonl``; a resumed run continues the same MLflow run
and TensorBoard shows each step once; a missing library, an unknown tracker or a bad MLflow URI
is one line, before anything is trained."""

import json

import pytest

from helpers import run_cli

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

TINY = ["--plugins", "safety.toxicity", "--set", "train.lr=0.0007", "--set", "trackers.every=2"]


def tensorboard_scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return acc, {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def mlflow_run(out):
    from mlflow.tracking import MlflowClient

    record = json.loads((out / "mlflow_run.json").read_text())
    client = MlflowClient(record["tracking_uri"])
    return client, client.get_run(record["run_id"])


def test_trackers_hold_the_run_metrics_and_params_and_a_resume_continues_them(tmp_path):
    out, reg = tmp_path / "run", f"sqlite:///{tmp_path / 'reg.sqlite'}"
    res = run_cli("run", *TINY, "--steps", "6", "--out", str(out), "--registry", reg,
                  "--log-to", "tensorboard,mlflow", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    rows = {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}

    acc, scalars = tensorboard_scalars(out / "tensorboard")
    assert [s for s, _ in scalars["loss/lm"]] == [2, 4, 6]  # every 2 steps
    for tag, metric in (("loss/lm", "loss.lm"), ("score/safety.toxicity.document", "score.safety.toxicity.document"),
                        ("lm_loss", "lm_loss")):
        assert scalars[tag] == [(s, pytest.approx(rows[s][metric], rel=1e-6)) for s in (2, 4, 6)], tag
    assert "config/text_summary" in acc.Tags()["tensors"]

    client, run = mlflow_run(out)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.lr"] == "0.0007" and run.data.params["strategy.plugins"] == "safety.toxicity"
    assert run.data.params["strategy.id"] == str(summary["strategy_id"])
    assert run.data.params["objective.mode"] == "unified" and "model_config.hidden_size" in run.data.params
    history = client.get_metric_history(run.info.run_id, "loss.lm")
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(rows[s]["loss.lm"])) for s in (2, 4, 6)]

    res = run_cli("run", *TINY, "--steps", "10", "--out", str(out), "--registry", reg,
                  "--log-to", "tensorboard,mlflow", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    client, resumed = mlflow_run(out)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss.lm")]
    assert steps == [2, 4, 6, 8, 10]
    _, scalars = tensorboard_scalars(out / "tensorboard")
    assert [s for s, _ in scalars["loss/lm"]] == [2, 4, 6, 8, 10]


def test_an_unknown_tracker_is_one_line_and_starts_nothing(tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", "--plugins", "none", "--steps", "2", "--out", str(out), "--log-to", "wandb",
                  "--registry", f"sqlite:///{tmp_path / 'reg.sqlite'}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "trackers.log_to" in res.stderr and "tensorboard" in res.stderr and "mlflow" in res.stderr
    assert not out.exists()


def test_a_missing_tracker_library_says_what_to_install(tmp_path):
    """MLflow made unimportable (a package on PYTHONPATH that raises ImportError): the run stops
    before its directory exists, naming the extra to install."""
    fake = tmp_path / "shadow" / "mlflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no mlflow here')\n")
    out = tmp_path / "run"
    res = run_cli("run", "--plugins", "none", "--steps", "2", "--out", str(out), "--log-to", "mlflow",
                  "--registry", f"sqlite:///{tmp_path / 'reg.sqlite'}",
                  env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "ufarsap-engine: error: --log-to mlflow needs the mlflow package: pip install 'ufarsap-engine[mlflow]'")
    assert not out.exists()


def test_a_bad_mlflow_uri_is_one_line(tmp_path):
    res = run_cli("run", "--plugins", "none", "--steps", "2", "--out", str(tmp_path / "run"), "--log-to", "mlflow",
                  "--set", "trackers.mlflow_uri=nosuchscheme://x", "--registry", f"sqlite:///{tmp_path / 'reg.sqlite'}")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "cannot open the mlflow tracker" in res.stderr and "trackers.mlflow_uri" in res.stderr


@pytest.mark.slow
def test_a_torchrun_run_writes_the_trackers_once_from_the_logging_rank(tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", *TINY, "--steps", "4", "--out", str(out), "--nproc", "2", "--tp", "2",
                  "--registry", f"sqlite:///{tmp_path / 'reg.sqlite'}", "--log-to", "tensorboard,mlflow", "--json",
                  timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((out / "tensorboard").iterdir())) == 1  # one event file: rank 0 only
    _, scalars = tensorboard_scalars(out / "tensorboard")
    rows = {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    assert scalars["loss/lm"] == [(s, pytest.approx(rows[s]["loss.lm"], rel=1e-6)) for s in (2, 4)]
    client, run = mlflow_run(out)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss.lm")] == [2, 4]
