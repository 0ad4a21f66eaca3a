"""A tiny model really learns: its loss ends clearly below the corpus unigram entropy."""

from __future__ import annotations

import json

import pytest

from trainer_helpers import run
from trainer_helpers.corpus import write_jsonl
from ufarsap_engine.trainer.data import DataSpec, PackedDataset, load_documents, load_tokenizer
from ufarsap_engine.trainer.model_config import PRESETS

pytestmark = pytest.mark.slow


def test_tiny_model_beats_unigram_entropy(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", 400)
    out = tmp_path / "run"
    spec = run.spec(tmp_path / "s.json",
                    train={"steps": 60, "micro_batch_size": 4, "global_batch_size": 8, "lr": 3e-3, "warmup_steps": 5,
                           "out_dir": str(out)},
                    data={"path": str(corpus)})
    p = run.run_single(spec, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    docs = load_documents(DataSpec(path=str(corpus)))
    ds = PackedDataset(docs, load_tokenizer(out / "tokenizer.json"), PRESETS["tiny"]["seq_length"])
    entropy = ds.unigram_entropy()  # nats, from token counts of the training blocks
    losses = run.losses(out)
    final = sum(losses[-5:]) / 5
    assert losses[0] > entropy  # starts near log(vocab)
    assert final < entropy - 0.5, (final, entropy)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["end_step"] == 60 and summary["tokens_per_s"] > 0
