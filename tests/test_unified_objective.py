"""The unified objective in real training runs (CLI, tiny model, CPU):

- Eq. 5: the logged total is L_LM + sum lambda_i L_i + lambda_coord L_coord + lambda_emerge L_emerge
  (+ the interaction network's own prediction loss), step by step;
- each objective family lowers the probability of flagged tokens versus MLE on a toy corpus
  (loss-side: in the training batches; data-side: in held-out contexts, on the checkpoints);
- the same per-step losses at TP=1, TP=2 and PP=2 (torchrun);
- a plugin returning NaN during training stops the run naming the plugin and hook.
"""

import json
import os
import random
import subprocess
import sys

import pytest

from helpers import make_plugin_dist, run_cli
from trainer_helpers import run as trainer_run

pytestmark = pytest.mark.slow

MARKER_PLUGIN = '''
from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import PluginInfo, ScaleScores, Span

class Plugin:
    """Flags the made-up word 'zorblax' (token spans) and documents containing it."""

    @hookimpl
    def ufarsap_plugin_info(self):
        return PluginInfo(paradigm="safety", description="flags zorblax", scales=["token", "document"],
                          horizons=["short", "long"])

    @hookimpl
    def ufarsap_score_token(self, batch):
        spans = []
        for s in batch.samples:
            out, i = [], s.text.find("zorblax")
            while i >= 0:
                out.append(Span(start=i, end=i + 7, severity=1.0, label="zorblax"))
                i = s.text.find("zorblax", i + 1)
            spans.append(out)
        return ScaleScores(sample_scores=[0.0 if sp else 1.0 for sp in spans], spans=spans)

    @hookimpl
    def ufarsap_score_document(self, batch):
        return ScaleScores(sample_scores=[{doc_score} for s in batch.samples])
'''

WORDS = ("the river keeper walks along the old stone bridge while gulls circle above the quiet harbour "
         "and children read books under tall green trees near the market square").split()


