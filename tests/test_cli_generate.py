"""`generate` and `evaluate` on a run directory, as scripts use them (--json)."""

import json

import pytest

from helpers import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    res = run_cli("run", "--plugins", "none", "--steps", "20", "--out", str(root / "run"),
                  "--registry", f"sqlite:///{root / 'r.sqlite'}", "--json", cwd=root, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return root


def test_generate_json_lines_from_a_run_directory(run_dir):
    prompts = run_dir / "p.jsonl"
    prompts.write_text('{"prompt": "The grey heron"}\n{"prompt": "Add the flour"}\n')
    res = run_cli("generate", "--checkpoint", str(run_dir / "run"), "--prompts", str(prompts), "--num-samples", "2",
                  "--max-new-tokens", "8", "--json", cwd=run_dir)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [(r["prompt"], r["sample_index"]) for r in rows] == [
        ("The grey heron", 0), ("The grey heron", 1), ("Add the flour", 0), ("Add the flour", 1)]
    assert all(isinstance(r["text"], str) and r["text"] for r in rows)
    greedy = [run_cli("generate", "--checkpoint", str(run_dir / "run"), "--prompt", "The grey heron", "--temperature",
                      "0", "--max-new-tokens", "8", "--json", cwd=run_dir).stdout for _ in range(2)]
    assert greedy[0] == greedy[1]


def test_evaluate_reports_loss_and_perplexity(run_dir):
    data = run_dir / "held.txt"
    data.write_text("The grey heron is a bird that lives in marshes.\n\nAdd the flour and stir gently.\n")
    res = run_cli("evaluate", "--checkpoint", str(run_dir / "run"), "--data", str(data), "--json", cwd=run_dir)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["tokens"] > 10 and 0 < out["loss"] < 10 and out["perplexity"] == pytest.approx(2.718281828 ** out["loss"], rel=1e-6)


def test_bad_prompt_files_say_which_line(run_dir):
    bad = run_dir / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    res = run_cli("generate", "--checkpoint", str(run_dir / "run"), "--prompts", str(bad), cwd=run_dir)
    assert res.returncode == 2 and f"{bad}:2:" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("generate", "--checkpoint", str(run_dir / "nope"), "--prompt", "x", cwd=run_dir)
    assert res.returncode == 2 and "checkpoint not found" in res.stderr


def test_evaluate_shows_progress_when_output_is_not_a_terminal(run_dir):
    data = run_dir / "held2.txt"
    data.write_text("\n\n".join(f"Paragraph {i}: the grey heron waits by the water." for i in range(40)) + "\n")
    res = run_cli("evaluate", "--checkpoint", str(run_dir / "run"), "--data", str(data), cwd=run_dir)
    assert res.returncode == 0, res.stderr
    lines = [x for x in res.stderr.splitlines() if x.startswith("evaluate: ")]
    assert lines and lines[-1].startswith("evaluate: ") and "batches" in lines[-1]
    done, total = lines[-1].split()[1].split("/")
    assert done == total  # the last line reports the end
    assert res.stdout.startswith("loss ")
