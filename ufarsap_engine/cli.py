"""The ``ufarsap-engine`` command line.

Exit status: 0 success, 2 user error (bad flags, names, config, paths), 1 failure. Errors are
one line on stderr, never a traceback for a user mistake (``UFARSAP_DEBUG=1`` shows tracebacks
of unexpected failures).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from typing import Any

import click

from ufarsap_engine import HOOK_CONTRACT_VERSION, __version__
from ufarsap_engine.errors import EngineError, UserError
from ufarsap_engine.trainer.interrupt import Interrupted

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
REGISTRY_OPT = click.option("--registry", "registry_url", metavar="URL", envvar="UFARSAP_REGISTRY_URL",
                            help="SQLAlchemy URL of the strategy registry (default: SQLite under ./strategies_db/; "
                                 "env UFARSAP_REGISTRY_URL).")
JSON_OPT = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _console():
    """A console for tables; wide when output goes to a pipe or file, so rows don't wrap."""
    from rich.console import Console
    return Console() if sys.stdout.isatty() else Console(width=200)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="ufarsap-engine")
def cli() -> None:
    """ufarsap-engine: train language models with alignment plugins across scales and horizons."""


# --- run -------------------------------------------------------------------------------------

@cli.command(context_settings=CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML, YAML or JSON config file.")
@click.option("--plugins", help="Comma list of plugin names; 'none' for plain LM training; 'no:NAME' excludes. "
                                "Default: the registry's active strategy, else the documented default set.")
@click.option("--data", help="Training data: .txt or .jsonl file, or a saved HF dataset dir (default: embedded corpus).")
@click.option("--steps", type=int, help="Training steps.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--out", help="Run directory for metrics.jsonl, summary.json, checkpoints (default: a fresh "
                            "runs/<UTC time>); an existing one is resumed only if its settings match.")
@click.option("--overwrite", is_flag=True, default=None,
              help="Discard the run in --out (checkpoints, metrics) if its settings differ, and start over.")
@REGISTRY_OPT
@click.option("--tp", type=int, help="Tensor-parallel size.")
@click.option("--pp", type=int, help="Pipeline-parallel size.")
@click.option("--nproc", type=int, help="Processes to launch with torchrun on this node.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="cpu (gloo) or cuda (NCCL).")
@click.option("--strict/--tolerant", "strict", default=None,
              help="--strict (default): a failing plugin stops the run; --tolerant: it is quarantined and recorded.")
@click.option("--no-train", "no_train", is_flag=True, default=None, help="Run the plugin hooks without a model update.")
@click.option("--evolve", is_flag=True, default=None,
              help="Run adaptive evolution every round (settings: --set evolution.population_size=4 ...).")
@click.option("--trace-plugins", is_flag=True, default=None, help="Log every hook call and result (or UFARSAP_TRACE_PLUGINS=1).")
@click.option("--prompts", "prompts_file", metavar="FILE.jsonl",
              help="Prompts for the on-policy phase, one {\"prompt\": ...} per line (with --set onpolicy.every=N).")
@click.option("--log-to", "log_to", metavar="TRACKERS",
              help="Also write the step metrics and config to tensorboard and/or mlflow (comma list; "
                   "pip install 'ufarsap-engine[tensorboard,mlflow]'; settings: --set trackers.every=N, "
                   "trackers.mlflow_uri=URI).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any config key, e.g. train.lr=3e-4.")
@JSON_OPT
def run(config_path, plugins, data, steps, seed, out, overwrite, registry_url, tp, pp, nproc, device, strict,
        no_train, evolve, trace_plugins, prompts_file, log_to, sets, as_json) -> None:
    """Train (or, with --no-train, score) with the selected alignment plugins."""
    from ufarsap_engine.config import load_config
    from ufarsap_engine.run import execute, prepare

    cfg = load_config(
        config_path, list(sets),
        plugins=([] if plugins.strip() == "none" else plugins.split(",")) if plugins is not None else None, data=data, steps=steps, seed=seed,
        out=out, overwrite=overwrite, registry=registry_url, tp=tp, pp=pp, nproc=nproc, device=device, strict_plugins=strict,
        train_model=(False if no_train else None), trace_plugins=trace_plugins, evolve=evolve,
        onpolicy={"prompts_file": prompts_file} if prompts_file else None,
        trackers={"log_to": log_to} if log_to is not None else None,
    )
    prepared = prepare(cfg)
    from ufarsap_engine.progress import RunProgress

    start = prepared.resume_step or 0
    click.echo(f"run directory: {prepared.cfg.out} "
               f"({f'resuming from step {start}' if start else 'new run'}, {cfg.steps} steps)", err=True)
    with RunProgress(cfg.steps, start, every=cfg.log_every, enabled=not as_json) as bar:
        summary = execute(prepared, progress=bar.update)
    click.echo(f"registry: {summary['registry']}", err=True)
    if as_json:
        _echo_json(summary)
    else:
        _print_summary(summary)


def _stderr_console():
    from rich.console import Console
    return Console(stderr=True)


#: Shown in the closing table besides the named losses (per plugin and scale: run means).
SUMMARY_PREFIXES = ("state.", "probe.", "emergence.score", "reward.unified", "flagged_p.", "evolution.")
#: The three losses of a run, by name (see ``alignment/unified.py``).
NAMED_LOSSES = (("loss", "loss: total objective, last step"), ("lm_loss", "LM loss, all tokens, last step"),
                ("lm_loss_kept", "LM loss, kept tokens, last step"))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _print_summary(summary: dict) -> None:
    """The headline figures of a run; every metric of every step is in its metrics.jsonl."""
    from rich.table import Table

    final, training = summary["final_metrics"], summary.get("training") or {}
    t = Table(title=f"run {summary['run_id'][:8]} {summary['status']} ({summary['wall_time_s']} s)",
              caption=f"all metrics, every step: {summary['metrics_file']}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("plugins", ", ".join(summary["plugins"]) or "(none)")
    t.add_row("plugins chosen by", summary["plugins_source"])
    t.add_row("strategy id", str(summary["strategy_id"]))
    if training:
        t.add_row("steps", f"{training['start_step']} -> {training['end_step']}")
    for key, label in NAMED_LOSSES:
        if final.get(key) is not None:
            t.add_row(label, _fmt(final[key]))
    for k, v in final.items():
        if v is not None and k.startswith("loss.") and k != "loss.lm":
            t.add_row(f"objective term {k}", _fmt(v))
    if summary.get("tokens_per_s"):
        t.add_row("throughput, mean over the run", f"{summary['tokens_per_s']:,.0f} tokens/s")
    for k, v in summary.get("plugin_scores", {}).items():
        t.add_row(f"{k} (run mean)", _fmt(v))
    for k, v in final.items():
        if v is not None and k.startswith(SUMMARY_PREFIXES):
            t.add_row(k, _fmt(v))
    t.add_row("run directory", summary["out_dir"])
    t.add_row("summary", summary["summary_file"])
    if summary.get("checkpoint"):
        t.add_row("checkpoint", summary["checkpoint"])
    _console().print(t)


# --- annotate ----------------------------------------------------------------------------------

@cli.command(context_settings=CONTEXT)
@click.option("--data", help="Documents: .txt or .jsonl file, or a saved HF dataset dir (default: embedded corpus).")
@click.option("--plugins", required=True, help="Comma list of plugin names whose scores to store.")
@click.option("--out", required=True, help="Annotation directory (new, empty, or one written by annotate).")
@click.option("--workers", type=click.IntRange(min=0), default=lambda: min(2, os.cpu_count() or 1),
              show_default="min(2, CPUs)", help="Worker processes (0: score in this process).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Documents per scoring call.")
@click.option("--shard-size", type=click.IntRange(min=1),
              help="Documents per stored shard, the unit of resuming and reuse (default: the existing "
                   "annotation's, else 1024).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file; its plugin_params apply.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. plugin_params.NAME.KEY=V.")
@JSON_OPT
def annotate(data, plugins, out, workers, batch_size, shard_size, config_path, sets, as_json) -> None:
    """Score every document once with the selected plugins; store scores and flagged spans as dataset columns.

    Incremental and resumable: rerunning reuses complete shards whose documents, plugin version
    and parameters are unchanged; stale plugins are re-annotated. Read back with
    ufarsap_engine.annotate.load_annotations(OUT).
    """
    from ufarsap_engine.annotate import annotate as run_annotate
    from ufarsap_engine.annotate.progress import progress_reporter
    from ufarsap_engine.config import load_config

    params = load_config(config_path, list(sets)).plugin_params if (config_path or sets) else {}
    with progress_reporter(enabled=not as_json) as update:
        summary = run_annotate(out, plugins, data=data, workers=workers, batch_size=batch_size,
                               shard_size=shard_size, plugin_params=params, progress=update)
    if as_json:
        _echo_json(summary)
        return
    from rich.table import Table

    rate = f", {summary['docs_per_s']} documents/s" if summary["docs_per_s"] else ""
    t = Table(title=f"{summary['documents']} documents in {summary['shards']} shard(s) -> {summary['out']}",
              caption=f"{summary['wall_s']} s with {summary['workers']} worker(s){rate}")
    for col in ("plugin", "status", "scored", "version", "columns"):
        t.add_column(col, justify="right" if col == "scored" else "left")
    for name, p in summary["plugins"].items():
        t.add_row(name, p["status"], str(p["scored_documents"]), p["version"], str(len(p["columns"])))
    _console().print(t)


# --- generate / evaluate ------------------------------------------------------------------------

def _read_prompts(prompt: str | None, prompts_file: str | None) -> list[str]:
    if (prompt is None) == (prompts_file is None):
        raise UserError("give exactly one of --prompt TEXT or --prompts FILE.jsonl")
    if prompt is not None:
        return [prompt]
    from ufarsap_engine.documents import read_prompt_file

    return read_prompt_file(prompts_file)


@cli.command(context_settings=CONTEXT)
@click.option("--checkpoint", required=True, help="Checkpoint dir, its checkpoints/ dir, or a run dir (newest is used).")
@click.option("--prompt", help="One prompt.")
@click.option("--prompts", "prompts_file", help="JSONL file with a 'prompt' field per line.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=48, show_default=True)
@click.option("--temperature", type=click.FloatRange(0), default=0.8, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=click.IntRange(0), default=0, show_default=True, help="0 = off.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--num-samples", type=click.IntRange(1), default=1, show_default=True, help="Samples per prompt.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tag-aware/--no-tag-aware", default=None,
              help="Steer away from tokens after which the model predicts <|harmful|> (default: on for a "
                   "checkpoint trained with harmfulness tags).")
@JSON_OPT
def generate(checkpoint, prompt, prompts_file, max_new_tokens, temperature, top_k, top_p, num_samples, seed,
             tag_aware, as_json) -> None:
    """Sample continuations from a trained checkpoint (a conditionally trained one is prompted
    after <|aligned|>)."""
    from ufarsap_engine.trainer.generate import SamplingParams
    from ufarsap_engine.trainer.worker import generate_from_checkpoint

    prompts = _read_prompts(prompt, prompts_file)
    rows = []
    for k in range(num_samples):
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                seed=seed + k, tag_aware=tag_aware)
        for p, g in zip(prompts, generate_from_checkpoint(checkpoint, prompts, params)):
            rows.append({"prompt": p, "sample_index": k, "text": g.text, "finish_reason": g.finish_reason,
                         "mean_logprob": sum(g.logprobs) / max(1, len(g.logprobs))})
    for r in sorted(rows, key=lambda r: (prompts.index(r["prompt"]), r["sample_index"])):
        click.echo(json.dumps(r) if as_json else f"[{r['sample_index']}] {r['prompt']}{r['text']}")


@cli.command(context_settings=CONTEXT)
@click.option("--checkpoint", required=True, help="Checkpoint dir, its checkpoints/ dir, or a run dir.")
@click.option("--data", required=True, help="Held-out .txt or .jsonl file.")
@JSON_OPT
def evaluate(checkpoint, data, as_json) -> None:
    """Held-out LM loss and perplexity of a checkpoint on a text/JSONL file."""
    from ufarsap_engine.trainer.evaluate import evaluate_checkpoint

    with _batch_progress("evaluate", quiet=as_json) as progress:
        result = evaluate_checkpoint(checkpoint, data, progress=progress)
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"loss {result['loss']:.4f}  perplexity {result['perplexity']:.2f}  "
                   f"({result['tokens']} tokens, {result['documents']} documents)")


class _batch_progress:
    """Progress of a long command on stderr: a bar on a terminal, else a plain line about every
    10% (so redirected output shows progress too). Yields ``progress(done, total)``."""

    def __init__(self, label: str, quiet: bool = False):
        self.label, self.quiet, self.bar, self.task, self.last = label, quiet, None, None, 0

    def __enter__(self):
        import time

        self.t0 = time.perf_counter()
        if not self.quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=True, console=_stderr_console())
            self.bar.start()
        return self.update

    def update(self, done: int, total: int) -> None:
        import time

        if self.quiet:
            return
        if self.bar is not None:
            if self.task is None:
                self.task = self.bar.add_task(self.label, total=total)
            self.bar.update(self.task, completed=done)
        elif done == total or done - self.last >= max(1, total // 10):
            self.last = done
            click.echo(f"{self.label}: {done}/{total} batches ({time.perf_counter() - self.t0:.1f} s)", err=True)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- dashboard -------------------------------------------------------------------------------

@cli.command(context_settings=CONTEXT)
@REGISTRY_OPT
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False), help="Folder of run directories to show (e.g. runs/).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback exposes it.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535))
@click.option("--write-token", envvar="UFARSAP_DASHBOARD_TOKEN", metavar="TOKEN",
              help="Allow activate/retire from the browser with this token (or UFARSAP_DASHBOARD_TOKEN); "
                   "without it the dashboard is read-only.")
def dashboard(registry_url, runs_dir, host, port, write_token) -> None:
    """Serve a web dashboard of strategies, runs, evolution rounds and plugins."""
    from pathlib import Path

    import uvicorn

    from ufarsap_engine.dashboard import create_app
    from ufarsap_registry import default_url

    url = registry_url or default_url()
    with _open(url):  # a missing or out-of-date registry is one line here, not an error page
        pass
    if runs_dir and not Path(runs_dir).is_dir():
        raise UserError(f"--runs {runs_dir}: no such folder")
    if write_token is not None and len(write_token) < 8:
        raise UserError("--write-token must be at least 8 characters")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: binding to {host} makes the dashboard reachable from other machines", err=True)
    click.echo(f"dashboard: http://{host}:{port}/ (registry: {_location_of(url)}; "
               f"{'writable with the token' if write_token else 'read-only'}; Ctrl-C stops it)", err=True)
    uvicorn.run(create_app(url, runs_dir, write_token), host=host, port=port, log_level="warning")


def _location_of(url: str) -> str:
    from ufarsap_registry import redact
    return redact(url)


# --- plugins ---------------------------------------------------------------------------------

@cli.command(context_settings=CONTEXT)
@REGISTRY_OPT
@click.option("--import-timeout", "import_timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              metavar="S", help="Seconds one plugin may take to import before it is listed as broken (0: no limit).")
@JSON_OPT
def plugins(registry_url, import_timeout, as_json) -> None:
    """List installed plugins: paradigm, scales x horizons, distribution, and whether enabled."""
    from ufarsap_engine.catalog import plugin_catalog

    rows = plugin_catalog(registry_url, import_timeout_s=import_timeout)
    if as_json:
        _echo_json(rows)
        return
    from rich.table import Table

    t = Table(title="installed ufarsap-engine plugins")
    for col in ("name", "paradigm", "scales", "horizons", "distribution", "version", "enabled"):
        t.add_column(col)
    for r in rows:
        enabled = "yes" if r["enabled"] else "no"
        if r.get("error"):
            enabled = f"[red]broken: {r['error'][:80]}[/red]"
        t.add_row(r["name"], r["paradigm"] or "?", ",".join(r["scales"]), ",".join(r["horizons"]),
                  r["distribution"], r["version"], enabled)
    _console().print(t)


# --- registry --------------------------------------------------------------------------------

@cli.group(context_settings=CONTEXT)
def registry() -> None:
    """Query and change the SQL strategy registry."""


def _open(url, *, write: bool = False):
    """Queries open the registry read-only; nothing but `run` and `registry upgrade` creates one."""
    from ufarsap_registry import open_registry
    return open_registry(url, create=False, read_only=not write)


def _say_registry(reg) -> str:
    """Which registry a command used, on stderr (stdout stays clean for --json); returns it."""
    click.echo(f"registry: {reg.location}", err=True)
    return reg.location


def _strategy_rows(records) -> list[dict]:
    return [r.to_json_dict() for r in records]


def _fmt_score(v: float) -> str:
    return f"{v:.4g}"


def _print_strategies(records, metric: str | None = None) -> None:
    """A table of strategies; with ``metric`` (what the list was filtered or ranked by) that
    score gets its own column, the others are summarised after it."""
    from rich.table import Table

    t = Table()
    cols = ["id", "parent", "gen", "origin", "state", "lifecycle", "plugins"] + ([metric] if metric else []) + [
        "other scores" if metric else "scores"]
    for col in cols:
        t.add_column(col, justify="right" if col in ("id", "parent", "gen", metric) else "left")
    for r in records:
        others = ", ".join(f"{k}={_fmt_score(v)}" for k, v in sorted(r.scores.items()) if k != metric)
        chosen = [_fmt_score(r.scores[metric]) if metric in r.scores else "-"] if metric else []
        t.add_row(str(r.id), str(r.parent_id or ""), str(r.generation), r.origin, r.state, r.lifecycle,
                  ",".join(r.plugins), *chosen, others)
    _console().print(t)


def _print_scores(scores: dict[str, float]) -> None:
    """A strategy's scores as a two-column table, sorted by name."""
    from rich.table import Table

    t = Table("metric", "score")
    t.columns[1].justify = "right"
    for k, v in sorted(scores.items()):
        t.add_row(k, _fmt_score(v))
    _console().print(t)


@registry.command("list", context_settings=CONTEXT)
@REGISTRY_OPT
@click.option("--state", help="candidate, running, complete or failed.")
@click.option("--lifecycle", help="proposed, active, retired or rejected.")
@click.option("--plugin", help="Only strategies that enable this plugin.")
@click.option("--metric", help="Metric for --min/--max/--top.")
@click.option("--min", "min_value", type=float, help="Keep strategies whose METRIC >= this.")
@click.option("--max", "max_value", type=float, help="Keep strategies whose METRIC <= this.")
@click.option("--top", "top_k", type=int, help="The top K strategies by METRIC.")
@click.option("--ascending", is_flag=True, help="With --top: lowest first (for losses).")
@click.option("--scope", help="Registry scope (default: all scopes).")
@click.option("--limit", type=int, help="At most this many rows.")
@JSON_OPT
def registry_list(registry_url, state, lifecycle, plugin, metric, min_value, max_value, top_k, ascending, scope,
                  limit, as_json) -> None:
    """List strategies, filtered by state, lifecycle, plugin, metric thresholds, top-k."""
    if (min_value is not None or max_value is not None or top_k is not None) and not metric:
        raise UserError("--min, --max and --top need --metric NAME")
    with _open(registry_url) as reg:
        records = reg.list(state=state, lifecycle=lifecycle, plugin=plugin, metric=metric, min_value=min_value,
                           max_value=max_value, top_k=top_k, order="asc" if ascending else "desc", scope=scope,
                           limit=limit)
    where = _say_registry(reg)
    _echo_json({"registry": where, "strategies": _strategy_rows(records)}) if as_json else _print_strategies(records, metric)


@registry.command("show", context_settings=CONTEXT)
@click.argument("strategy_id", type=int)
@REGISTRY_OPT
@JSON_OPT
def registry_show(strategy_id, registry_url, as_json) -> None:
    """Show one strategy with its scores, lineage and why it was integrated or rejected."""
    with _open(registry_url) as reg:
        rec = reg.get(strategy_id)
        events = reg.lineage(strategy_id)
    data = {"registry": _say_registry(reg), **rec.to_json_dict()}
    data["lineage"] = [e.model_dump(mode="json") for e in events]
    if as_json:
        _echo_json(data)
        return
    for k, v in data.items():
        if k not in ("lineage", "registry", "scores"):
            click.echo(f"{k:>14}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
    click.echo("        scores:" + ("" if rec.scores else " none"))
    if rec.scores:
        _print_scores(rec.scores)
    click.echo("       lineage:")
    for e in events:
        frm = f" from {e.from_strategy_id}" if e.from_strategy_id else ""
        click.echo(f"                {e.at:%Y-%m-%d %H:%M:%S} {e.event}{frm} {json.dumps(e.detail) if e.detail else ''}")


@registry.command("best", context_settings=CONTEXT)
@click.option("--metric", required=True, help="Metric to rank by.")
@click.option("--lowest", is_flag=True, help="Lower is better (losses, flagged rates).")
@click.option("--scope", default="default", show_default=True)
@REGISTRY_OPT
@JSON_OPT
def registry_best(metric, lowest, scope, registry_url, as_json) -> None:
    """The best strategy by one metric."""
    with _open(registry_url) as reg:
        rec = reg.best(metric, scope=scope, higher_is_better=not lowest)
    if rec is None:
        raise UserError(f"no strategy in scope '{scope}' of registry {reg.location} has a score for metric '{metric}'")
    where = _say_registry(reg)
    _echo_json({"registry": where, **rec.to_json_dict()}) if as_json else _print_strategies([rec], metric)


@registry.command("lineage", context_settings=CONTEXT)
@click.argument("strategy_id", type=int)
@REGISTRY_OPT
@JSON_OPT
def registry_lineage(strategy_id, registry_url, as_json) -> None:
    """The ancestry and descendants of a strategy, as a tree."""
    with _open(registry_url) as reg:
        ancestry = reg.ancestry(strategy_id)
        descendants = reg.descendants(strategy_id)
    where = _say_registry(reg)
    if as_json:
        _echo_json({"registry": where, "ancestry": _strategy_rows(ancestry), "descendants": _strategy_rows(descendants)})
        return
    from rich.tree import Tree

    def label(r):
        return f"{r.id} [{r.origin}, gen {r.generation}, {r.lifecycle}] {','.join(r.plugins)}"

    root = Tree(label(ancestry[0]))
    node = root
    for r in ancestry[1:]:
        node = node.add(label(r))
    by_parent: dict = {}
    for r in descendants:
        by_parent.setdefault(r.parent_id, []).append(r)

    def grow(tree_node, sid):
        for child in by_parent.get(sid, []):
            grow(tree_node.add(label(child)), child.id)

    grow(node, strategy_id)
    _console().print(root)


@registry.command("activate", context_settings=CONTEXT)
@click.argument("strategy_id", type=int)
@click.option("--reason", default="activated by hand", show_default=True)
@REGISTRY_OPT
@JSON_OPT
def registry_activate(strategy_id, reason, registry_url, as_json) -> None:
    """Make a strategy the active one (retires the current one); its plugins must be installed."""
    from ufarsap_engine.plugin_host import installed_plugins

    installed = installed_plugins()
    with _open(registry_url, write=True) as reg:
        rec = reg.get(strategy_id)
        missing = [p for p in rec.plugins if p not in installed]
        if missing:
            raise UserError(f"strategy {strategy_id} needs plugins that are not installed: {', '.join(missing)}; "
                            "nothing was changed")
        rec = reg.activate(strategy_id, reason=reason)
    where = _say_registry(reg)
    _echo_json({"registry": where, **rec.to_json_dict()}) if as_json else click.echo(f"strategy {rec.id} is now active ({', '.join(rec.plugins)})")


@registry.command("retire", context_settings=CONTEXT)
@click.argument("strategy_id", type=int)
@click.option("--reason", default="retired by hand", show_default=True)
@REGISTRY_OPT
def registry_retire(strategy_id, reason, registry_url) -> None:
    """Retire a strategy (the scope then has no active strategy if it was the active one)."""
    with _open(registry_url, write=True) as reg:
        reg.retire(strategy_id, reason=reason)
    _say_registry(reg)
    click.echo(f"strategy {strategy_id} retired")


@registry.command("upgrade", context_settings=CONTEXT)
@REGISTRY_OPT
def registry_upgrade(registry_url) -> None:
    """Migrate the registry's schema to this engine's version (Alembic)."""
    from ufarsap_registry import default_url, location, upgrade

    url = registry_url or default_url()
    old, new = upgrade(url)
    click.echo(f"registry: {location(url)}", err=True)
    click.echo(f"registry schema: {old or '(empty)'} -> {new}")


# --- evolution --------------------------------------------------------------------------------

@cli.group(context_settings=CONTEXT)
def evolution() -> None:
    """Reports on adaptive evolution, read from the registry."""


@evolution.command("report", context_settings=CONTEXT)
@click.option("--run", "run_id", help="Only this evolution run (default: every run in the scope).")
@click.option("--scope", default="default", show_default=True)
@click.option("--out", "out_png", help="PNG of objective vs generation (default: evolution.png; "
                                     "with --json no PNG unless --out is given).")
@REGISTRY_OPT
@JSON_OPT
def evolution_report(run_id, scope, out_png, registry_url, as_json) -> None:
    """Discovery rate, effectiveness, generalisability (Table 2) and a plot of score vs generation.

    No evolution data (no candidates in the scope or run) is a user error (exit 2); no plot is drawn."""
    from ufarsap_engine.evolution import format_report, report

    if out_png is None and not as_json:
        out_png = "evolution.png"
    with _open(registry_url) as reg:
        data = report(reg, run_id, out_png, scope=scope)
    _say_registry(reg)
    if not data["candidates"]:
        which = f"run {run_id}" if run_id else f"scope '{scope}'"
        raise UserError(f"no evolution data for {which} in the registry (nothing to report or plot); "
                        "run `ufarsap-engine run --evolve` first, or choose another --scope/--run")
    _echo_json(data) if as_json else click.echo(format_report(data))


# --- version ---------------------------------------------------------------------------------

@cli.command(context_settings=CONTEXT)
@JSON_OPT
def version(as_json) -> None:
    """Print the engine, hook-contract and key library versions."""
    import importlib.metadata as md

    libs = {}
    for dist in ("torch", "megatron-core", "transformers", "pluggy", "pydantic", "sqlalchemy"):
        try:
            libs[dist] = md.version(dist)
        except md.PackageNotFoundError:
            libs[dist] = None
    data = {"ufarsap_engine": __version__, "hook_contract": HOOK_CONTRACT_VERSION, "python": sys.version.split()[0], **libs}
    if as_json:
        _echo_json(data)
    else:
        for k, v in data.items():
            click.echo(f"{k}: {v}")


# --- bench -----------------------------------------------------------------------------------

@cli.command(context_settings=CONTEXT)
@click.option("--preset", default="smoke", show_default=True,
              help="smoke (CI), cpu-quick (~15 min), cpu (full table), cpu-100 (the former cpu), onpolicy, "
                   "gpu-125m or gpu-1b.")
@click.option("--out", required=True, help="Benchmark directory (results.json, report.md, PNGs, runs/); "
                                           "rerunning with the same --out skips finished runs.")
@click.option("--seeds", type=int, help="Seeds per method (default: the preset's).")
@click.option("--methods", help="Comma list of methods (default: the preset's; mle is always added).")
@click.option("--no-progress", is_flag=True, help="No progress bar (one log line per finished run stays).")
@JSON_OPT
def bench(preset, out, seeds, methods, no_progress, as_json) -> None:
    """Train and evaluate every alignment method x seed; write results.json, report.md and plots."""
    from ufarsap_engine.bench import get_preset, parse_methods, run_bench

    p = get_preset(preset)
    names = parse_methods(methods, p)
    if seeds is not None and seeds < 1:
        raise UserError("--seeds must be >= 1")
    res = run_bench(p, out, names, seeds or p.seeds, show_progress=not no_progress and not as_json)
    runs = res.get("runs", [])
    done = sum(r.get("status") == "complete" for r in runs)
    if as_json:
        _echo_json({"out": out, "report": os.path.join(out, "report.md"), "complete": done,
                    "failed": len(runs) - done,
                    "runs": [{k: r.get(k) for k in ("method", "seed", "status", "metrics", "error")} for r in runs]})
    else:
        click.echo(f"bench: {done}/{len(runs)} runs complete; report: {os.path.join(out, 'report.md')}")
    if done < len(runs):
        raise EngineError(f"{len(runs) - done} bench run(s) failed; see {os.path.join(out, 'results.json')}")


# --- entry point -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn errors into one line and an exit status."""
    try:
        cli.main(args=argv, prog_name="ufarsap-engine", standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("ufarsap-engine: aborted", err=True)
        return 130
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "ufarsap-engine"
        click.echo(f"{cmd}: error: {exc.format_message()} (see `{cmd} --help`)", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"ufarsap-engine: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except Interrupted as exc:  # a signal: the run saved what it had and says how to go on
        args = sys.argv[1:] if argv is None else list(argv)
        out = getattr(exc, "out_dir", None)
        if out and not any(a in ("--out", "-o") or a.startswith("--out=") for a in args):
            args += ["--out", out]
        click.echo(f"ufarsap-engine: {exc}; resume with: ufarsap-engine {shlex.join(args)}", err=True)
        return exc.exit_code
    except EngineError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            click.echo(f"ufarsap-engine: error: {line}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("ufarsap-engine: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug or an environment failure: one line, traceback on request
        if os.environ.get("UFARSAP_DEBUG"):
            traceback.print_exc()
        first = (str(exc).splitlines() or [""])[0]
        click.echo(f"ufarsap-engine: failed: {type(exc).__name__}: {first} (UFARSAP_DEBUG=1 shows the traceback)", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