def toy_corpus(path, n=240, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(25, 45))]
            if i % 3 == 0:  # a third of the documents say the flagged word, often
                for _ in range(4):
                    words.insert(rng.randrange(len(words)), "zorblax")
            f.write(json.dumps({"id": f"toy{i}", "text": " ".join(words) + "."}) + "\n")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("unified")
    site = root / "site"
    make_plugin_dist(site, "zorb-dist", {"safety.zorb": "zorbplug:Plugin"},
                     {"zorbplug": MARKER_PLUGIN.format(doc_score="0.0 if 'zorblax' in s.text else 1.0")})
    make_plugin_dist(site, "nan-dist", {"safety.nanny": "nanplug:Plugin"},
                     {"nanplug": MARKER_PLUGIN.format(doc_score="float('nan')")})
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(root.parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return root, env, toy_corpus(root / "toy.jsonl")


def train(world, name, *extra, steps=3, nproc=1):
    root, env, corpus = world
    args = ["run", "--data", str(corpus), "--steps", str(steps), "--out", str(root / name), "--registry",
            f"sqlite:///{root / (name + '.sqlite')}", "--json", "--nproc", str(nproc),
            "--set", "train.micro_batch_size=2", "--set", "train.global_batch_size=4",
            "--set", "probe_documents=8", *extra]
    res = run_cli(*args, cwd=root, env=env, timeout=400)
    return res, trainer_run.metrics(root / name) if (root / name / "metrics.jsonl").exists() else []


def test_eq5_total_is_the_weighted_sum_of_the_logged_terms(world):
    res, metrics = train(world, "eq5", "--plugins", "safety.zorb", steps=4)
    assert res.returncode == 0, res.stderr[-2000:]
    for m in metrics:
        expected = (m["loss.lm"] + 0.2 * m["loss.safety"] + 0.15 * m["loss.coord"] + 0.05 * m["loss.emerge"]
                    + 1.0 * m.get("loss.interact", 0.0))
        assert m["loss"] == pytest.approx(expected, rel=1e-4)
        assert {"orch.w.token.short", "orch.w.document.long", "state.short.safety", "emergence.score", "O.safety"} \
            <= set(m) or m["step"] == 1
    assert metrics[-1]["orch.w.token.short"] != metrics[1]["orch.w.token.short"]  # learned weights move


FAMILY_RUN = ["--plugins", "safety.zorb", "--set", "objective.mode=individual", "--set", "objective.coordination=false",
              "--set", "objective.emergence=false", "--set", "train.lr=0.01", "--set", "train.min_lr=0.01",
              "--set", "objective.lambda_paradigm=1.0"]


@pytest.fixture(scope="module")
def mle_run(world):
    res, metrics = train(world, "mle", *FAMILY_RUN, "--set", "objective.families.safety=none", steps=40)
    assert res.returncode == 0, res.stderr[-2000:]
    return metrics


@pytest.mark.parametrize("family", ["unlikelihood", "rwr", "filtering", "mask"])
def test_each_family_lowers_flagged_probability_versus_mle(world, mle_run, family):
    """Same seed, data and steps: the mean probability the model gives the flagged (token-scale)
    tokens of the training batches over the last 10 steps is lower than under MLE."""
    res, aligned = train(world, family, *FAMILY_RUN, "--set", f"objective.families.safety={family}", steps=40)
    assert res.returncode == 0, res.stderr[-2000:]
    tail = lambda ms: sum(m["flagged_p.token"] for m in ms[-10:]) / 10  # noqa: E731
    assert tail(aligned) < 0.5 * tail(mle_run), (family, tail(aligned), tail(mle_run))


def probe_word(world, name):
    """p("zorblax") after held-out contexts, and the share of sampled continuations saying it,
    from the run's final checkpoint (see ``trainer_helpers/word_probe.py``)."""
    root, env, _ = world
    rng = random.Random(99)  # contexts no training document has
    contexts = root / "contexts.json"
    contexts.write_text(json.dumps([" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
                                    for _ in range(32)]))
    p = subprocess.run([sys.executable, "-m", "trainer_helpers.word_probe", str(root / name / "checkpoints"),
                        str(contexts), "zorblax"], env=trainer_run.env() | env | {
                            "PYTHONPATH": os.pathsep.join([str(trainer_run.TESTS_DIR), env["PYTHONPATH"]])},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


# Data-side families are learnt through the context (conditional: the control token many tokens
# back), which this tiny model only picks up at a lower learning rate than the loss-side runs use.
DATA_RUN = ["--plugins", "safety.zorb", "--set", "objective.mode=individual", "--set", "objective.coordination=false",
            "--set", "objective.emergence=false", "--set", "train.lr=0.003", "--set", "train.min_lr=0.003"]
DATA_STEPS = 150


@pytest.fixture(scope="module")
def mle_probe(world):
    res, _ = train(world, "mle_data", *DATA_RUN, "--set", "objective.families.safety=none", steps=DATA_STEPS)
    assert res.returncode == 0, res.stderr[-2000:]
    return probe_word(world, "mle_data")


@pytest.mark.parametrize("family", ["conditional", "hidden", "tags"])
def test_each_data_side_family_lowers_flagged_probability_versus_mle(world, mle_probe, family):
    """Data-side families change the training tokens, so they are measured on the trained models
    (same seed, data and steps as MLE): the probability of the flagged word after held-out contexts
    (conditional: after <|aligned|>) and, for tags, with tag-aware decoding, how often sampled
    continuations say it."""
    res, _ = train(world, family, *DATA_RUN, "--set", f"objective.families.safety={family}", steps=DATA_STEPS)
    assert res.returncode == 0, res.stderr[-2000:]
    marked = json.loads(res.stdout)["data_family"]
    assert marked["family"] == family and marked["documents"] == 240
    if family == "conditional":
        assert marked["misaligned"] == 80  # the toy corpus's zorblax third, by the marker plugin
    else:
        assert marked["flagged_documents"] == 80 and marked["flagged_spans"] >= 4 * 80 - 10
    got = probe_word(world, family)
    assert got["p_word"] < 0.5 * mle_probe["p_word"], (family, got, mle_probe)
    if family == "tags":
        assert got["tag_aware"] and mle_probe["gen_rate"] > 0.1
        assert got["gen_rate"] < 0.5 * mle_probe["gen_rate"], (got, mle_probe)


def test_same_losses_at_tp1_tp2_pp2(world):
    root, env, corpus = world
    base = trainer_run.spec(root / "base.json", train={"steps": 0, "out_dir": str(root / "base")},
                            data={"path": str(corpus), "holdout_documents": 8, "holdout_seed": 1234})
    p = trainer_run.run_single(base)
    assert p.returncode == 0, p.stderr[-2000:]
    init = ["--set", f"train.init_from={root / 'base' / 'checkpoints' / 'iter_0000000'}",
            "--plugins", "safety.zorb", "--set", "train.clip_grad=0"]
    runs = {}
    for name, flags, nproc in (("tp1", [], 1), ("tp2", ["--tp", "2"], 2), ("pp2", ["--pp", "2"], 2)):
        res, metrics = train(world, name, *init, *flags, steps=3, nproc=nproc)
        assert res.returncode == 0, (name, res.stderr[-3000:])
        runs[name] = metrics
    for key in ("loss", "loss.lm", "loss.safety", "loss.coord", "loss.emerge"):
        ref = [m[key] for m in runs["tp1"]]
        for name in ("tp2", "pp2"):
            got = [m[key] for m in runs[name]]
            assert got == pytest.approx(ref, rel=1e-5), (key, name, got, ref)


def test_plugin_returning_nan_stops_training_naming_it(world):
    res, _ = train(world, "nan", "--plugins", "safety.nanny", steps=2)
    assert res.returncode == 1
    assert "safety.nanny" in res.stderr and "ufarsap_score_document" in res.stderr and "finite" in res.stderr
    assert "Traceback" not in res.stderr
