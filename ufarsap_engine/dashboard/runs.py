"""The run directories under ``--runs``: what the dashboard lists and plots. Only direct
children of the runs folder whose name is plain (no path separators, no leading dot) are ever
opened, so no request reaches a file outside it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ufarsap_engine.errors import UserError
from ufarsap_engine.run_dir import refuse_if_in_use

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,199}$")


class RunNotFound(LookupError):
    pass


@dataclass
class RunInfo:
    name: str
    status: str  # running | complete | failed | interrupted | incomplete
    steps: int | None  # the run's planned steps
    last_step: int | None
    last_loss: float | None
    modified: float


def run_dir(root: Path, name: str) -> Path:
    """The run directory ``name`` directly under ``root``; RunNotFound for anything else."""
    if not NAME.fullmatch(name or "") or ".." in name:
        raise RunNotFound(name)
    path = (root / name).resolve()
    if path.parent != root.resolve() or not (path / "metrics.jsonl").is_file():
        raise RunNotFound(name)
    return path


def _status(path: Path) -> tuple[str, dict]:
    try:
        refuse_if_in_use(path)
    except UserError:
        return "running", {}
    for name in ("summary.json", "summary.interrupted.json", "summary.failed.json"):
        f = path / name
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            return str(data.get("status", "incomplete")), data
    return "incomplete", {}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete line of ``metrics.jsonl`` (a line being written is skipped)."""
    rows = []
    try:
        text = (path / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def _planned_steps(path: Path, summary: dict) -> int | None:
    if isinstance(summary.get("steps"), int):
        return summary["steps"]
    try:
        return int(json.loads((path / "run_spec.json").read_text())["train"]["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_info(root: Path, name: str) -> RunInfo:
    path = run_dir(root, name)
    status, summary = _status(path)
    rows = read_metrics(path)
    last = rows[-1] if rows else {}
    loss = last.get("loss")
    return RunInfo(name=name, status=status, steps=_planned_steps(path, summary), last_step=last.get("step"),
                   last_loss=float(loss) if isinstance(loss, (int, float)) else None,
                   modified=(path / "metrics.jsonl").stat().st_mtime)


def list_runs(root: Path | None) -> list[RunInfo]:
    """Run directories under ``root``, newest first."""
    if root is None or not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        try:
            out.append(run_info(root, child.name))
        except (RunNotFound, OSError):
            continue
    return sorted(out, key=lambda r: r.modified, reverse=True)


def curves(rows: list[dict[str, Any]], prefixes: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """``metric -> [(step, value)]`` for the numeric metrics whose name is or starts with a prefix."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and any(
                    k == p or k.startswith(p + ".") for p in prefixes):
                out.setdefault(k, []).append((row["step"], float(v)))
    return out
