"""Bad input at the command line: one clear line, a non-zero exit, nothing stored lost."""

import json
import os
import sqlite3

import pytest

from helpers import good_plugin_source, make_plugin_dist, run_cli


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A working directory with a registry holding one finished run, and fake plugins on the path
    (shared by the tests: each compares the registry before and after its own command)."""
    tmp_path = tmp_path_factory.mktemp("cli_errors")
    site = tmp_path / "site"
    make_plugin_dist(site, "broken-dist", {"safety.broken": "brokenplug:Plugin"},
                     {"brokenplug": "import module_that_does_not_exist\n"})
    make_plugin_dist(site, "raise-dist", {"multi.raiser": "raiseplug:Plugin"},
                     {"raiseplug": good_plugin_source(paradigm="multi").replace(
                         'Plugin.calls.append("document")', 'raise RuntimeError("evaluator exploded")')})
    make_plugin_dist(site, "good-dist", {"safety.good": "goodplug:Plugin"}, {"goodplug": good_plugin_source()})
    corpus = tmp_path / "c.txt"
    corpus.write_text("A calm paragraph.\n\nA bad paragraph.\n\nAnother calm one.\n")
    reg = tmp_path / "reg.sqlite"
    env = {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "UFARSAP_REGISTRY_URL": f"sqlite:///{reg}"}
    res = run_cli("run", "--plugins", "safety.good", "--no-train", "--steps", "2", "--data", str(corpus),
                  "--out", str(tmp_path / "first"), cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    return tmp_path, env, corpus, reg


def snapshot(reg):
    con = sqlite3.connect(reg)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("runs", "strategies", "scores", "lineage_events", "strategy_plugins")}
    finally:
        con.close()


def assert_one_line_error(res, code, *needles):
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = [x for x in res.stderr.splitlines() if x.strip() and "run " not in x[:5]]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("args, code, needles", [
    (["run", "--plugins", "safety.goood"], 2, ["unknown plugin 'safety.goood'", "did you mean safety.good"]),
    (["run", "--plugins", "Safety..x"], 2, ["not a valid plugin name"]),
    (["run", "--plugins", "safety.broken"], 1, ["safety.broken", "broken-dist", "module_that_does_not_exist"]),
    (["run", "--steps", "0"], 2, ["steps", "greater than or equal to 1"]),
    (["run", "--set", "objective.lambda_coord=-1"], 2, ["objective.lambda_coord"]),
    (["run", "--set", "no_such_key=1"], 2, ["no_such_key: unknown setting"]),
    (["run", "--config", "missing.toml"], 2, ["config file missing.toml does not exist"]),
    (["run", "--tp", "3"], 2, ["--tp 3 does not divide"]),
    (["run", "--device", "cuda"], 2, ["cuda"]),
    (["run", "--data", "nope.jsonl"], 2, ["nope.jsonl"]),
    (["registry", "show", "999"], 2, ["no strategy with id 999"]),
    (["registry", "list", "--state", "x'; DROP TABLE strategies;--"], 2, ["state"]),
    (["registry", "activate", "999"], 2, ["no strategy with id 999"]),
    (["registry", "list", "--top", "3"], 2, ["--metric"]),
    (["run", "--bogus-flag"], 2, ["No such option"]),
])
def test_bad_input(world, args, code, needles):
    tmp, env, corpus, reg = world
    before = snapshot(reg)
    res = run_cli(*args, cwd=tmp, env=env)
    assert_one_line_error(res, code, *needles)
    assert snapshot(reg) == before


def test_sql_looking_filter_values_match_nothing(world):
    tmp, env, _, reg = world
    before = snapshot(reg)
    res = run_cli("registry", "list", "--plugin", "x'; DROP TABLE strategies;--", "--json", cwd=tmp, env=env)
    assert res.returncode == 0 and json.loads(res.stdout) == {"registry": str(reg), "strategies": []}
    assert snapshot(reg) == before


def test_hook_raising_names_plugin_and_hook_and_keeps_old_records(world):
    tmp, env, corpus, reg = world
    before = snapshot(reg)
    res = run_cli("run", "--plugins", "multi.raiser", "--no-train", "--steps", "2", "--data", str(corpus),
                  "--out", str(tmp / "second"), cwd=tmp, env=env)
    assert_one_line_error(res, 1, "multi.raiser", "ufarsap_score_document", "evaluator exploded")
    after = snapshot(reg)
    for table, rows in before.items():
        assert set(rows) <= set(after[table]), f"{table} lost rows"
    failed = [r for r in after["strategies"] if r not in before["strategies"]]
    assert len(failed) == 1 and "failed" in failed[0]


def test_tolerant_run_quarantines_the_raising_plugin(world):
    tmp, env, corpus, _ = world
    res = run_cli("run", "--plugins", "multi.raiser,safety.good", "--tolerant", "--no-train", "--steps", "2",
                  "--data", str(corpus), "--out", str(tmp / "third"), "--json", cwd=tmp, env=env)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["plugins"] == ["multi.raiser", "safety.good"] and "multi.raiser" in summary["quarantined"]


@pytest.mark.parametrize("url, needle", [
    ("postgresql+psycopg://nobody@127.0.0.1:1/x", "unavailable"),
    ("sqlite:////nonexistent/dir/x.db", "nonexistent"),
    ("notadb://x", "notadb"),
])
def test_registry_url_that_cannot_be_opened(world, url, needle):
    tmp, env, _, _ = world
    res = run_cli("registry", "list", "--registry", url, cwd=tmp, env=env)
    assert_one_line_error(res, 2, needle)


def test_unreadable_config_file(world):
    tmp, env, _, _ = world
    bad = tmp / "bad.toml"
    bad.write_text("steps = [unclosed\n")
    assert_one_line_error(run_cli("run", "--config", str(bad), cwd=tmp, env=env), 2, "not valid TOML")
    bad.write_bytes(b"\xff\xfe\x00garbage")
    assert_one_line_error(run_cli("run", "--config", str(bad), cwd=tmp, env=env), 2, "cannot read config file")


def test_registry_at_an_unknown_schema_revision_is_refused(world):
    """(A registry at an older revision is refused with the upgrade command: see
    test_registry_schema.py, which builds one with a real extra migration.)"""
    tmp, env, _, reg = world
    old = tmp / "old.sqlite"
    old.write_bytes(reg.read_bytes())
    con = sqlite3.connect(old)
    con.execute("UPDATE ufarsap_alembic_version SET version_num = '0000_ancient'")
    con.commit()
    con.close()
    res = run_cli("registry", "list", "--registry", f"sqlite:///{old}", cwd=tmp, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "registry" in res.stderr and ("upgrade" in res.stderr or "newer" in res.stderr)


def test_help_everywhere():
    for args in (["--help"], ["run", "--help"], ["plugins", "--help"], ["registry", "--help"],
                 ["registry", "list", "--help"], ["registry", "show", "--help"], ["registry", "best", "--help"],
                 ["registry", "lineage", "--help"], ["registry", "activate", "--help"],
                 ["registry", "retire", "--help"], ["registry", "upgrade", "--help"], ["version", "--help"],
                 ["evolution", "report", "--help"]):
        res = run_cli(*args)
        assert res.returncode == 0 and "Usage:" in res.stdout, args
