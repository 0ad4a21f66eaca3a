"""The third-party path for real: build the template plugin's wheel, pip install it into a fresh
virtual environment together with the engine (built as a wheel too), list it, run it."""

import json
import os
import site
import subprocess
import sys

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow


def sh(*args, **kw):
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)
    assert res.returncode == 0, f"{args} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res


def inherit_site_packages(env_dir):
    """Let a new environment see the packages of the interpreter running the tests.

    `venv --system-site-packages` would inherit the *base* interpreter's packages, which lack
    the dependencies when the tests run inside a virtual environment; a .pth file listing the
    running interpreter's site directories works for a venv, CI and a bare system Python alike.
    """
    dirs = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    own = next((env_dir / "lib").glob("python3*/site-packages"))
    (own / "_running_interpreter.pth").write_text("".join(f"{d}\n" for d in dirs if os.path.isdir(d)))


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("thirdparty")
    wheels = root / "wheels"
    # Both wheels are built from source without network (setuptools comes from this interpreter).
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels,
       REPO / "examples" / "plugin-template")
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, REPO)
    env_dir = root / "venv"
    # The new environment reuses the heavy dependencies (torch, megatron-core ...) already installed;
    # this interpreter's pip installs into it, so the base need not ship ensurepip.
    sh(sys.executable, "-m", "venv", "--without-pip", env_dir)
    inherit_site_packages(env_dir)
    py = env_dir / "bin" / "python"
    sh(sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index",
       *sorted(wheels.glob("*.whl")))
    return env_dir, root


def test_new_environment_sees_the_running_interpreters_packages(venv):
    env_dir, root = venv
    out = sh(env_dir / "bin" / "python", "-c", "import sqlalchemy, torch, ufarsap_engine; print(ufarsap_engine.__file__)",
             cwd=root)
    assert out.stdout.startswith(str(env_dir)), out.stdout  # the engine is the installed wheel


def test_engine_wheel_has_no_generic_top_level_packages(venv):
    env_dir, _ = venv
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    names = {p.name for p in site.iterdir()}
    assert {"ufarsap_engine", "ufarsap_plugins", "ufarsap_registry", "ufarsap_shouting"} <= names
    assert not names & {"plugins", "registry"}
    # data files made it into the wheel
    assert (site / "ufarsap_registry" / "migrations" / "env.py").exists()


def test_plugins_lists_the_third_party_plugin(venv):
    env_dir, root = venv
    out = sh(env_dir / "bin" / "ufarsap-engine", "plugins", "--json", "--registry", f"sqlite:///{root}/reg.sqlite")
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    row = rows["safety.shouting"]
    assert row["distribution"] == "ufarsap-plugin-shouting" and row["version"] == "0.1.0"
    assert row["paradigm"] == "safety" and row["scales"] == ["token", "document"] and row["error"] is None
    assert rows["safety.toxicity"]["distribution"] == "ufarsap-engine"  # built-ins found the same way


def test_run_calls_the_third_party_hooks(venv, tmp_path):
    env_dir, root = venv
    corpus = tmp_path / "c.txt"
    corpus.write_text("Calm words here.\n\nSTOP SHOUTING at me right NOW.\n\nAnother calm paragraph.\n")
    res = subprocess.run(
        [env_dir / "bin" / "ufarsap-engine", "run", "--plugins", "safety.shouting", "--no-train", "--steps", "3",
         "--data", corpus, "--out", tmp_path / "run", "--registry", f"sqlite:///{root}/reg.sqlite", "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "UFARSAP_TRACE_PLUGINS": "1"})
    assert res.returncode == 0, res.stderr
    assert "[trace] safety.shouting.ufarsap_score_token(" in res.stderr
    assert "[trace] safety.shouting.ufarsap_score_document(" in res.stderr
    summary = json.loads(res.stdout)
    assert summary["plugins"] == ["safety.shouting"] and summary["status"] == "complete"
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3 and "score.safety.shouting.document" in metrics[-1]
