"""The plugin in CONTRIBUTING.md works as printed: a third-party plugin with a sentence and a
document hook, loaded through an entry point and run by the engine."""

import importlib
import importlib.util
import json
import re
import sys

import pytest

from helpers import REPO, make_plugin_dist
from ufarsap_engine.alignment.scoring import score_batch
from ufarsap_engine.config import RunConfig
from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.run import execute, prepare
from ufarsap_engine.schemas import AlignmentState, Horizon, TextBatch
from ufarsap_engine.text import make_sample, split_sentences

NAME = "safety.capslock"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "CONTRIBUTING.md").read_text(), re.S)


@pytest.fixture
def capslock(tmp_path, monkeypatch):
    plugin_src = python_blocks()[0]
    root = make_plugin_dist(tmp_path / "site", "capslock-dist", {NAME: "ufarsap_capslock:CapsLockPlugin"},
                            {"ufarsap_capslock": plugin_src})
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    yield plugin_src
    sys.modules.pop("ufarsap_capslock", None)


def test_the_example_is_short_and_complete(capslock):
    assert len(capslock.strip().splitlines()) < 40
    assert "ufarsap_score_sentence" in capslock and "ufarsap_score_document" in capslock


def test_engine_runs_both_hooks_of_the_example(capslock):
    host = PluginHost([NAME])
    texts = ["A calm sentence. Another calm one.", "Fine, calm words here. STOP IT!", "ALL CAPS EVERYWHERE"]
    batch = TextBatch(samples=[make_sample(f"s{i}", t) for i, t in enumerate(texts)])
    cells = score_batch(host, batch, Horizon.SHORT, AlignmentState())  # checks shapes and ranges too
    assert not host.quarantined
    sentence, document = cells.results[(NAME, "sentence")], cells.results[(NAME, "document")]
    assert sentence.unit_scores == [[1.0, 1.0], [1.0, 0.0], [0.0]]
    assert [len(u) for u in sentence.unit_scores] == [len(s.sentences) for s in batch.samples]
    assert sentence.sample_scores == [1.0, 0.0, 0.0]
    assert document.sample_scores == [1.0, 1.0, 0.0]


def test_the_testing_snippet_runs(capslock):
    namespace: dict = {}
    exec(capslock, namespace)
    exec(python_blocks()[1], namespace)  # asserts inside the snippet


def test_split_sentences_is_the_engines_splitter():
    text = "One. Two!  Three?\nFour"
    assert make_sample("x", text).sentences == split_sentences(text)
    assert [text[a:b] for a, b in split_sentences(text)] == ["One.", "Two!", "Three?", "Four"]


def test_one_sentence_rule_for_engine_plugins_and_benchmark():
    """The plugins' detector units are the engine's sentences cut to a length; the benchmark's
    judges split with the same rule."""
    from ufarsap_engine.bench.judges import sentences
    from ufarsap_plugins._common import split_sentences as plugin_units

    text = '  He said "stop." Then left!\npi is 3.14, e.g.x fine...  ' + "word " * 300 + "end."
    engine = split_sentences(text)
    assert [text[a:b] for a, b in engine[:3]] == ['He said "stop."', "Then left!", "pi is 3.14, e.g.x fine..."]
    units = plugin_units(text, limit=200)
    assert all(b - a <= 200 for a, b in units) and len(units) > len(engine)
    # every unit lies in one engine sentence, and together they cover each sentence's text
    for a, b in engine:
        inside = [(x, y) for x, y in units if a <= x and y <= b]
        assert "".join(text[x:y] for x, y in inside).replace(" ", "") == text[a:b].replace(" ", "")
    short = "One. Two!  Three?\nFour"
    assert plugin_units(short) == split_sentences(short)  # sentences under the limit are the units
    assert sentences(text) == [text[a:b] for a, b in engine]


def test_scores_show_up_under_the_documented_keys(capslock, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in
                              enumerate(["Calm words here. More calm words."] * 10 + ["NO MORE SHOUTING. Please."] * 10)))
    cfg = RunConfig(plugins=[NAME], data=str(corpus), steps=2, batch_samples=4, train_model=False,
                    out=str(tmp_path / "run"), registry=f"sqlite:///{tmp_path / 'reg.sqlite'}")
    summary = execute(prepare(cfg))
    assert summary["status"] == "complete"
    step = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert {f"score.{NAME}.sentence", f"score.{NAME}.document"} <= set(step)


def test_eval_script_scores_a_third_party_plugin_on_labelled_data(capslock):
    spec = importlib.util.spec_from_file_location("eval_plugins_script", REPO / "scripts" / "eval_plugins.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    res = script.evaluate("dev", [NAME], label="toxicity")["plugins"][NAME]
    assert res["positives"] > 0 and set(res["document"]) >= {"precision", "recall", "f1"}
    with pytest.raises(SystemExit, match="--label"):
        script.evaluate("dev", [NAME])
