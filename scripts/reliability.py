#!/usr/bin/env python3
"""Replay the fault list against real `ufarsap-engine` processes; print cases tried / clean / lost work.

    python scripts/reliability.py                 # every case (kill -9 x 20, ...), ~15 min on 2 cores
    python scripts/reliability.py --quick         # a CI-sized subset
    python scripts/reliability.py --only kill9,tamper --json

Cases (each subprocess bounded by --timeout):

- ``kill9``: SIGKILL at a random moment of training, or while a checkpoint is being written
  (every other try); then the same command again. Clean: it resumes from the newest complete
  checkpoint there was at the kill and its losses equal an uninterrupted run's. Lost work: it
  resumed from an older one (or from scratch), or the losses differ.
- ``sigint``/``sigterm``: the signal mid-training. Clean: exit 130/143 with one line naming the
  resume command, summary and registry say interrupted, and the resume continues exactly.
- ``tamper-*``: a pickle payload in each pickled checkpoint file (manifest regenerated).
  Clean: `generate` refuses with one line, exit 2, and the payload never ran.
- ``registry-pause``: PostgreSQL unreachable for --pause-s seconds mid-run (a TCP proxy between
  the run and the server stops forwarding, so the shared server itself is never stopped). Clean:
  the run completes, its registry row says complete, and no step waited on the registry.
  Needs $UFARSAP_TEST_PG_URL (or the server `scripts/start-postgres.sh` starts); else skipped.
- ``plugin-hang``/``plugin-exit``/``plugin-mutate``: a plugin whose hook sleeps forever, calls
  sys.exit(0), or writes NaN into the alignment state it is handed. Clean: the run ends within
  the bound, with exit 1 and one line naming the plugin (or exit 0 with the engine's state
  intact), and its registry row is not left "running".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pausable_proxy import PausableProxy  # beside this script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test helpers: tampering, fake plugin distributions

STEPS = 60
TRAIN_SETS = ["--set", "train.progress=false", "--set", "train.micro_batch_size=1", "--set",
              "train.global_batch_size=2", "--set", "train.save_interval_s=1", "--set", "train.keep_last=2"]


@dataclass
class Outcome:
    case: str
    clean: bool
    lost_work: bool = False
    note: str = ""
    seconds: float = 0.0


@dataclass
class Ctx:
    work: Path
    timeout: float
    seed: int
    pause_s: float
    ref: list = field(default_factory=list)

    @property
    def registry(self) -> str:
        return f"sqlite:///{self.work / 'r.sqlite'}"

    def run_args(self, out: Path, *extra: str, steps: int = STEPS) -> list[str]:
        return ["run", "--plugins", "none", "--steps", str(steps), "--out", str(out),
                "--registry", self.registry, *TRAIN_SETS, *extra]


def env(extra: dict | None = None) -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(extra or {})}
    e.pop("UFARSAP_DEBUG", None)
    return e


def cli(args: list[str], timeout: float, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "ufarsap_engine", *args], cwd=cwd, env=env(extra_env),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, 124, e.stdout or "", f"timed out after {timeout:.0f} s")


def start(args: list[str], cwd: Path, extra_env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ufarsap_engine", *args], cwd=cwd, env=env(extra_env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def stop_group(proc: subprocess.Popen) -> None:
    """Kill what a case started (its own process group only)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def metrics(out: Path) -> list[dict]:
    p = out / "metrics.jsonl"
    if not p.exists():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def losses(out: Path) -> list:
    return [m.get("loss") for m in metrics(out)]


def error_lines(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if "error" in x.lower() or "failed" in x.lower()]


