"""The annotation pipeline: columns and provenance, reuse, stale columns, resuming after
SIGKILL, and one-line errors for bad input.

Most tests use a small fake plugin distribution (fast, deterministic, its version under the
test's control) and score in-process (``workers=0``); the worker pool is exercised through the
CLI in a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, run_cli, write_corpus
from ufarsap_engine.alignment.scoring import make_sample, score_batch
from ufarsap_engine.annotate import annotate, check_annotations, load_annotations, plugin_columns
from ufarsap_engine.annotate.manifest import MANIFEST, read_manifest
from ufarsap_engine.errors import UserError
from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.schemas import AlignmentState, TextBatch

PLUGIN_SRC = '''
import os, time
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import PluginInfo, ScaleScores, Span

CALLS = []

class Word:
    """Flags every occurrence of WORD; scores token, sentence and document scale."""
    WORD = "{word}"

    def __init__(self):
        self.weight = 0.25

    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="safety", description="flags a word", scales=["token", "sentence", "document"],
                          horizons=["short"])

    @hookimpl
    def ufarsap_configure(self, params):
        unknown = set(params) - {{"weight"}}
        if unknown:
            raise ValueError(f"unknown parameter(s): {{sorted(unknown)}}")
        self.weight = float(params.get("weight", 0.25))

    def _hits(self, text):
        out, i = [], text.find(self.WORD)
        while i >= 0:
            out.append((i, i + len(self.WORD)))
            i = text.find(self.WORD, i + 1)
        return out

    def _score(self, text):
        return max(0.0, 1.0 - self.weight * len(self._hits(text)))

    @hookimpl
    def ufarsap_score_token(self, batch):
        CALLS.append(("{word}", sum(s.sample_id != "warm-up" for s in batch.samples)))
        time.sleep(float(os.environ.get("ANNOTATE_TEST_SLEEP", "0")))
        return ScaleScores(sample_scores=[self._score(s.text) for s in batch.samples],
                           spans=[[Span(start=a, end=b, severity=1.0, label="{word}") for a, b in self._hits(s.text)]
                                  for s in batch.samples])

    @hookimpl
    def ufarsap_score_sentence(self, batch):
        units = [[self._score(s.text[a:b]) for a, b in s.sentences] or [1.0] for s in batch.samples]
        return ScaleScores(sample_scores=[min(u) for u in units], unit_scores=units)

    @hookimpl
    def ufarsap_score_document(self, batch):
        return ScaleScores(sample_scores=[self._score(s.text) for s in batch.samples])
'''

BAD, UGLY = "safety.bad", "safety.ugly"


def write_plugins(root: Path, version: str = "0.1", ugly_version: str | None = None) -> Path:
    """Two installed-looking distributions: ``safety.bad`` and ``safety.ugly``."""
    for dist, name, word, ver in (("annot-bad", BAD, "bad", version), ("annot-ugly", UGLY, "ugly", ugly_version or version)):
        mod = f"annot_{word}"
        info = root / f"{dist.replace('-', '_')}-0.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {ver}\n")
        (info / "entry_points.txt").write_text(f"[ufarsap_engine]\n{name} = {mod}:Word\n")
        (root / f"{mod}.py").write_text(PLUGIN_SRC.format(word=word))
    return root


TEXTS = [f"Document {i} is fine. " + ("It has a bad word. " if i % 3 == 0 else "")
         + ("An ugly bad one too!" if i % 5 == 0 else "Nothing else.") for i in range(40)]


@pytest.fixture
def env(tmp_path, monkeypatch):
    plugins = write_plugins(tmp_path / "site")
    monkeypatch.syspath_prepend(str(plugins))
    data = write_corpus(tmp_path / "docs.jsonl", TEXTS)
    return {"site": plugins, "data": data, "out": tmp_path / "ann", "tmp": tmp_path}


def calls(word: str) -> int:
    """Documents the plugin scored in this process (the pool's warm-up call aside)."""
    mod = sys.modules.get(f"annot_{word}")
    return sum(n for w, n in mod.CALLS) if mod else 0


def reset_calls() -> None:
    for w in ("bad", "ugly"):
        if f"annot_{w}" in sys.modules:
            sys.modules[f"annot_{w}"].CALLS.clear()


def quiet(_line: str) -> None:
    pass


def run(env, plugins, notes=None, **kw):
    kw = {"workers": 0, "batch_size": 7, "shard_size": 16, **kw}
    return annotate(env["out"], plugins, data=str(env["data"]), note=(notes.append if notes is not None else quiet), **kw)


def test_columns_scores_spans_and_provenance(env):
    summary = run(env, f"{BAD},{UGLY}")
    assert summary["documents"] == 40 and summary["shards"] == 3
    ds = load_annotations(env["out"])
    assert len(ds) == 40
    assert set(plugin_columns(BAD, ["token", "sentence", "document"])) <= set(ds.column_names)
    row = ds[0]  # "Document 0 is fine. It has a bad word. An ugly bad one too!"
    assert row["id"] == "d0" and row["text"] == TEXTS[0]
    assert row[f"{BAD}:document"] == 0.5 and row[f"{UGLY}:document"] == 0.75
    starts = [i for i in range(len(TEXTS[0])) if TEXTS[0].startswith("bad", i)]
    assert row[f"{BAD}:spans"] == [[s, s + 3] for s in starts]
    assert row[f"{BAD}:span_labels"] == ["bad", "bad"] and row[f"{BAD}:span_severity"] == [1.0, 1.0]
    assert [TEXTS[0][a:b] for a, b in row["sentences"]] == ["Document 0 is fine.", "It has a bad word.",
                                                           "An ugly bad one too!"]
    assert row[f"{BAD}:sentence_units"] == [1.0, 0.75, 0.75]
    assert ds[1][f"{BAD}:spans"] == [] and ds[1][f"{BAD}:document"] == 1.0
    m = json.loads((env["out"] / MANIFEST).read_text())
    assert m["plugins"][BAD]["version"] == "0.1" and m["plugins"][BAD]["distribution"] == "annot-bad"
    assert m["plugins"][BAD]["params_hash"] and m["plugins"][BAD]["scales"] == ["token", "sentence", "document"]
    assert len(set(ds["content_hash"])) == 40
    # every shard directory is a saved HF dataset of its own
    import datasets
    first = env["out"] / "base" / m["shards"][0]["key"]
    assert len(datasets.load_from_disk(str(first))) == 16


def test_scores_are_the_engines_score_batch(tmp_path):
    """The real safety plugins: the stored columns are exactly what score_batch returns."""
    texts = ["You are an idiot and I hate you.", "The heron lives by the lake. It eats fish.",
             "Women are bad at math.", "Call me at 555-0100 tomorrow."]
    data = write_corpus(tmp_path / "d.jsonl", texts)
    annotate(tmp_path / "ann", "safety.toxicity,safety.bias", data=str(data), workers=0, note=quiet)
    ds = load_annotations(tmp_path / "ann", ["safety.bias", "safety.toxicity"])
    host = PluginHost(["safety.toxicity", "safety.bias"])
    cells = score_batch(host, TextBatch(samples=[make_sample(f"d{i}", t) for i, t in enumerate(texts)]), "short",
                        AlignmentState())
    for (plugin, scale), res in cells.results.items():
        assert ds[f"{plugin}:{scale}"] == res.sample_scores
    tox = cells.results[("safety.toxicity", "token")]
    assert ds["safety.toxicity:spans"][0] == [[s.start, s.end] for s in sorted(tox.spans[0], key=lambda s: (s.start, s.end, s.label))]
    assert ds["safety.toxicity:spans"][0], "the insult is flagged"


def test_window_rescoring_reads_stateless_plugins_from_the_annotation(tmp_path, monkeypatch):
    """The medium horizon's re-scoring of training documents takes the stateless plugins'
    results from the annotation (no detector call) and hands them to the plugins that build on
    them, which are still called at the medium horizon: the same scores as calling everything."""
    from ufarsap_engine.alignment.unified import UnifiedObjective
    from ufarsap_engine.annotate.table import AnnotationTable, document_key
    from ufarsap_engine.config import ObjectiveConfig
    from ufarsap_engine.schemas import Horizon

    texts = ["You are an idiot and I hate you.", "The heron lives by the lake. It eats fish.",
             "Write to linda.smith@example.com about the market."]
    data = write_corpus(tmp_path / "d.jsonl", texts)
    names = ["safety.toxicity", "safety.privacy", "reflect.selfrefine"]
    annotate(tmp_path / "ann", names[:2], data=str(data), workers=0, note=quiet)  # selfrefine: medium only
    host = PluginHost(names)
    samples = [make_sample(f"d{i}", t) for i, t in enumerate(texts)]
    batch = TextBatch(samples=samples)
    everything = score_batch(host, batch, Horizon.MEDIUM, AlignmentState())
    objective = UnifiedObjective(host, ObjectiveConfig())
    objective.use_annotations(AnnotationTable(tmp_path / "ann", ["safety.privacy", "safety.toxicity"]))
    known = objective.known_results(samples, [document_key(t, None, None) for t in texts], Horizon.MEDIUM)
    assert {p for p, _ in known} == {"safety.privacy", "safety.toxicity"}
    import ufarsap_plugins.safety.privacy as privacy
    import ufarsap_plugins.safety.toxicity as toxicity

    def boom(*a, **k):
        raise AssertionError("a detector ran")

    for mod in (privacy, toxicity):
        for cls in vars(mod).values():
            if isinstance(cls, type) and hasattr(cls, "ufarsap_score_document"):
                monkeypatch.setattr(cls, "analyze", boom)
                monkeypatch.setattr(cls, "analyze_many", boom)
    reused = score_batch(host, batch, Horizon.MEDIUM, AlignmentState(), known=known)
    assert set(reused.results) == set(everything.results)
    for key, res in everything.results.items():
        assert reused.results[key].sample_scores == pytest.approx(res.sample_scores), key
    assert objective.known_results(samples, ["not-annotated"] * 3, Horizon.MEDIUM) == {}  # unknown text: call


def test_an_annotation_edited_on_disk_is_reported_where_the_objective_uses_it(tmp_path):
    """Results read from an annotation are checked where they become weights: a span edited to
    an impossible severity stops a strict run with one line naming the plugin."""
    import shutil

    import datasets

    from ufarsap_engine.alignment.unified import UnifiedObjective
    from ufarsap_engine.annotate.manifest import plugin_dir
    from ufarsap_engine.annotate.table import AnnotationTable, document_key
    from ufarsap_engine.config import ObjectiveConfig
    from ufarsap_engine.errors import PluginError

    texts = ["You are an idiot and I hate you.", "The heron lives by the lake."]
    annotate(tmp_path / "ann", "safety.toxicity", data=str(write_corpus(tmp_path / "d.jsonl", texts)), workers=0,
             note=quiet)
    m = read_manifest(tmp_path / "ann")
    rec, shard = m.plugins["safety.toxicity"], m.shards[0].key
    where = plugin_dir(tmp_path / "ann", "safety.toxicity", rec.key, shard)
    ds = datasets.load_from_disk(str(where))
    edited = ds.map(lambda row: {"safety.toxicity:span_severity": [5.0 for _ in row["safety.toxicity:span_severity"]]})
    edited.save_to_disk(str(tmp_path / "edited"))
    shutil.rmtree(where)
    shutil.move(str(tmp_path / "edited"), str(where))
    host = PluginHost(["safety.toxicity"])
    objective = UnifiedObjective(host, ObjectiveConfig())
    table = AnnotationTable(tmp_path / "ann", ["safety.toxicity"])
    entry = table.entry(document_key(texts[0], None, None), "d0")
    score, spans, units = entry["results"][("safety.toxicity", "token")]
    assert spans and spans[0].severity == 5.0  # read as stored
    objective.use_annotations(table)
    with pytest.raises(PluginError, match=r"safety.toxicity.*severity 5.0.*in its annotation"):
        objective._usable("safety.toxicity", "token", score, spans, units, entry)


def test_adding_a_plugin_computes_only_its_columns(env):
    run(env, BAD)
    before = load_annotations(env["out"])[f"{BAD}:document"]
    reset_calls()
    notes: list[str] = []
    summary = run(env, f"{BAD},{UGLY}", notes)
    assert calls("bad") == 0 and calls("ugly") == 40
    assert summary["plugins"][BAD] == {**summary["plugins"][BAD], "status": "reused", "scored_documents": 0}
    assert any("reusing complete columns of safety.bad" in n for n in notes)
    ds = load_annotations(env["out"])
    assert ds[f"{BAD}:document"] == before and f"{UGLY}:document" in ds.column_names
    reset_calls()
    run(env, UGLY)  # asking for one plugin keeps the other's columns
    assert calls("ugly") == 0
    assert f"{BAD}:document" in load_annotations(env["out"]).column_names


def test_stale_version_is_reported_and_only_its_columns_reannotated(env):
    run(env, f"{BAD},{UGLY}")
    write_plugins(env["site"], version="0.1", ugly_version="0.2")  # safety.ugly upgraded
    with pytest.raises(UserError, match=r"columns of safety.ugly are stale \(annotated with version 0.1.*now version 0.2"):
        load_annotations(env["out"], [UGLY])
    check_annotations(env["out"], [BAD])  # the other plugin is still current
    reset_calls()
    notes: list[str] = []
    summary = run(env, f"{BAD},{UGLY}", notes)
    assert any("safety.ugly: annotations are stale (version 0.1 -> 0.2)" in n for n in notes)
    assert calls("bad") == 0 and calls("ugly") == 40
    assert summary["plugins"][UGLY]["status"] == "re-annotated (stale)"
    assert read_manifest(env["out"]).plugins[UGLY].version == "0.2"
    assert len(load_annotations(env["out"], [BAD, UGLY])) == 40
    # the stale shards are gone from disk, only the current key remains
    assert len(list((env["out"] / "plugins" / UGLY).iterdir())) == 1


def test_changed_parameters_are_stale(env):
    run(env, BAD)
    with pytest.raises(UserError, match="stale"):
        check_annotations(env["out"], [BAD], {BAD: {"weight": 0.5}})
    reset_calls()
    run(env, BAD, plugin_params={BAD: {"weight": 0.5}})
    assert calls("bad") == 40
    assert load_annotations(env["out"], [BAD], {BAD: {"weight": 0.5}})[f"{BAD}:document"][0] == 0.0


def test_changed_documents_rescore_only_themselves(env):
    run(env, BAD)
    texts = list(TEXTS)
    texts[20] = "A new bad text."  # in shard 1 of [0,16) [16,32) [32,40)
    write_corpus(env["data"], texts)
    reset_calls()
    run(env, BAD)
    assert calls("bad") == 1  # its shard is rewritten; the other 15 rows come from the old one
    assert load_annotations(env["out"])[f"{BAD}:document"][20] == 0.75
    reset_calls()
    write_corpus(env["data"], ["An inserted bad document."] + texts)  # every shard shifts by one row
    summary = run(env, BAD)
    assert calls("bad") == 1 and summary["scored_documents"] == 1
    fresh = annotate(env["tmp"] / "fresh", BAD, data=str(env["data"]), workers=0, shard_size=16, note=quiet)
    assert fresh["scored_documents"] == 41
    assert load_annotations(env["out"]).to_dict() == load_annotations(env["tmp"] / "fresh").to_dict()


def test_missing_columns_and_partial_annotations_are_one_line_errors(env):
    run(env, BAD)
    with pytest.raises(UserError, match=r"no columns for safety.ugly \(annotated: safety.bad\); rerun `ufarsap-engine annotate --plugins safety.ugly"):
        check_annotations(env["out"], [UGLY, BAD])
    m = read_manifest(env["out"])
    m.plugins[BAD].done.pop()  # as an interrupted run leaves it
    (env["out"] / MANIFEST).write_text(m.model_dump_json())
    with pytest.raises(UserError, match="do not cover every document"):
        load_annotations(env["out"], [BAD])
    assert BAD not in " ".join(load_annotations(env["out"]).column_names)  # incomplete columns are never read


def test_not_an_annotation_directory(env, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="is not an annotation directory .* not empty"):
        run({**env, "out": other}, BAD)
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]
    with pytest.raises(UserError, match=r"is not an annotation directory \(no annotation.json\)"):
        load_annotations(other)
    (other / MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match="annotation.json is unreadable"):
        load_annotations(other)
    (other / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not an annotation manifest"):
        run({**env, "out": other}, BAD)
    assert (other / "keep.txt").read_text() == "mine"


def test_damaged_shard_is_reported_and_rebuilt(env):
    import shutil

    run(env, BAD)
    m = read_manifest(env["out"])
    shutil.rmtree(env["out"] / "plugins" / BAD / m.plugins[BAD].key / m.shards[1].key)
    with pytest.raises(UserError, match="listed in the annotation manifest but missing"):
        load_annotations(env["out"])
    reset_calls()
    run(env, BAD)
    assert calls("bad") == 16
    assert len(load_annotations(env["out"], [BAD])) == 40


def test_other_source_into_same_out_is_refused(env, tmp_path):
    run(env, BAD)
    other = write_corpus(tmp_path / "other.jsonl", ["x"])
    with pytest.raises(UserError, match="annotates .*docs.jsonl, not .*other.jsonl; give another --out"):
        annotate(env["out"], BAD, data=str(other), workers=0, note=quiet)


def _cli_env(env) -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(env["site"]), str(REPO)]), "ANNOTATE_TEST_SLEEP": "0"}


