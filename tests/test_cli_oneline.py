"""User mistakes and failures end in one line with the right exit status (2 user error,
1 failure), also with several processes; dotted plugin names work with --set."""

import json
import os

import pytest

from helpers import good_plugin_source, make_plugin_dist, run_cli, write_corpus
from ufarsap_engine import cli
from ufarsap_engine.config import load_config, parse_set
from ufarsap_engine.errors import UserError
from ufarsap_engine.trainer import data as data_module
from ufarsap_engine.trainer.data import DataSpec, load_tokenizer, read_documents


def one_line(res, code, *needles):
    assert res.returncode == code, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    lines = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith("run ")]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def env(tmp_path):
    return {"UFARSAP_REGISTRY_URL": f"sqlite:///{tmp_path / 'reg.sqlite'}"}


# --- --set with dotted plugin names (issue 10 item 9) ---------------------------------------

@pytest.mark.parametrize("key", ["plugin_params.safety.spam.max_links", 'plugin_params."safety.spam".max_links'])
def test_set_reaches_a_plugin_whose_name_has_a_dot(key):
    assert parse_set([f"{key}=5"]) == {"plugin_params": {"safety.spam": {"max_links": 5}}}
    assert load_config(None, [f"{key}=5"]).plugin_params == {"safety.spam": {"max_links": 5}}


def test_set_keeps_other_keys_and_nested_plugin_values():
    assert parse_set(["train.lr=3e-4", 'plugin_params.self.eval={"a": 1}', "plugin_params.self.eval.b.c=2"]) == {
        "train": {"lr": 3e-4}, "plugin_params": {"self.eval": {"a": 1, "b": {"c": 2}}}}
    with pytest.raises(UserError, match="cannot read the key"):
        parse_set(['plugin_params."safety.spam.x=1'])


def test_set_for_an_unselected_plugin_names_the_whole_plugin(tmp_path, env):
    res = run_cli("run", "--plugins", "none", "--no-train", "--steps", "1", "--out", str(tmp_path / "o"),
                  "--set", "plugin_params.safety.spam.max_links=5", cwd=tmp_path, env=env)
    line = one_line(res, 2, "safety.spam")
    assert "'safety'" not in line and not (tmp_path / "o").exists()


# --- one line, right exit status (issue 11 item 12) ------------------------------------------

def test_plugins_list_of_nothing_is_refused(tmp_path, env):
    for value in (",", "", "safety.toxicity,,safety.privacy"):
        res = run_cli("run", "--plugins", value, "--no-train", "--steps", "1", "--out", str(tmp_path / "o"),
                      cwd=tmp_path, env=env)
        one_line(res, 2, "empty plugin name", "'none'")
    assert not (tmp_path / "o").exists()


def test_out_pointing_at_a_file(tmp_path, env):
    (tmp_path / "afile").write_text("keep me")
    for out in ("afile", "afile/sub"):
        res = run_cli("run", "--plugins", "none", "--steps", "1", "--out", out, cwd=tmp_path, env=env)
        one_line(res, 2, "afile is a file, not a directory")
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize("name, content, line", [
    ("bad.txt", b"fine text\n\nmore fine text\nbroken \xff\xfe here\n", 4),
    ("bad.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', 2),
    ("bin.txt", b"text\n\x00\x01\x02binary\n", 2),
])
def test_non_utf8_or_binary_data_names_file_and_line(tmp_path, env, name, content, line):
    (tmp_path / name).write_bytes(content)
    res = run_cli("run", "--plugins", "none", "--no-train", "--steps", "1", "--data", name,
                  "--out", str(tmp_path / "o"), cwd=tmp_path, env=env)
    one_line(res, 2, f"{name}:{line}:")


def test_unreadable_data_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "secret.txt"
    path.write_text("some text\n")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data_module, "open", denied, raising=False)  # works as root too
    with pytest.raises(UserError, match="cannot read data file .*secret.txt: Permission denied"):
        read_documents(DataSpec(path=str(path)))
    rc = cli.main(["run", "--plugins", "none", "--no-train", "--steps", "1", "--data", str(path),
                   "--out", str(tmp_path / "o"), "--registry", f"sqlite:///{tmp_path / 'r.sqlite'}"])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert rc == 2 and len(err) == 1 and "Permission denied" in err[0]


def test_garbage_tokenizer_json(tmp_path, env):
    bad = tmp_path / "tok" / "tokenizer.json"
    bad.parent.mkdir()
    bad.write_text("garbage {")
    with pytest.raises(UserError, match="is not a valid tokenizer.json"):
        load_tokenizer(bad.parent)
    out = tmp_path / "o"
    out.mkdir()
    (out / "tokenizer.json").write_text("garbage {")
    res = run_cli("run", "--plugins", "none", "--steps", "1", "--out", str(out), cwd=tmp_path, env=env)
    one_line(res, 2, "tokenizer.json is not a valid tokenizer.json")


# --- several processes: once, not per rank ------------------------------------------------------

@pytest.fixture
def raiser(tmp_path, env):
    site = tmp_path / "site"
    make_plugin_dist(site, "raise-dist", {"multi.raiser": "raiseplug:Plugin"},
                     {"raiseplug": good_plugin_source(paradigm="multi").replace(
                         'Plugin.calls.append("document")', 'raise RuntimeError("evaluator exploded")')})
    return {**env, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@pytest.mark.slow
def test_raising_hook_under_two_processes_is_one_line(tmp_path, raiser):
    res = run_cli("run", "--plugins", "multi.raiser", "--nproc", "2", "--steps", "2", "--out", str(tmp_path / "o"),
                  cwd=tmp_path, env=raiser, timeout=500)
    one_line(res, 1, "multi.raiser", "ufarsap_score_document", "evaluator exploded")
    assert res.stdout == ""


@pytest.mark.slow
def test_two_processes_with_json_print_one_json_document(tmp_path, env):
    res = run_cli("run", "--plugins", "none", "--nproc", "2", "--steps", "2", "--out", str(tmp_path / "o"),
                  "--json", cwd=tmp_path, env=env, timeout=500)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)  # exactly one document: a second would not parse
    assert summary["status"] == "complete" and "summary" not in summary