def wait_for(pred, proc: subprocess.Popen, timeout: float, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


def run_status(registry_sqlite: Path, run_id: str) -> str | None:
    with sqlite3.connect(registry_sqlite) as db:
        row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    return row[0] if row else None


def newest_good_step(out: Path) -> int:
    from ufarsap_engine.errors import UserError
    from ufarsap_engine.trainer.checkpoint import find_resumable, read_engine_state

    try:
        ck = find_resumable(out / "checkpoints")
    except UserError:
        return 0
    return int(read_engine_state(ck)["step"]) if ck else 0


def resumed_exactly(ctx: Ctx, out: Path, expect_from: int) -> tuple[bool, bool, str]:
    """Rerun the run's command; (clean, lost_work, note)."""
    p = cli(ctx.run_args(out), ctx.timeout, ctx.work)
    if p.returncode != 0:
        return False, True, f"resume exited {p.returncode}: {(error_lines(p.stderr) or [''])[-1][:120]}"
    start_step = json.loads((out / "summary.json").read_text())["training"]["start_step"]
    same = losses(out) == ctx.ref
    lost = start_step < expect_from or not same
    note = f"resumed from step {start_step} (newest complete checkpoint: {expect_from})"
    if not same:
        note += "; losses differ from the uninterrupted run"
    return (not lost) and "Traceback" not in p.stderr, lost, note


# --------------------------------------------------------------------------------------------
# Cases


def case_kill9(ctx: Ctx, i: int) -> Outcome:
    rnd = random.Random(ctx.seed * 1000 + i)
    during_save = i % 2 == 1
    out = ctx.work / f"kill9-{i}"
    proc = start(ctx.run_args(out), ctx.work)
    try:
        started = wait_for(lambda: len(metrics(out)) >= 1, proc, ctx.timeout)
        if during_save:  # the first, second or third save of the run (later ones replace older ones)
            done_before = (i // 2) % 3
            ck = out / "checkpoints"
            hit = wait_for(lambda: len(list(ck.glob("iter_*[0-9]"))) >= done_before and any(ck.glob("iter_*.tmp")),
                           proc, ctx.timeout, 0.002)
        else:
            time.sleep(rnd.uniform(0.0, 2.5))
            hit = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        stop_group(proc)
    where = "while saving a checkpoint" if during_save else "while training"
    if not started or not hit:
        where += " (the run ended first)"
    steps_done = len(metrics(out))
    expect = newest_good_step(out)
    clean, lost, note = resumed_exactly(ctx, out, expect)
    return Outcome("kill9", clean, lost, f"killed {where} after {steps_done} steps; {note}")


def case_signal(ctx: Ctx, sig: signal.Signals) -> Outcome:
    out = ctx.work / f"sig-{sig.name}"
    argv = ctx.run_args(out)
    proc = start(argv, ctx.work)
    try:
        if not wait_for(lambda: len(metrics(out)) >= 5, proc, ctx.timeout):
            return Outcome(sig.name.lower(), False, True, "the run ended before the signal")
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=ctx.timeout)
        except subprocess.TimeoutExpired:
            return Outcome(sig.name.lower(), False, True, "did not stop after the signal")
    finally:
        stop_group(proc)
    rc = proc.returncode
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    stopped = (summary.get("interrupted") or {}).get("step")
    lines = err.strip().splitlines()
    problems = []
    if rc != 128 + sig:
        problems.append(f"exit {rc}")
    if not lines or not lines[-1].endswith(f"resume with: ufarsap-engine {shlex.join(argv)}"):
        problems.append("no resume line")
    if summary.get("status") != "interrupted":
        problems.append(f"summary status {summary.get('status')}")
    if summary.get("run_id") and run_status(ctx.work / "r.sqlite", summary["run_id"]) != "interrupted":
        problems.append("registry row not interrupted")
    clean, lost, note = resumed_exactly(ctx, out, stopped or STEPS)
    return Outcome(sig.name.lower(), clean and not problems, lost,
                   "; ".join(problems + [f"stopped at step {stopped}", note]))


def case_tamper(ctx: Ctx, kind: str) -> Outcome:
    from trainer_helpers.tamper import tamper

    run_dir = ctx.work / f"tamper-{kind}"
    shutil.copytree(ctx.work / "ref", run_dir)
    from ufarsap_engine.trainer.checkpoint import find_latest

    marker = ctx.work / f"tamper-{kind}.marker"
    tamper(find_latest(run_dir / "checkpoints"), kind, marker)
    p = cli(["generate", "--checkpoint", str(run_dir), "--prompt", "The", "--max-new-tokens", "2"], ctx.timeout, ctx.work,
            {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    lines = error_lines(p.stderr)
    clean = (p.returncode == 2 and len(lines) == 1 and "not safe to load" in lines[0] and not marker.exists()
             and "Traceback" not in p.stderr)
    note = f"exit {p.returncode}; payload {'RAN' if marker.exists() else 'did not run'}"
    if lines:
        note += f"; {lines[-1][:100]}"
    return Outcome(f"tamper-{kind}", clean, False, note)


def _pg_url() -> str | None:
    import sqlalchemy as sa

    url = os.environ.get("UFARSAP_TEST_PG_URL") or "postgresql+psycopg://ufarsap:ufarsap@127.0.0.1:5432/ufarsap_test"
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3}, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return url
    except Exception:
        return None
    finally:
        engine.dispose()


def case_registry_pause(ctx: Ctx, i: int) -> Outcome:
    import sqlalchemy as sa

    url = _pg_url()
    if url is None:
        return Outcome("registry-pause", False, False, "skipped: no PostgreSQL (set UFARSAP_TEST_PG_URL)")
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    schema = f"rel_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    base = sa.make_url(url)
    proxy = PausableProxy(base.host or "127.0.0.1", base.port or 5432)
    run_url = base.set(host="127.0.0.1", port=proxy.port).update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema}).render_as_string(hide_password=False)
    out = ctx.work / f"pause-{i}"
    steps = 400
    args = ["run", "--plugins", "none", "--steps", str(steps), "--out", str(out), "--registry", run_url, *TRAIN_SETS]
    proc = start(args, ctx.work)
    try:
        if not wait_for(lambda: len(metrics(out)) >= 3, proc, ctx.timeout):
            return Outcome("registry-pause", False, False, f"run ended early: {proc.stderr.read()[-200:] if proc.stderr else ''}")
        proxy.pause()
        time.sleep(ctx.pause_s)
        proxy.resume()
        try:
            _, err = proc.communicate(timeout=ctx.timeout)
        except subprocess.TimeoutExpired:
            return Outcome("registry-pause", False, True, "run hung after the registry came back")
    finally:
        proxy.resume()
        stop_group(proc)
        proxy.close()
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                 f" WHERE application_name = '{schema}' AND pid <> pg_backend_pid()")
            row = None
            try:
                row = conn.exec_driver_sql(f'SELECT status FROM "{schema}".runs ORDER BY started_at DESC LIMIT 1').fetchone()
            except Exception:
                pass
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
    rows = metrics(out)
    blocked = max((m.get("step_time_s") or 0.0 for m in rows), default=0.0)
    status = row[0] if row else None
    problems = []
    if proc.returncode != 0:
        problems.append(f"exit {proc.returncode}: {(error_lines(err) or [''])[-1][:240]}")
    if status != "complete":
        problems.append(f"registry row {status}")
    if blocked > ctx.pause_s / 2:
        problems.append(f"a step waited {blocked:.0f} s on the registry")
    lost = proc.returncode != 0 and newest_good_step(out) < len(rows)
    return Outcome("registry-pause", not problems, lost,
                   "; ".join(problems) or f"completed {len(rows)} steps through a {ctx.pause_s:.0f} s outage")


