"""Objective families: the data-side marks (labels by the strictest plugin, flagged spans), packing
with control / hidden / tag tokens, special tokens of the tokenizer, tag-aware steering, and the
bad-input lines. Training with each family is in ``test_unified_objective.py`` (slow)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ufarsap_engine.alignment.conditional import ALIGNED, MISALIGNED
from ufarsap_engine.alignment.data_families import (HARMFUL, HIDDEN, build_marks, document_label, embedded_truth,
                                                    flagged_char_spans, label_quality, marks_summary, merge_spans)
from ufarsap_engine.alignment.objectives import FAMILIES
from ufarsap_engine.config import ObjectiveConfig, load_config
from ufarsap_engine.errors import UserError
from ufarsap_engine.schemas import PluginInfo
from ufarsap_engine.trainer.data import (Document, Marks, PackedDataset, ensure_special_tokens, load_marks,
                                         load_tokenizer, make_batch, special_tokens, train_bpe_tokenizer)
from ufarsap_engine.trainer.generate import steer_from_tag

SAFETY5 = ["safety.toxicity", "safety.privacy", "safety.misinformation", "safety.bias", "safety.adversarial"]
TEXT = "the river keeper walks. he says zorblax twice zorblax. then home."


def row(**plugin_cols):
    """An annotation row (the columns ``annotate`` writes) for TEXT."""
    return {"id": "d0", "text": TEXT, "sentences": [[0, 23], [24, 53], [54, 64]], **plugin_cols}


def clean(p):
    return {f"{p}:token": 1.0, f"{p}:sentence": 1.0, f"{p}:document": 1.0,
            f"{p}:sentence_units": [1.0, 1.0, 1.0], f"{p}:spans": []}


def test_label_is_the_strictest_plugin_not_the_mean():
    cols = {k: v for p in SAFETY5 for k, v in clean(p).items()}
    assert document_label(row(**cols), SAFETY5, 0.5) is False
    # one detector finds one harm in one sentence: the mean over five is 0.94, the document is misaligned
    cols["safety.privacy:sentence_units"] = [1.0, 0.3, 1.0]
    cols["safety.privacy:sentence"] = 0.7
    assert document_label(row(**cols), SAFETY5, 0.5) is True
    assert document_label(row(**cols), [p for p in SAFETY5 if p != "safety.privacy"], 0.5) is False
    spans_only = {**clean("safety.toxicity"), "safety.toxicity:spans": [[32, 39]]}
    assert document_label(row(**spans_only), ["safety.toxicity"], 0.5) is True
    doc_only = {"reflect.x:document": 0.2}
    assert document_label(row(**doc_only), ["reflect.x"], 0.5) is True
    assert document_label(row(**doc_only), ["reflect.x"], 0.1) is False
    assert document_label(row(**{"reflect.x:document": None}), ["reflect.x"], 0.5) is False  # no opinion


def test_flagged_char_spans_merge_spans_and_flagged_sentences():
    cols = {**clean("safety.a"), "safety.a:spans": [[32, 39], [46, 53]],
            **clean("safety.b"), "safety.b:sentence_units": [1.0, 1.0, 0.2]}
    assert flagged_char_spans(row(**cols), ["safety.a", "safety.b"], 0.5) == [(32, 39), (46, 53), (54, 64)]
    assert flagged_char_spans(row(**cols), ["safety.a"], 0.5) == [(32, 39), (46, 53)]
    assert merge_spans([(5, 9), (0, 3), (3, 4), (8, 12), (20, 20)]) == [(0, 4), (5, 12)]


def test_build_marks_summary_and_label_quality():
    rows = [row(**{**clean("safety.a"), "safety.a:spans": [[32, 39]]}) | {"id": "bad"},
            row(**clean("safety.a")) | {"id": "good"}, row(**clean("safety.a")) | {"id": "missed"}]
    rows[2]["safety.a:document"] = 0.9
    marks = build_marks("conditional", rows, ["safety.a"], 0.5)
    assert {i: d["prefix"] for i, d in marks["documents"].items()} == {"bad": MISALIGNED, "good": ALIGNED,
                                                                       "missed": ALIGNED}
    assert marks["special_tokens"] == [ALIGNED, MISALIGNED] and marks["documents"]["bad"]["chars"] == len(TEXT)
    assert marks_summary(marks)["misaligned"] == 1
    q = label_quality(marks, {"bad": True, "good": False, "missed": True, "other": True})
    assert (q["documents"], q["precision"], q["recall"], q["harmful_share"]) == (3, 1.0, 0.5, 0.6667)
    assert label_quality(marks, {"x": True}) is None
    tags = build_marks("tags", rows, ["safety.a"], 0.5)
    assert tags["documents"]["bad"]["tag"] == [[32, 39]] and marks_summary(tags)["flagged_spans"] == 1
    assert Marks.model_validate(tags).documents["good"].tag == []


def test_embedded_truth_reads_the_corpus_labels():
    from ufarsap_engine.trainer.data import default_corpus_path

    truth = embedded_truth(default_corpus_path().with_name("labels.jsonl"))
    assert len(truth) == 2350 and 0.3 < sum(truth.values()) / len(truth) < 0.7


@pytest.fixture(scope="module")
def tok():
    texts = [TEXT, "hello there friend of the river", "zorblax zorblax the keeper"] * 20
    return train_bpe_tokenizer(texts, 400, [ALIGNED, MISALIGNED, HIDDEN, HARMFUL])


def pack(tok, docs_marks, seq=8):
    docs = [Document(i, t) for i, (t, _) in docs_marks.items()]
    marks = Marks(family="x", special_tokens=[], documents={i: m for i, (_, m) in docs_marks.items()})
    return PackedDataset(docs, tok, seq, marks)


def test_control_and_special_tokens_are_single_tokens(tok):
    for t in (ALIGNED, MISALIGNED, HIDDEN, HARMFUL):
        assert tok.encode(t) == [tok.token_to_id(t)]
    ds = pack(tok, {"a": (TEXT, {"prefix": MISALIGNED}), "b": ("hello there", {"prefix": ALIGNED})})
    plain = tok.encode(TEXT)
    assert ds.ids[:len(plain) + 2].tolist() == [tok.token_to_id(MISALIGNED), *plain, tok.eos_id]
    assert ds.ids[len(plain) + 2] == tok.token_to_id(ALIGNED)
    assert (ds.char_start[0], ds.char_end[0]) == (0, 0)


def test_hidden_replaces_exactly_the_flagged_tokens(tok):
    a = TEXT.index("zorblax")
    ds = pack(tok, {"a": (TEXT, {"hide": [(a, a + 7)]})})
    ids, offs = tok.encode_batch_with_offsets([TEXT])[0]
    hit = [(s < a + 7 and e > a) for s, e in offs]
    assert sum(hit) >= 1
    got = ds.ids[:len(ids)]
    assert all((g == tok.token_to_id(HIDDEN)) == h for g, h in zip(got, hit))
    assert [g for g, h in zip(got, hit) if not h] == [t for t, h in zip(ids, hit) if not h]
    assert TEXT.count("zorblax") == 2 and tok.decode(ds.ids).count("zorblax") == 1  # the second one is kept


def test_tags_go_before_each_flagged_span_and_spans_still_map(tok):
    a, b = TEXT.index("zorblax"), TEXT.rindex("zorblax")
    ds = pack(tok, {"a": (TEXT, {"tag": [(a, a + 7), (b, b + 7)]}), "b": ("hello there friend", {})}, seq=12)
    text = tok.decode(ds.ids)
    assert text.count(HARMFUL) == 2 and text.count(HARMFUL + " zorblax") == 2
    assert len(ds.ids) == len(tok.encode(TEXT)) + len(tok.encode("hello there friend")) + 2 + 2
    # the trainer's span -> token mapping still finds the flagged word, not the tag
    batch = make_batch(ds, np.array([0]), np.array([0]))
    w = batch.span_weights(0, 0, [(a, a + 7, 1.0)])
    labels = batch.labels[0][w > 0].tolist()
    assert labels and HARMFUL not in tok.decode(labels) and "zorblax" in tok.decode(labels)


def test_marks_refuse_a_changed_document(tok):
    with pytest.raises(UserError, match="has 5 characters but 9"):
        pack(tok, {"a": ("hello", {"chars": 9, "prefix": ALIGNED})})
    docs = [Document("zz", "hello")]
    with pytest.raises(UserError, match="no entry for document 'zz'"):
        PackedDataset(docs, tok, 2, Marks(family="x", special_tokens=[], documents={}))


def test_marks_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"family": "tags"}))
    with pytest.raises(UserError, match="is not a marks file") as e:
        load_marks(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="cannot read the marks file"):
        load_marks(tmp_path / "none.json")


def test_a_loaded_tokenizer_gets_the_special_tokens_if_the_vocab_has_room(tmp_path):
    base = train_bpe_tokenizer([TEXT] * 10, 300)
    base.save(tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    n = loaded.vocab_size
    with pytest.raises(UserError, match=rf"no room for the special tokens {ALIGNED}, {MISALIGNED}.*vocab_size >= {n + 2}"):
        ensure_special_tokens(loaded, [ALIGNED, MISALIGNED], n + 1)
    ensure_special_tokens(loaded, [ALIGNED, MISALIGNED], n + 2)
    assert loaded.vocab_size == n + 2 and {ALIGNED, MISALIGNED} <= special_tokens(loaded)
    assert loaded.encode(ALIGNED + "the") == [n, *loaded.encode("the")]


def test_steer_from_tag_drops_tag_prone_candidates_and_down_weights_the_rest():
    last = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    cand = torch.tensor([[0, 1, 2], [1, 2, 3]])
    p_tag = torch.tensor([[0.9, 0.2, 0.0], [0.8, 0.7, 0.9]])
    out = steer_from_tag(last, cand, p_tag, threshold=0.5)
    assert out[0, 0] == float("-inf") and out[0, 3] == float("-inf")  # tag-prone, and not a candidate
    assert out[0, 1] == pytest.approx(1.0 + np.log(0.8)) and out[0, 2] == pytest.approx(0.0)
    assert torch.isfinite(out[1]).tolist() == [False, False, True, False]  # all over: the least tag-prone stays


def test_condition_on_training_reads_the_family_from_the_tokenizer(tok):
    from ufarsap_engine.trainer.generate import SamplingParams
    from ufarsap_engine.trainer.worker import condition_on_training

    prompts, params = condition_on_training(tok, ["the river", [5, 6]])
    assert prompts == [ALIGNED + "the river", [tok.token_to_id(ALIGNED), 5, 6]]
    assert params.tag_aware and params.tag_token_id == tok.token_to_id(HARMFUL)
    assert condition_on_training(tok, ["x"], SamplingParams(tag_aware=False))[1].tag_aware is False
    plain = train_bpe_tokenizer([TEXT] * 10, 300)
    prompts, params = condition_on_training(plain, ["the river"])
    assert prompts == ["the river"] and not params.tag_aware
    with pytest.raises(UserError, match="needs a checkpoint trained with harmfulness tags"):
        condition_on_training(plain, ["x"], SamplingParams(tag_aware=True))


def test_every_family_is_a_valid_objective_setting():
    for f in FAMILIES:
        assert ObjectiveConfig(families={"safety": f}).families["safety"] == f


def test_an_unknown_family_is_one_line_listing_the_valid_ones():
    with pytest.raises(UserError) as e:
        load_config(sets=["objective.families.safety=hiden"])
    msg = str(e.value)
    assert "\n" not in msg and "objective.families.safety" in msg
    assert all(f"'{f}'" in msg for f in FAMILIES)


def _host(**plugins):
    return SimpleNamespace(names=list(plugins), info={
        n: PluginInfo(paradigm=n.split(".")[0], description="t", scales=s, horizons=["short"]) for n, s in plugins.items()})


def test_data_side_family_checks_its_plugins():
    from ufarsap_engine.run import check_data_family

    cfg = load_config(sets=["objective.families.safety=hidden"])
    with pytest.raises(UserError, match="no selected safety plugin flags spans") as e:
        check_data_family(cfg, _host(**{"safety.doc": ["document"]}))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="needs at least one selected safety plugin"):
        check_data_family(cfg, _host(**{"self.eval": ["sentence"]}))
    assert check_data_family(cfg, _host(**{"safety.sent": ["sentence"], "self.eval": ["document"]})) == \
        ("hidden", ["safety.sent"])
    cond = load_config(sets=["objective.families.safety=conditional"])
    assert check_data_family(cond, _host(**{"safety.doc": ["document"]})) == ("conditional", ["safety.doc"])
    two = load_config(sets=["objective.families.safety=tags", "objective.families.reflect=conditional"])
    with pytest.raises(UserError, match="only one paradigm may use one"):
        check_data_family(two, _host(**{"safety.doc": ["token"]}))
    assert check_data_family(load_config(), _host(**{"safety.doc": ["token"]})) is None


@pytest.mark.parametrize("scale,score,spans,units", [
    ("token", 0.9, [object()], None), ("token", 0.1, [], None), ("sentence", 0.9, None, [1.0, 0.2]),
    ("sentence", 0.2, None, [0.9, 0.8]), ("document", 0.3, None, None), ("document", 0.7, None, None),
    ("document", None, None, None)])
def test_the_benchmark_conditional_score_is_the_strictest_rule(scale, score, spans, units):
    """``conditional.score_documents`` (the benchmark's path) labels by the same rule as ``run``."""
    from ufarsap_engine.alignment.conditional import strictest_score
    from ufarsap_engine.alignment.scoring import is_flagged

    v = strictest_score(scale, score, spans, units)
    assert (v is not None and v < 0.5) == is_flagged(scale, score, spans, units, 0.5)


def test_cli_bad_family_settings_are_one_line_exit_2(tmp_path):
    from helpers import run_cli

    base = ["run", "--steps", "1", "--out", str(tmp_path / "r"), "--registry", f"sqlite:///{tmp_path / 'r.sqlite'}"]
    res = run_cli(*base, "--plugins", "self.reward", "--set", "objective.families.self=hidden", cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    line = res.stderr.strip()
    assert "\n" not in line and "objective.families.self=hidden" in line and "flags spans" in line
    res = run_cli(*base, "--plugins", "self.reward", "--set", "objective.families.safety=tagz", cwd=tmp_path)
    assert res.returncode == 2 and "'tags'" in res.stderr and "'conditional'" in res.stderr
    assert not (tmp_path / "r" / "annotations").exists()


@pytest.mark.slow
def test_conditional_labels_on_the_embedded_corpus_match_its_harmful_share(tmp_path):
    """Five safety plugins, strictest rule: close to the corpus's harmful share (not 0%), with
    precision and recall against its labels in the summary."""
    from helpers import run_cli

    res = run_cli("run", "--steps", "1", "--out", str(tmp_path / "r"), "--registry", f"sqlite:///{tmp_path / 'r.sqlite'}",
                  "--plugins", ",".join(SAFETY5), "--set", "objective.families.safety=conditional", "--json",
                  "--set", "train.micro_batch_size=2", "--set", "train.global_batch_size=2", cwd=tmp_path,
                  env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    fam = json.loads(res.stdout)["data_family"]
    q = fam["labels_vs_truth"]
    assert fam["documents"] == q["documents"] == 2350
    assert abs(q["misaligned_share"] - q["harmful_share"]) < 0.15 and q["precision"] > 0.8 and q["recall"] > 0.9
    assert "precision" in res.stderr and "<|misaligned|>" in res.stderr
    assert (tmp_path / "r" / "data_marks.json").exists() and (tmp_path / "r" / "annotations" / "annotation.json").exists()
