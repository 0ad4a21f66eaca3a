"""``ufarsap-engine dashboard`` against a registry filled by a real evolving run.

Fast: every page answers; bad input (unknown ids and runs, malformed and SQL-looking query
values, path traversal, a registry that disappears) gets a clear error page or status and the
server keeps serving; changes are refused without the write token or CSRF token.
Slow: a real headless Chromium (Debian's ``chromium`` + ``chromedriver``) renders the pages of
a trained evolving run, sees a plot drawn, activates a strategy with the token; screenshots go to
``UFARSAP_SCREENSHOTS`` (``docs/dashboard/`` holds the committed ones).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from helpers import run_cli

TOKEN = "dashboard-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(registry_url: str, runs: Path, token: str | None = TOKEN):
    port = free_port()
    args = [sys.executable, "-m", "ufarsap_engine", "dashboard", "--registry", registry_url, "--runs", str(runs),
            "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "UFARSAP_DASHBOARD_TOKEN"}
    if token:
        args += ["--write-token", token]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(base + "/plugins", timeout=5)
            return proc, base
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read())
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the dashboard did not start")


def get(url: str, opener=None):
    """(status, body) without raising on error statuses."""
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def evolving_run(tmp: Path, train: bool) -> tuple[str, Path]:
    """A registry filled by a real ``run --evolve`` (candidates, a rejection or integration,
    lineage) and its run directory under ``tmp/runs``."""
    url = f"sqlite:///{tmp / 'reg.sqlite'}"
    args = ["run", "--evolve", "--plugins", "safety.toxicity", "--steps", "20" if train else "30",
            "--set", "round_steps=10", "--set", "evolution.population_size=2", "--out", str(tmp / "runs" / "evolving"),
            "--registry", url, "--json"]
    res = run_cli(*args, *([] if train else ["--no-train"]), cwd=tmp, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return url, tmp / "runs"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dash")
    url, runs = evolving_run(tmp, train=False)
    proc, base = start_dashboard(url, runs)
    yield base, tmp, url
    proc.terminate()
    proc.wait(timeout=30)


def test_every_page_renders_from_an_evolved_registry(served):
    base, _, url = served
    from ufarsap_registry import open_registry

    with open_registry(url, read_only=True) as reg:
        strategies = reg.list()
        candidate = next(r for r in strategies if r.origin != "manual")
    status, body = get(base + "/strategies")
    assert status == 200 and f'href="/strategies/{candidate.id}"' in body
    status, body = get(base + "/strategies?metric=objective&order=asc&per_page=2")
    assert status == 200 and '<th class="num chosen">objective</th>' in body and "page 1 of" in body
    status, body = get(base + f"/strategies/{candidate.id}")
    assert status == 200 and 'id="lineage"' in body and "safety.toxicity" in body
    for path, marker in (("/runs", "evolving"), ("/runs/evolving", 'id="align-plot"'),
                         ("/evolution", 'id="rounds"'), ("/plugins", "safety.toxicity")):
        status, body = get(base + path)
        assert status == 200 and marker in body, (path, body[:500])
    status, body = get(base + "/runs/evolving/metrics.json?since=25")
    assert status == 200 and [m["step"] for m in json.loads(body)["metrics"]] == list(range(26, 31))


@pytest.mark.parametrize("path,status,says", [
    ("/strategies/999999", 404, "no strategy with id 999999"),
    ("/strategies/abc", 404, "no strategy with id"),
    ("/strategies?page=abc", 400, "'page' must be a whole number"),
    ("/strategies?per_page=100000", 400, "'per_page' must be between 1 and 500"),
    ("/strategies?min=1", 400, "need a 'metric'"),
    ("/strategies?metric=objective&max=nan", 400, "'max' must be a finite number"),
    ("/strategies?state=complete'%20OR%20'1'='1", 400, "'state' must be one of"),
    ("/runs/nosuchrun", 404, "no run named 'nosuchrun'"),
    ("/runs/..%2F..%2Fetc%2Fpasswd", 404, "not found"),
    ("/runs/.lock", 404, "no run named"),
    ("/runs/evolving/metrics.json?since=-1", 400, "'since' must be between"),
])
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(served, path, status, says):
    base, _, _ = served
    got, body = get(base + path)
    assert got == status and (says in body or says.replace("'", "&#39;") in body), (got, body[:800])
    assert "Traceback" not in body
    assert get(base + "/strategies")[0] == 200


def test_sql_looking_filter_values_are_values(served):
    """A plugin or metric filter with SQL in it matches nothing and changes nothing."""
    base, _, url = served
    from ufarsap_registry import open_registry

    with open_registry(url, read_only=True) as reg:
        before = [(r.id, r.lifecycle) for r in reg.list()]
    for q in ("plugin=x'%20OR%20'1'='1", "metric=objective'%3B%20DROP%20TABLE%20strategies%3B--",
              "scope=default'%20OR%201%3D1--"):
        status, body = get(base + "/strategies?" + q)
        assert status == 200 and "no strategy matches" in body, q
    with open_registry(url, read_only=True) as reg:
        assert [(r.id, r.lifecycle) for r in reg.list()] == before


def post(base: str, path: str, fields: dict, opener):
    data = urllib.parse.urlencode(fields).encode()
    try:
        with opener.open(urllib.request.Request(base + path, data=data, method="POST"), timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_changes_need_the_write_token_and_the_csrf_token(served):
    base, _, url = served
    from ufarsap_registry import open_registry

    with open_registry(url, read_only=True) as reg:
        target = next(r for r in reg.list(state="complete") if r.lifecycle in ("proposed", "retired"))
    jar = CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    get(base + f"/strategies/{target.id}", browser)  # sets the CSRF cookie
    csrf = next(c.value for c in jar if c.name == "ufarsap_csrf")
    path = f"/strategies/{target.id}/activate"
    assert post(base, path, {"csrf": csrf, "token": "wrong"}, browser)[0] == 403
    status, body = post(base, path, {"token": TOKEN, "csrf": "forged"}, browser)
    assert status == 403 and "CSRF" in body
    stranger = urllib.request.build_opener()  # another site's form: no cookie
    assert post(base, path, {"token": TOKEN, "csrf": csrf}, stranger)[0] == 403
    with open_registry(url, read_only=True) as reg:
        assert reg.get(target.id).lifecycle == target.lifecycle  # nothing changed
    status, body = post(base, path, {"token": TOKEN, "csrf": csrf}, browser)
    assert status == 200 and f"strategy {target.id} activated" in body, body[-1500:]
    with open_registry(url, read_only=True) as reg:
        assert reg.get(target.id).lifecycle == "active"


def test_a_read_only_dashboard_refuses_changes(served):
    _, tmp, url = served
    proc, base = start_dashboard(url, tmp / "runs", token=None)
    try:
        jar = CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        status, body = get(base + "/strategies/1", browser)
        assert status == 200 and 'id="activate"' not in body
        csrf = next(c.value for c in jar if c.name == "ufarsap_csrf")
        status, body = post(base, "/strategies/1/retire", {"token": TOKEN, "csrf": csrf}, browser)
        assert status == 403 and "read-only" in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_registry_that_disappears_is_a_503_page_and_comes_back(served):
    base, tmp, _ = served
    db = tmp / "reg.sqlite"
    aside = tmp / "reg.aside"
    shutil.move(db, aside)
    try:
        status, body = get(base + "/strategies")
        assert status == 503 and "registry unavailable" in body and "Traceback" not in body
        assert get(base + "/runs")[0] == 200  # pages that need no registry still work
    finally:
        shutil.move(aside, db)
    assert get(base + "/strategies")[0] == 200


def test_bad_startup_arguments_are_one_line(tmp_path):
    res = run_cli("dashboard", "--registry", f"sqlite:///{tmp_path / 'none.sqlite'}")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "no registry at" in res.stderr
    assert not (tmp_path / "none.sqlite").exists()
    res = run_cli("dashboard", "--port", "70000")
    assert res.returncode == 2 and "70000" in res.stderr


# -- a real browser -------------------------------------------------------------------------

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                                      "(apt-get install chromium chromium-driver; .ci/run does)")
def test_a_headless_browser_sees_the_pages_a_plot_and_activates_with_the_token(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    url, runs = evolving_run(tmp_path, train=True)
    shots = Path(os.environ.get("UFARSAP_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    proc, base = start_dashboard(url, runs)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download a driver
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        from ufarsap_registry import open_registry

        with open_registry(url, read_only=True) as reg:
            target = next(r for r in reg.list(state="complete") if r.lifecycle in ("proposed", "retired"))
        driver.get(base + "/strategies?metric=objective")
        assert driver.find_element(By.CSS_SELECTOR, "th.chosen").text == "objective"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#strategies tbody tr")) >= 2
        driver.save_screenshot(str(shots / "strategies.png"))

        driver.get(base + "/runs/evolving")
        plot = driver.find_element(By.CSS_SELECTOR, "#loss-plot svg")
        assert plot.size["width"] > 300 and driver.find_elements(By.CSS_SELECTOR, "#loss-plot svg path")
        driver.save_screenshot(str(shots / "run.png"))

        driver.get(base + "/evolution")
        assert driver.find_elements(By.CSS_SELECTOR, "#rounds tbody tr")
        driver.save_screenshot(str(shots / "evolution.png"))

        driver.get(base + f"/strategies/{target.id}")
        driver.find_element(By.ID, "activate").click()  # no token typed: refused
        assert "wrong write token" in driver.find_element(By.ID, "error-detail").text
        driver.get(base + f"/strategies/{target.id}")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "activate").click()
        assert f"strategy {target.id} activated" in driver.find_element(By.ID, "done").text
        driver.save_screenshot(str(shots / "strategy.png"))
        with open_registry(url, read_only=True) as reg:
            assert reg.active_strategy().id == target.id
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.postgres
def test_the_dashboard_serves_a_postgresql_registry(pg_registry_url, tmp_path):
    from ufarsap_registry import open_registry

    with open_registry(pg_registry_url) as reg:
        root = reg.add_strategy(plugins=["safety.toxicity"], params={}, origin="seed", state="complete")
        child = reg.add_strategy(plugins=["safety.toxicity", "safety.privacy"], params={"x": 1}, origin="explore",
                                 parent_id=root, state="complete")
        reg.record_scores(root, {"objective": 0.4}, step=10)
        reg.record_scores(child, {"objective": 0.5}, step=10)
        reg.record_scores(child, {"objective": 0.6}, step=20)
    (tmp_path / "runs").mkdir()
    proc, base = start_dashboard(pg_registry_url, tmp_path / "runs")
    try:
        status, body = get(base + "/strategies?metric=objective")
        assert status == 200 and body.index(f'href="/strategies/{child}"') < body.index(f'href="/strategies/{root}"')
        assert "ufarsap:ufarsap@" not in body  # the password is never shown
        status, body = get(base + f"/strategies/{child}")
        assert status == 200 and 'id="scores-plot"' in body and f'href="/strategies/{root}"' in body
        jar = CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        get(base + f"/strategies/{child}", browser)
        csrf = next(c.value for c in jar if c.name == "ufarsap_csrf")
        assert post(base, f"/strategies/{child}/activate", {"token": TOKEN, "csrf": csrf}, browser)[0] == 200
        with open_registry(pg_registry_url, read_only=True) as reg:
            assert reg.active_strategy().id == child
    finally:
        proc.terminate()
        proc.wait(timeout=30)
