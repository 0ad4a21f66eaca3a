"""Experiment trackers: ``run --log-to tensorboard,mlflow`` writes the step metrics and the run's
config and strategy params where those tools look for them, next to ``metrics.jsonl`` (which
stays the record the engine itself reads).

- TensorBoard (extra ``tensorboard``): event files in ``OUT/tensorboard`` (``tensorboard --logdir
  OUT``). A metric's first ``.`` becomes ``/`` so TensorBoard groups it (``loss.lm`` ->
  ``loss/lm``); the config and the strategy are a text entry. A resumed run purges the events
  after its resume step, so steps replayed after a kill show once.
- MLflow (extra ``mlflow``): a run in experiment ``trackers.mlflow_experiment`` at
  ``trackers.mlflow_uri`` (default ``sqlite:///OUT/mlflow.db``: ``mlflow ui --backend-store-uri``
  that URI). Params are the config flattened (``train.lr``) with the strategy id and plugins; the
  MLflow run id is kept in ``OUT/mlflow_run.json`` so that a resumed run logs into the same MLflow
  run, and the run ends FINISHED, KILLED (interrupted) or FAILED.

Written on the logging rank every ``trackers.every`` steps and at the last step (a tracker write
costs more than a small model's step). A tracker that fails mid-run is dropped with one warning;
training goes on.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from ufarsap_engine.errors import UserError

TENSORBOARD_DIR = "tensorboard"
MLFLOW_RUN_FILE = "mlflow_run.json"
#: tracker -> (module it needs, what to install)
NEEDS = {"tensorboard": ("tensorboard", "pip install 'ufarsap-engine[tensorboard]'"),
         "mlflow": ("mlflow", "pip install 'ufarsap-engine[mlflow]'")}
MLFLOW_STATUS = {"complete": "FINISHED", "interrupted": "KILLED"}  # anything else: FAILED


def check_available(names: list[str]) -> None:
    """A clear error before the run starts when a chosen tracker's library is missing."""
    for name in names:
        module, install = NEEDS[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise UserError(f"--log-to {name} needs the {module} package: {install}") from None


def mlflow_uri(configured: str | None, out: Path) -> str:
    return configured or f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


def tensorboard_tag(metric: str) -> str:
    return metric.replace(".", "/", 1)


def flat_params(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested settings as ``a.b.c -> "value"`` (lists and empty dicts as JSON)."""
    if isinstance(data, dict) and data:
        out: dict[str, str] = {}
        for k, v in data.items():
            out.update(flat_params(v, f"{prefix}{k}."))
        return out
    value = data if isinstance(data, str) else json.dumps(data, default=str)
    return {prefix.rstrip("."): value}


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k != "step" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardLog:
    name = "tensorboard"

    def __init__(self, out: Path, start_step: int, params: dict[str, str]):
        from torch.utils.tensorboard import SummaryWriter

        # A resume replays the steps after its checkpoint: purge what an earlier attempt logged for them.
        self.writer = SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=start_step + 1 if start_step else None)
        if not start_step:
            table = "\n".join(f"| {k} | {v} |" for k, v in sorted(params.items()))
            self.writer.add_text("config", "| setting | value |\n|---|---|\n" + table, 0)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(tensorboard_tag(k), v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MlflowLog:
    name = "mlflow"

    def __init__(self, uri: str, experiment: str, out: Path, run_name: str, params: dict[str, str],
                 tags: dict[str, str]):
        for noisy in ("mlflow", "alembic"):  # schema creation logs at INFO on every new store
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        record = out / MLFLOW_RUN_FILE
        known = json.loads(record.read_text()) if record.exists() else {}
        if known.get("tracking_uri") == uri:  # a resumed run: the same MLflow run
            self.run_id = known["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
        items = [Param(k[:250], v[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"tracking_uri": uri, "run_id": self.run_id, "experiment": experiment}))
        tmp.replace(record)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def close(self) -> None:
        pass  # the run's status is set by the launching process (finish_mlflow), which knows how it ended


def finish_mlflow(out: Path, run_status: str) -> None:
    """End the run's MLflow run as FINISHED, KILLED or FAILED (a warning if the store is gone)."""
    record = Path(out) / MLFLOW_RUN_FILE
    if not record.exists():
        return
    known = json.loads(record.read_text())
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(known["tracking_uri"]).set_terminated(known["run_id"], MLFLOW_STATUS.get(run_status, "FAILED"))
    except Exception as exc:  # noqa: BLE001 - the run's own result is already written
        print(f"warning: could not mark MLflow run {known['run_id']} as ended: {exc}", file=sys.stderr)


class TrackerCallback:
    """Trainer callback (``trainer/loop.py``) that writes to the chosen trackers on the logging rank."""

    name = "trackers"

    def __init__(self, log_to: list[str], out: str, steps: int, every: int = 10, run_name: str = "",
                 params: dict[str, str] | None = None, tags: dict[str, str] | None = None,
                 mlflow_uri: str | None = None, mlflow_experiment: str = "ufarsap-engine"):
        #: what a torchrun worker builds the same callback from (``RunSpec.callbacks``)
        self.init_kwargs = dict(log_to=list(log_to), out=str(out), steps=steps, every=every, run_name=run_name,
                                params=dict(params or {}), tags=dict(tags or {}), mlflow_uri=mlflow_uri,
                                mlflow_experiment=mlflow_experiment)
        self.log_to, self.out, self.steps, self.every = list(log_to), Path(out), steps, every
        self.run_name, self.params, self.tags = run_name, dict(params or {}), dict(tags or {})
        self.uri, self.experiment = mlflow_uri, mlflow_experiment
        self.logs: list = []

    def open(self, start_step: int) -> None:
        check_available(self.log_to)
        self.out.mkdir(parents=True, exist_ok=True)
        for name in self.log_to:
            try:
                if name == "tensorboard":
                    self.logs.append(TensorBoardLog(self.out, start_step, self.params))
                else:
                    uri = mlflow_uri(self.uri, self.out)
                    self.logs.append(MlflowLog(uri, self.experiment, self.out, self.run_name, self.params, self.tags))
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bad URI or store, said in one line
                raise UserError(f"cannot open the {name} tracker ({type(exc).__name__}: {exc}); "
                                f"check trackers.mlflow_uri or drop it from --log-to") from None

    def on_train_start(self, state) -> None:
        if state.info.is_logging_rank and not self.logs:
            self.open(state.step)

    def on_step_end(self, step: int, metrics: dict) -> None:
        if not self.logs or (step % self.every and step != self.steps):
            return
        values = numeric(metrics)
        for log in list(self.logs):
            try:
                log.log(step, values)
            except Exception as exc:  # noqa: BLE001 - a tracker outage never stops training
                print(f"warning: tracker {log.name} failed at step {step} ({type(exc).__name__}: {exc}); "
                      "training goes on without it", file=sys.stderr)
                self.logs.remove(log)

    def on_train_end(self, summary: dict) -> None:
        self.close()

    def close(self) -> None:
        for log in self.logs:
            try:
                log.close()
            except Exception:  # noqa: BLE001
                pass
        self.logs = []