PLUGIN_SOURCES = {
    "hang": "time.sleep(3600)",
    "exit": "sys.exit(0)",
    "mutate": "state.short['safety'] = float('nan'); state.medium['safety'] = float('nan')",
}
PLUGIN_TEMPLATE = '''
import sys, time
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import PluginInfo, ScaleScores

class Plugin:
    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="safety", description="misbehaving test plugin", scales=["document"],
                          horizons=["short", "long"])

    @hookimpl
    def ufarsap_score_document(self, batch, state):
        {action}
        return ScaleScores(sample_scores=[1.0 for _ in batch.samples])
'''


def case_plugin(ctx: Ctx, kind: str) -> Outcome:
    from helpers import make_plugin_dist

    site = ctx.work / f"site-{kind}"
    make_plugin_dist(site, f"bad-{kind}", {f"safety.{kind}": f"bad_{kind}:Plugin"},
                     {f"bad_{kind}": PLUGIN_TEMPLATE.format(action=PLUGIN_SOURCES[kind])})
    corpus = ctx.work / "plugin-corpus.txt"
    corpus.write_text("A calm paragraph.\n\nAnother calm paragraph.\n\nA third one.\n")
    out = ctx.work / f"plugin-{kind}"
    p = cli(["run", "--plugins", f"safety.{kind}", "--no-train", "--steps", "5", "--data", str(corpus), "--out", str(out),
             "--registry", ctx.registry, "--json"], ctx.timeout, ctx.work,
            {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    status = run_status(ctx.work / "r.sqlite", summary["run_id"]) if summary.get("run_id") else None
    lines = error_lines(p.stderr)
    problems = []
    if p.returncode == 124:
        problems.append(f"hung (killed after {ctx.timeout:.0f} s)")
    elif p.returncode == 0:
        final = summary.get("final_metrics") or {}
        bad = [k for k, v in final.items() if k.startswith("state.") and (v is None or (isinstance(v, float) and not math.isfinite(v)))]
        if kind != "mutate" or bad:
            problems.append(f"exit 0 ({'state corrupted: ' + ', '.join(bad[:3]) if bad else 'the fault went unnoticed'})")
    else:
        if len(lines) != 1 or f"safety.{kind}" not in lines[0]:
            problems.append(f"exit {p.returncode} without one line naming the plugin ({len(lines)} lines)")
    if "Traceback" in p.stderr:
        problems.append("traceback")
    if status == "running":
        problems.append("registry row left running")
    return Outcome(f"plugin-{kind}", not problems, False,
                   "; ".join(problems) or f"exit {p.returncode}: {(lines or [''])[-1][:100]}")


# --------------------------------------------------------------------------------------------


def build_cases(quick: bool, kills: int) -> list[tuple[str, callable]]:
    from trainer_helpers.tamper import KINDS

    n_kill = 2 if quick else kills
    cases = [("kill9", lambda c, i=i: case_kill9(c, i)) for i in range(n_kill)]
    cases += [(s.name.lower(), lambda c, s=s: case_signal(c, s)) for s in (signal.SIGINT, signal.SIGTERM)][: 1 if quick else 2]
    cases += [(f"tamper-{k}", lambda c, k=k: case_tamper(c, k)) for k in (KINDS[1:2] if quick else KINDS)]
    if not quick:
        cases += [("registry-pause", lambda c: case_registry_pause(c, 0))]
    cases += [(f"plugin-{k}", lambda c, k=k: case_plugin(c, k)) for k in (["exit"] if quick else PLUGIN_SOURCES)]
    return cases


def table(outcomes: list[Outcome]) -> str:
    rows: dict[str, list[int]] = {}
    for o in outcomes:
        r = rows.setdefault(o.case, [0, 0, 0])
        r[0] += 1
        r[1] += o.clean
        r[2] += o.lost_work
    width = max([len("case")] + [len(k) for k in rows])
    out = [f"{'case':<{width}}  tried  clean  lost work"]
    for k, (t, c, lost) in rows.items():
        out.append(f"{k:<{width}}  {t:>5}  {c:>5}  {lost:>9}")
    t = len(outcomes)
    c = sum(o.clean for o in outcomes)
    lost = sum(o.lost_work for o in outcomes)
    out.append(f"{'total':<{width}}  {t:>5}  {c:>5}  {lost:>9}")
    out.append(f"cases tried / clean / lost work: {t} / {c} / {lost}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a CI-sized subset (2 kills, 1 signal, 1 tamper, 1 plugin)")
    ap.add_argument("--only", help="comma list of case-name prefixes (kill9, sigint, sigterm, tamper, registry, plugin)")
    ap.add_argument("--kills", type=int, default=20, help="kill -9 tries (full run)")
    ap.add_argument("--timeout", type=float, default=240, help="seconds each process may take")
    ap.add_argument("--pause-s", type=float, default=40, help="registry outage length")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", help="keep the runs here (default: a temporary folder, removed)")
    ap.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    args = ap.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ufarsap-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(work=work, timeout=args.timeout, seed=args.seed, pause_s=args.pause_s)
    cases = build_cases(args.quick, args.kills)
    if args.only:
        prefixes = tuple(x.strip() for x in args.only.split(",") if x.strip())
        cases = [c for c in cases if c[0].startswith(prefixes)]
    outcomes: list[Outcome] = []
    try:
        p = cli(ctx.run_args(work / "ref"), args.timeout, work)
        if p.returncode != 0:
            print(f"reliability: the reference run failed (exit {p.returncode}): {p.stderr[-300:]}", file=sys.stderr)
            return 1
        ctx.ref = losses(work / "ref")
        for name, fn in cases:
            t0 = time.monotonic()
            try:
                o = fn(ctx)
            except Exception as e:  # the harness itself must report, not crash
                o = Outcome(name, False, False, f"harness error: {type(e).__name__}: {e}")
            o.seconds = round(time.monotonic() - t0, 1)
            outcomes.append(o)
            if not args.json:
                print(f"{'clean' if o.clean else 'NOT CLEAN':>9}  {o.case:<22} {o.seconds:>6.1f} s  {o.note}", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"outcomes": [asdict(o) for o in outcomes], "tried": len(outcomes),
                          "clean": sum(o.clean for o in outcomes), "lost_work": sum(o.lost_work for o in outcomes)},
                         indent=1))
    else:
        print()
        print(table(outcomes))
    return 0 if outcomes and all(o.clean for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