def test_cli_bad_input_one_line_exit_2(env, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    r = run_cli("annotate", "--data", str(bad), "--plugins", BAD, "--out", str(tmp_path / "o"), env=_cli_env(env))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "bad.jsonl:2: not valid JSON" in r.stderr and not (tmp_path / "o").exists()
    r = run_cli("annotate", "--data", str(env["data"]), "--plugins", "safety.nope", "--out", str(tmp_path / "o"),
                env=_cli_env(env))
    assert r.returncode == 2 and "unknown plugin 'safety.nope'" in r.stderr and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted_run(env, tmp_path):
    """A real subprocess with two workers, killed with SIGKILL mid-run; the rerun resumes from
    the complete shards and the result equals an uninterrupted run."""
    texts = TEXTS * 3  # 120 documents, 12 shards of 10, batches of 5, 0.1 s per batch and plugin
    write_corpus(env["data"], texts)
    out = tmp_path / "killed"
    args = ["annotate", "--data", str(env["data"]), "--plugins", f"{BAD},{UGLY}", "--out", str(out),
            "--workers", "2", "--batch-size", "5", "--shard-size", "10", "--json"]
    cli_env = {**os.environ, **_cli_env(env), "ANNOTATE_TEST_SLEEP": "0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "ufarsap_engine", *args], env=cli_env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if (out / MANIFEST).exists():
            m = read_manifest(out)
            done = len(m.plugins.get(BAD).done) if BAD in m.plugins else 0
            if done >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; " + proc.stderr.read().decode()[-300:]
    os.killpg(proc.pid, signal.SIGKILL)  # the main process and its workers, no chance to clean up
    proc.wait()
    m = read_manifest(out)
    assert 2 <= len(m.plugins[BAD].done) < 12
    r = run_cli(*args, env=_cli_env(env), timeout=120)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert 0 < summary["scored_documents"] < 120  # resumed, not restarted
    reference = annotate(tmp_path / "ref", f"{BAD},{UGLY}", data=str(env["data"]), workers=0, batch_size=5,
                         shard_size=10, note=quiet)
    assert reference["scored_documents"] == 120
    assert load_annotations(out).to_dict() == load_annotations(tmp_path / "ref").to_dict()
    assert not [p for p in out.rglob(".tmp-*")], "no temporary shard is left behind"


def test_progress_plain_lines(env, capsys):
    from ufarsap_engine.annotate.progress import progress_reporter

    import io
    buf = io.StringIO()
    with progress_reporter(stream=buf) as update:
        run(env, BAD, progress=update)
    lines = buf.getvalue().splitlines()
    assert lines[-1].startswith("annotate: 40/40 documents (100%") and len(lines) <= 11


def test_run_killed_before_its_first_manifest_is_resumable(env):
    out = env["out"]
    (out / "base" / ".tmp-abc-1").mkdir(parents=True)  # what a kill during the first shard write leaves
    (out / ".annotate.lock").write_text("")
    assert run(env, BAD)["scored_documents"] == 40
    assert not list(out.rglob(".tmp-*")) and len(load_annotations(out)) == 40


def test_cli_pool_run_prints_a_table_and_plain_progress(env):
    r = run_cli("annotate", "--data", str(env["data"]), "--plugins", f"{BAD},{UGLY}", "--out", str(env["out"]),
                "--workers", "1", "--batch-size", "8", env=_cli_env(env), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "40 documents in 1 shard(s)" in r.stdout and "safety.ugly" in r.stdout and "annotated" in r.stdout
    assert r.stderr.splitlines()[-1].startswith("annotate: 40/40 documents (100%")
    assert len(load_annotations(env["out"], [BAD, UGLY])) == 40
    assert "--workers" in run_cli("annotate", "--help").stdout
