"""Data pipeline: formats, one-line errors, offsets kept for span mapping, deterministic and
resumable order. No Megatron, no processes: fast."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer_helpers.corpus import write_jsonl, write_text
from ufarsap_engine.errors import UserError
from ufarsap_engine.trainer.data import (
    DataSpec,
    PackedDataset,
    StepBatches,
    check_vocab,
    default_corpus_path,
    get_tokenizer,
    load_documents,
    load_tokenizer,
    make_batch,
    prepare_data,
    train_bpe_tokenizer,
)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_default_corpus_path_points_into_the_package():
    p = default_corpus_path()
    assert p.name == "corpus.jsonl" and p.parent.name == "embedded"


def test_jsonl_text_prompt_response_and_messages(tmp_path):
    f = tmp_path / "d.jsonl"
    recs = [
        {"id": "a", "text": "Plain text here."},
        {"id": "b", "prompt": "Question?", "response": "Answer."},
        {"id": "c", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    ]
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    docs = load_documents(DataSpec(path=str(f), loss_on="response"))
    assert [d.doc_id for d in docs] == ["a", "b", "c"]
    assert docs[0].loss_ranges is None
    b = docs[1]
    assert b.text == "Question?\nAnswer." and b.prompt == "Question?"
    (s, e), = b.loss_ranges
    assert b.text[s:e] == "Answer."
    c = docs[2]
    assert c.text == "user: Hi\nassistant: Hello!\n"
    (s, e), = c.loss_ranges
    assert c.text[s:e] == "Hello!\n"
    assert c.messages[1] == {"role": "assistant", "content": "Hello!"}


def test_loss_on_response_masks_prompt_tokens(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"prompt": "p" * 40 + " question", "response": " the answer is here"}) + "\n" for _ in range(20)))
    spec = DataSpec(path=str(f), loss_on="response")
    docs = load_documents(spec)
    ds = PackedDataset(docs, train_bpe_tokenizer((d.text for d in docs), 300), 16)
    b = make_batch(ds, np.arange(3), np.arange(3))
    for r in range(3):
        for t in range(16):
            d = ds.docs[int(b.label_doc[r, t])]
            start = int(b.label_char_start[r, t])
            in_response = start >= d.loss_ranges[0][0] or start == len(d.text)  # EOS counts
            assert bool(b.loss_mask[r, t]) == in_response


def test_text_file_documents_split_on_blank_lines(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("first doc line\nstill first\n\n\nsecond doc\n")
    docs = load_documents(DataSpec(path=str(f)))
    assert [d.text for d in docs] == ["first doc line\nstill first", "second doc"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "ok"}\n\n{"text": "broken\n')
    with pytest.raises(UserError) as e:
        load_documents(DataSpec(path=str(f)))
    assert one_line(e).startswith(f"{f}:3: not valid JSON")

    f.write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(UserError) as e:
        load_documents(DataSpec(path=str(f)))
    assert one_line(e).startswith(f"{f}:2: no 'text'")

    f.write_text('[1, 2]\n')
    with pytest.raises(UserError) as e:
        load_documents(DataSpec(path=str(f)))
    assert one_line(e) == f"{f}:1: expected a JSON object, got list"

    f.write_text('{"messages": [{"role": "user"}]}\n')
    with pytest.raises(UserError) as e:
        load_documents(DataSpec(path=str(f)))
    assert one_line(e) == f"{f}:1: messages[0] needs string 'role' and 'content'"


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        load_documents(DataSpec(path=str(tmp_path / "nope.jsonl")))
    assert one_line(e) == f"data file not found: {tmp_path / 'nope.jsonl'}"


def test_hf_dataset_without_datasets_package_says_how_to_fix(tmp_path):
    d = tmp_path / "hfds"
    d.mkdir()
    (d / "dataset_info.json").write_text("{}")
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(UserError) as e:
            load_documents(DataSpec(path=str(d)))
        assert "pip install datasets" in one_line(e)
    else:  # pragma: no cover - only where datasets is installed
        pytest.skip("datasets is installed here")


def test_tokenizer_larger_than_model_vocab_is_refused(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", 200)
    docs = load_documents(DataSpec(path=str(corpus)))
    tok = train_bpe_tokenizer((d.text for d in docs), 600)
    tok.save(tmp_path / "tokenizer.json")
    small = tok.vocab_size - 8
    with pytest.raises(UserError) as e:
        get_tokenizer(DataSpec(path=str(corpus), tokenizer=str(tmp_path)), docs, small, None, True)
    assert one_line(e) == (
        f"the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {small}; "
        f"use a model with vocab_size >= {tok.vocab_size}"
    )
    check_vocab(load_tokenizer(tmp_path / "tokenizer.json"), 1024)  # fits: no error


def test_trained_tokenizer_is_saved_and_reused(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", 200)
    run = tmp_path / "run"
    ds1 = prepare_data(DataSpec(path=str(corpus)), 512, 32, run)
    assert (run / "tokenizer.json").exists()
    ds2 = prepare_data(DataSpec(path=str(corpus)), 512, 32, run)
    assert np.array_equal(ds1.ids, ds2.ids)
    assert ds1.tokenizer.eos_id == ds2.tokenizer.eos_id


def test_blocks_keep_char_offsets_and_sources(tmp_path):
    corpus = write_text(tmp_path / "c.txt", 100)
    ds = prepare_data(DataSpec(path=str(corpus)), 512, 64, None)
    b = make_batch(ds, np.arange(4), np.array([3, 0, 7, 1]))
    assert b.tokens.shape == (4, 64) and b.labels.shape == (4, 64)
    assert (b.tokens[:, 1:] == b.labels[:, :-1]).all()
    tok = ds.tokenizer
    for r in range(4):
        for seg in b.segments[r]:
            ids = b.labels[r, seg.start : seg.end].tolist()
            ids = [i for i in ids if i != tok.eos_id]
            # the tokens of a segment decode to exactly the characters the segment says it covers
            assert tok.decode(ids) == seg.text[seg.char_start : seg.char_end]
        assert b.segments[r][0].start == 0 and b.segments[r][-1].end == 64


def test_span_weights_map_text_spans_onto_tokens(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["you are a total idiot and I mean it"] * 30))
    ds = prepare_data(DataSpec(path=str(f)), 300, 24, None)
    b = make_batch(ds, np.arange(1), np.array([0]))
    seg = b.segments[0][1]
    a = seg.text.index("idiot")
    w = b.span_weights(0, seg.doc_index, [(a, a + 5, 0.9)])
    flagged = [i for i in range(24) if w[i] > 0]
    assert flagged and all(b.label_doc[0, i] == seg.doc_index for i in flagged)
    text = ds.tokenizer.decode(b.labels[0, flagged].tolist())
    assert "idiot" in text and "total" not in text
    assert float(w.max()) == pytest.approx(0.9)


def test_order_is_deterministic_and_resumable(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", 300)
    ds = prepare_data(DataSpec(path=str(corpus)), 512, 32, None)
    a = StepBatches(ds, seed=7, global_batch=8, micro_batch=2, dp=1, dp_rank=0)
    steps = [[mb.block_ids.tolist() for mb in a.next_step()] for _ in range(5)]
    b = StepBatches(ds, seed=7, global_batch=8, micro_batch=2, dp=1, dp_rank=0)
    b.next_step(), b.next_step()
    state = b.state_dict()
    c = StepBatches(ds, seed=7, global_batch=8, micro_batch=2, dp=1, dp_rank=0)
    c.load_state_dict(json.loads(json.dumps(state)))
    assert [[mb.block_ids.tolist() for mb in c.next_step()] for _ in range(3)] == steps[2:]
    other = StepBatches(ds, seed=8, global_batch=8, micro_batch=2, dp=1, dp_rank=0)
    assert [mb.block_ids.tolist() for mb in other.next_step()] != steps[0]
    # DP ranks split the same global batch
    r0 = StepBatches(ds, seed=7, global_batch=8, micro_batch=2, dp=2, dp_rank=0).next_step()
    r1 = StepBatches(ds, seed=7, global_batch=8, micro_batch=2, dp=2, dp_rank=1).next_step()
    assert sum((mb.block_ids.tolist() for mb in r0 + r1), []) == sum(steps[0], [])


def test_epochs_cover_every_block_once(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", 60)
    ds = prepare_data(DataSpec(path=str(corpus)), 512, 32, None)
    sb = StepBatches(ds, seed=1, global_batch=1, micro_batch=1, dp=1, dp_rank=0)
    seen = [sb.next_step()[0].block_ids.item() for _ in range(ds.num_blocks)]
    assert sorted(seen) == list(range(ds.num_blocks))


def test_corpus_shorter_than_one_block_is_a_user_error(tmp_path):
    f = tmp_path / "tiny.jsonl"
    f.write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(UserError) as e:
        prepare_data(DataSpec(path=str(f)), 300, 128, None)
    assert "fewer than one block" in one_line(e)


def test_unigram_entropy_matches_counts(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", 100)
    ds = prepare_data(DataSpec(path=str(corpus)), 512, 32, None)
    used = ds.ids[1 : ds.num_blocks * 32 + 1]
    _, counts = np.unique(used, return_counts=True)
    p = counts / counts.sum()
    assert ds.unigram_entropy() == pytest.approx(float(-(p * np.log(p)).sum()))


def test_probe_documents_are_held_out_of_the_packed_dataset(tmp_path):
    """Long horizon: a run on the embedded corpus trains on neither evolution's probe sets nor
    its own probe documents (no probe id reaches the packed dataset)."""
    from ufarsap_engine.config import RunConfig
    from ufarsap_engine.evolution.probes import default_probe_ids
    from ufarsap_engine.run import trainer_configs
    from ufarsap_engine.trainer.data import heldout_documents

    cfg = RunConfig(out=str(tmp_path / "run"), steps=2, probe_documents=64)
    model_cfg, _, spec = trainer_configs(cfg)
    evolution_probes = set(default_probe_ids())
    assert set(spec.exclude_ids) == evolution_probes and len(evolution_probes) >= 200
    run_probes = {d.doc_id for d in heldout_documents(spec)}
    assert len(run_probes) == 64 and not run_probes & evolution_probes
    docs = load_documents(spec)
    ds = PackedDataset(docs, train_bpe_tokenizer([d.text for d in docs[:200]], 512), 64)
    packed = {ds.docs[i].doc_id for i in np.unique(ds.doc_of).tolist()}
    assert packed and not packed & (evolution_probes | run_probes)
    assert len(packed) + len(run_probes) + len(evolution_probes) == len(load_documents(DataSpec()))


def test_other_data_excludes_only_its_own_probe_documents(tmp_path):
    from ufarsap_engine.config import RunConfig
    from ufarsap_engine.run import trainer_configs
    from ufarsap_engine.trainer.data import heldout_documents

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document {i}."}) + "\n" for i in range(100)))
    _, _, spec = trainer_configs(RunConfig(data=str(data), out=str(tmp_path / "run"), probe_documents=5))
    assert spec.exclude_ids == []
    held = {d.doc_id for d in heldout_documents(spec)}
    train = {d.doc_id for d in load_documents(spec)}
    assert len(held) == 5 and not held & train and len(train) == 95
