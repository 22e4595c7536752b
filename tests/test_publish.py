"""publish: the site's files, its regressions list, and the pages in a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from qkbench.cli import main
from qkbench.records.store import machine_name

from tests.test_compare import ENVIRONMENT, write_run
from tests.test_store import OTHER_MACHINE

RUNS = 10  # per machine; "other" gets 40% slower from run 5 on ENVIRONMENT's machine only
STEP_AT = 5


def fill_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    runs = []
    for machine_number, machine in enumerate((ENVIRONMENT, OTHER_MACHINE)):
        for i in range(RUNS):
            env = {**machine, "created_utc": f"2026-03-{i + 1:02d}T0{machine_number}:00:00+00:00",
                   "git": {"commit": f"{i:02d}" + "ab" * 19, "dirty": False}}
            slow = 1.4 if machine is ENVIRONMENT and i >= STEP_AT else 1.0
            runs.append(write_run(tmp_path / "runs" / f"m{machine_number}-{i:02d}",
                                  {("numpy", 256): 1e-3, ("other", 256): 2e-3 * slow},
                                  seed=100 * machine_number + i, environment=env))
    assert main(["store", "add", *map(str, runs), str(store)]) == 0
    return store


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("publish")
    store = fill_store(root)
    out = root / "site"
    assert main(["publish", str(store), "--out", str(out), "--normalize-by", "numpy",
                 "--commit-url", "https://example.org/repo/commit/{commit}"]) == 0
    return out


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)


def test_the_site_has_its_pages_and_every_local_link_resolves(site):
    assert {p.name for p in site.iterdir()} == {
        "index.html", "regressions.html", "regressions.json", "regressions.xml",
        "qkbench-chart.js", "style.css", "cells"}
    cells = sorted((site / "cells").glob("*.html"))
    assert len(cells) == 2  # one config, two cells (numpy and other at n=256)
    for page in [site / "index.html", site / "regressions.html", *cells]:
        parser = Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for link in parser.links:
            if link.startswith("https://"):
                assert link.startswith("https://example.org/repo/commit/")
                continue
            assert (page.parent / link).resolve().is_file(), f"{page.name} links {link}"
        assert page.stat().st_size < 2_000_000
        # Nothing is fetched from the network: no http(s) script or stylesheet.
        assert not re.search(r'<(script|link)[^>]+(src|href)="https?:', page.read_text())


def test_the_regressions_list_holds_the_known_step_only(site):
    listed = json.loads((site / "regressions.json").read_text())
    assert listed["normalize_by"] == "numpy"
    [step] = listed["regressions"]
    assert step["cell"].startswith("other float32 n=256")
    assert step["machine"] == machine_name(ENVIRONMENT)
    assert step["commit"] == f"{STEP_AT:02d}" + "ab" * 5  # the first slow run's commit
    assert step["change"] == pytest.approx(0.4, abs=0.05)
    feed = (site / "regressions.xml").read_text()
    assert feed.count("<entry>") == 1 and "other float32 n=256" in feed
    page = (site / "regressions.html").read_text()
    assert page.count('class="qk-regression"') == 1
    assert f'https://example.org/repo/commit/{STEP_AT:02d}{"ab" * 5}' in page


def test_a_fixed_slowdown_is_no_longer_open(tmp_path):
    store = fill_store(tmp_path)
    # Three more runs where "other" is back to its old time: the step is closed.
    for i in range(RUNS, RUNS + 4):
        env = {**ENVIRONMENT, "created_utc": f"2026-03-{i + 1:02d}T00:00:00+00:00",
               "git": {"commit": f"{i:02d}" + "cd" * 19, "dirty": False}}
        run = write_run(tmp_path / "later" / f"r{i}", {("numpy", 256): 1e-3,
                                                       ("other", 256): 2e-3}, seed=i,
                        environment=env)
        assert main(["store", "add", str(run), str(store)]) == 0
    out = tmp_path / "site"
    assert main(["publish", str(store), "--out", str(out), "--normalize-by", "numpy"]) == 0
    assert json.loads((out / "regressions.json").read_text())["regressions"] == []


def test_each_cell_page_carries_every_machine_and_both_views(site):
    pages = sorted((site / "cells").glob("other-*.html"))
    [page] = [p for p in pages if "n-256" in p.name]
    text = page.read_text()
    data = json.loads(re.search(r'<script id="qk-data" type="application/json">(.*?)</script>',
                                text, re.DOTALL).group(1))
    assert {s["machine"] for s in data["series"]} == {machine_name(ENVIRONMENT),
                                                      machine_name(OTHER_MACHINE)}
    assert all(len(s["points"]) == RUNS for s in data["series"])
    stepped = [s for s in data["series"] if s["machine"] == machine_name(ENVIRONMENT)][0]
    assert [m["i"] for m in stepped["steps"]["norm"]] == [STEP_AT]
    assert [m["i"] for m in stepped["steps"]["raw"]] == [STEP_AT]
    assert all(p["vn"] == pytest.approx(p["v"] / 1e-3, rel=0.1) for p in stepped["points"])


def test_bad_requests_are_one_line(tmp_path, capsys):
    store = fill_store(tmp_path)
    assert main(["publish", str(store), "--out", str(tmp_path / "s"),
                 "--normalize-by", "nope"]) == 2
    assert "no stored run has that backend" in capsys.readouterr().err
    assert main(["publish", str(store), "--out", str(tmp_path / "s"),
                 "--commit-url", "https://x/"]) == 2
    assert main(["publish", str(tmp_path / "none"), "--out", str(tmp_path / "s")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["publish", str(tmp_path / "empty"), "--out", str(tmp_path / "s")]) == 2
    assert "holds no runs" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# In a real browser: the distribution's Chromium, headless, reading the pages from file://.

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it: apt-get install "
    "chromium)")


def browse(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and every console message it printed."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}",
         "--window-size=1200,900", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


@needs_chromium
def test_a_cell_page_draws_its_chart_and_step_in_a_browser(site, tmp_path):
    [page] = [p for p in (site / "cells").glob("other-*.html") if "n-256" in p.name]
    dom, console = browse(page, tmp_path / "profile")
    assert console == []  # no error, no warning, nothing printed
    assert '<svg' in dom and dom.count('class="qk-point"') == 2 * RUNS
    assert dom.count('class="qk-step qk-slower"') == 1
    assert 'class="qk-step-marker"' in dom
    assert "normalised (÷ numpy)" in dom and "raw time" in dom


@needs_chromium
def test_the_index_and_regressions_pages_in_a_browser(site, tmp_path):
    dom, console = browse(site / "index.html", tmp_path / "profile")
    assert console == [] and dom.count('class="qk-badge"') == 1
    dom, console = browse(site / "regressions.html", tmp_path / "profile")
    assert console == []
    rows = re.findall(r'<tr class="qk-regression">(.*?)</tr>', dom, re.DOTALL)
    assert len(rows) == 1 and "other float32 n=256" in rows[0] and "+4" in rows[0]



def test_a_store_given_by_a_relative_path(tmp_path, monkeypatch):
    fill_store(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["publish", "store", "--out", "site", "--detector", "segmentation"]) == 0
    [step] = json.loads((tmp_path / "site" / "regressions.json").read_text())["regressions"]
    assert step["view"] == "raw" and step["commit"] == f"{STEP_AT:02d}" + "ab" * 5
