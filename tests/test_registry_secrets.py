"""The registry's password is never stored, handed to plugins or printed: ``runs.config``,
``OUT/`` files, the run config plugins see and every output line carry it redacted; torchrun
workers get the real URL through their environment, and ``run_spec.json`` is private (0600)."""

import json
import os
import stat
import subprocess
import sys

import pytest
import sqlalchemy as sa

from helpers import make_plugin_dist

from ufarsap_registry import real_url, redact
from ufarsap_registry.errors import RegistryUnavailable

PASSWORD = "s3cr:t%40pw"  # with a ':' and an escaped '@': the hard cases for a redactor

SPY = '''
import json, os
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import PluginInfo, ScaleScores

class Plugin:
    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="safety", description="records what it is handed",
                          scales=["document"], horizons=["short"])

    @hookimpl
    def ufarsap_run_start(self, run):
        with open(os.environ["SPY_OUT"], "w") as f:
            json.dump(run.config, f)

    @hookimpl
    def ufarsap_score_document(self, batch):
        return ScaleScores(sample_scores=[1.0 for _ in batch.samples])
'''


@pytest.fixture
def secret_url(pg_registry_url):
    """The test schema's URL; the test role has a password (scripts/start-postgres.sh sets it)."""
    password = sa.make_url(pg_registry_url).password
    assert password, "the PostgreSQL test role needs a password for this test"
    return pg_registry_url, password


def test_a_run_on_a_password_registry_stores_and_shows_no_password(secret_url, tmp_path):
    url, password = secret_url
    site = make_plugin_dist(tmp_path / "site", "spy-dist", {"safety.spy": "spyplug:Plugin"}, {"spyplug": SPY})
    env = {**{k: v for k, v in os.environ.items() if k != "UFARSAP_REGISTRY_URL"},
           "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "SPY_OUT": str(tmp_path / "spy.json")}
    res = subprocess.run([sys.executable, "-m", "ufarsap_engine", "run", "--plugins", "safety.spy", "--no-train",
                          "--steps", "2", "--out", str(tmp_path / "out"), "--registry", url],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    secret = f":{password}@"
    assert secret not in res.stdout + res.stderr
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="replace"), f
    seen = json.loads((tmp_path / "spy.json").read_text())
    assert seen["registry"] == redact(url) and "***" in seen["registry"]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT config FROM runs").scalar_one()
    finally:
        engine.dispose()
    assert secret not in json.dumps(stored) and stored["registry"] == redact(url)


def test_workers_get_the_url_from_their_environment_and_a_private_spec(tmp_path, monkeypatch):
    from ufarsap_engine.run import worker_args, worker_env
    from ufarsap_engine.trainer.model_config import TrainConfig, model_preset
    from ufarsap_engine.trainer.worker import ImportRef, RunSpec, load_spec, write_spec

    url = f"postgresql+psycopg://u:{PASSWORD}@db.example/reg"
    args = {"run_config": {"registry": redact(url)}, "registry_url": url}
    spec = RunSpec(model=model_preset("tiny"), train=TrainConfig(steps=1, out_dir=str(tmp_path)),
                   objective=ImportRef(target="m:f", kwargs=worker_args(args)))
    path = write_spec(spec, tmp_path / "run_spec.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "s3cr" not in path.read_text()
    shown = load_spec(path).objective.kwargs["registry_url"]
    assert shown == "postgresql+psycopg://u:***@db.example/reg"
    env = worker_env(args)
    assert env == {"UFARSAP_REGISTRY_URL": url}
    monkeypatch.setenv("UFARSAP_REGISTRY_URL", env["UFARSAP_REGISTRY_URL"])
    assert real_url(shown) == url  # what the worker's runtime connects with
    monkeypatch.delenv("UFARSAP_REGISTRY_URL")
    with pytest.raises(RegistryUnavailable, match="password is not available"):
        real_url(shown)
