"""Test helpers: fake plugin distributions on disk, and running the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

GOOD_PLUGIN = '''
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import PluginInfo, ScaleScores, Span

class Plugin:
    calls = []

    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="{paradigm}", description="test plugin", scales=["token", "document"],
                          horizons=["short", "long"])

    @hookimpl
    def ufarsap_score_token(self, batch):
        Plugin.calls.append("token")
        spans = [[Span(start=0, end=min(3, len(s.text)), severity=1.0)] if "bad" in s.text and s.text else []
                 for s in batch.samples]
        return ScaleScores(sample_scores=[0.0 if sp else 1.0 for sp in spans], spans=spans)

    @hookimpl
    def ufarsap_score_document(self, batch):
        Plugin.calls.append("document")
        return ScaleScores(sample_scores={doc_scores})
'''


def make_plugin_dist(root: Path, dist: str, plugins: dict[str, str], modules: dict[str, str]) -> Path:
    """Write an installed-looking distribution (dist-info + modules) under ``root``.

    ``plugins``: entry-point name -> target; ``modules``: module name -> source.
    Put ``root`` on ``sys.path`` / ``PYTHONPATH`` to "install" it."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    eps = "[ufarsap_engine]\n" + "".join(f"{k} = {v}\n" for k, v in plugins.items())
    (info / "entry_points.txt").write_text(eps)
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(src))
    return root


def good_plugin_source(paradigm: str = "safety", doc_scores: str = "[1.0 for _ in batch.samples]") -> str:
    return GOOD_PLUGIN.format(paradigm=paradigm, doc_scores=doc_scores)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``ufarsap-engine ARGS`` in a subprocess (as a user would)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ufarsap_engine", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def write_corpus(path: Path, texts: list[str]) -> Path:
    with open(path, "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
    return path
