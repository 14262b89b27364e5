"""``ftbroker report``: a job's or a plan's report as one HTML file, from a real ledger (an OpenAI fine-tune on the
loopback fake, evaluated; a local job of the scripted trainer) and the plan ``plan --json`` prints; then the same
files opened in a real headless Chromium (marked ``browser``): the charts drawn, nothing asked of the network, no
script error, a hostile job name inert, a phone's width with no sideways scrolling, and a print."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from reportsupport import HOSTILE, ledger_with_jobs, plan_json

import ftbroker
from ftbroker import svg
from ftbroker.cli import cli
from ftbroker.ledger import Ledger
from ftbroker.report_html import job_html
from ftbroker.reporting import job_data

DAY = date(2026, 11, 28)  # conftest.CATALOG_DAY: the shipped OpenAI route is open on it


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(home, {"openai": id, "local": id}, plan.json): built once for the module (a real fine-tune, an evaluation
    and a plan take some seconds)."""
    work = tmp_path_factory.mktemp("report")
    home = work / "home"
    jobs = ledger_with_jobs(home, work, DAY)
    return home, jobs, plan_json(work / "plan.json", DAY, home)


def report(home: Path, *args, ok=(0,)):
    done = CliRunner(env={"FTBROKER_HOME": str(home)}).invoke(cli, ["report", *map(str, args)])
    assert done.exit_code in ok, (done.exit_code, done.output, done.exception)
    assert "Traceback" not in done.output
    return done


# --- the HTML, without a browser ---------------------------------------------------------------------------------

def test_a_job_report_shows_its_curves_figures_and_evaluation_with_their_sources(made, tmp_path):
    home, jobs, _ = made
    out = tmp_path / "job.html"
    assert report(home, jobs["openai"][:7], "-o", out).output.strip() == f"report: {out}"
    page = out.read_text()
    with Ledger(home / "ledger.sqlite3") as ledger:
        data = job_data(ledger, jobs["openai"])
    train = [p for p in data["metrics"] if p["name"] == "train_loss"]
    valid = [p for p in data["metrics"] if p["name"] == "eval_loss"]
    assert len(train) > 3 and valid  # the fake reports both curves
    assert 'data-name="train loss"' in page and 'data-name="eval loss"' in page
    assert page.count("<circle") >= len(valid)  # every eval point marked
    ev = data["evaluation"]
    assert ev["overall"]["exact_match"] == {"base": 0.0, "tuned": 1.0, "applies": 6.0}
    assert "<td>exact match</td><td class=\"num\">0.0%</td><td class=\"num\">100.0%</td>" in page
    assert f"ftbroker eval {ev['id']}" in page and "claude-haiku-5-5" in page  # the evaluation's source, its judge
    assert f"${data['job']['estimated_cost_usd']:,.4f} <span class=\"muted\">[quote]</span>" in page
    assert f"the curves openai reported for its job {data['job']['remote']['job_id']}" in page and "points in the ledger&#x27;s metrics table" in page
    # self-contained: no script, nothing fetched from elsewhere
    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_a_local_job_compares_the_estimate_with_the_trainer_and_escapes_its_name(made, tmp_path):
    home, jobs, _ = made
    page = report(home, jobs["local"], "-o", tmp_path / "local.html") and (tmp_path / "local.html").read_text()
    with Ledger(home / "ledger.sqlite3") as ledger:
        resources = ledger.get(jobs["local"]).resources
    assert resources["estimated_gpu"] == "RTX-4090" and "measured_peak_rss_gib" in resources
    assert f"{resources['estimated_peak_vram_gib']:.3g} GiB" in page
    assert f"ran on the CPU: peak memory {resources['measured_peak_rss_gib']:.3g} GiB (RSS)" in page
    assert f"{resources['measured_tokens_per_s']:,.0f} tokens/s" in page and "[trainer] measured by the trainer" in page
    assert page.count("measured on the CPU, estimated for RTX-4090: not comparable") == 2  # throughput, time
    assert not re.search(r'<td class="num">[0-9.]+x</td>', page)  # no ratio of a CPU run to a GPU estimate
    assert "the estimate for RTX-4090" in page and "events.jsonl" in page
    assert HOSTILE not in page and "&lt;script&gt;pwned=1&lt;/script&gt;" in page
    assert "<script" not in page and "<img" not in page


def test_a_plan_report_draws_every_priced_route_and_names_each_price_source(made, tmp_path):
    home, _, plan_file = made
    out = tmp_path / "plan.html"
    report(home, "--plan", plan_file, "-o", out)
    page, doc = out.read_text(), json.loads(plan_file.read_text())
    priced = [r for r in doc["routes"] if r["feasible"] and r["cost_usd"]]
    marks = len(re.findall(r'class="point"', page))
    fronted = [b for b in doc["best"] if next(r for r in doc["routes"] if r["number"] == b["number"])["hours"]]
    assert marks == len(priced) + len(fronted) and len(fronted) >= 2
    numbers = {r["number"]: r for r in doc["routes"]}
    for best in doc["best"]:
        route = numbers[best["number"]]
        assert route["id"] in page and f"{route['price_source']}, as of {route['price_as_of']}" in page
    assert "your budget $2.00" in page and "your deadline 3 h" in page
    assert doc["catalog"]["version"] in page and "support_chats.jsonl" in page


def test_the_last_plan_is_reported_without_naming_a_file(made, tmp_path, monkeypatch):
    plan_file = made[2]
    mine = tmp_path / "home"
    CliRunner(env={"FTBROKER_HOME": str(mine), "FTBROKER_NOW": DAY.isoformat()}).invoke(
        cli, ["plan", str(Path(json.loads(plan_file.read_text())["dataset"]["path"])), "--model", "Qwen2.5-7B",
              "--json"])
    monkeypatch.chdir(tmp_path)
    assert report(mine, "--plan").output.strip() == "report: plan.html"
    assert "last-plan.json" in (tmp_path / "plan.html").read_text()


def test_bad_requests_are_exit_2_and_write_nothing(made, tmp_path):
    home, jobs, plan_file = made
    assert "give a JOB" in report(home, ok=(2,)).output
    assert "not both" in report(home, jobs["local"], "--plan", plan_file, ok=(2,)).output
    assert "no job ftb-nosuchjob" in report(home, "ftb-nosuchjob", ok=(2,)).output
    not_a_plan = tmp_path / "x.json"
    not_a_plan.write_text('{"routes": 3}')
    assert "not a plan this ftbroker wrote" in report(home, "--plan", not_a_plan, ok=(2,)).output
    assert "no such plan file" in report(home, "--plan", tmp_path / "none.json", ok=(2,)).output
    not_a_plan.write_text('{"routes": [{"number": 1}], "files": {}}')
    assert f"{not_a_plan}: not a plan this ftbroker wrote (KeyError: " in report(home, "--plan", not_a_plan,
                                                                                ok=(2,)).output
    out = report(home, jobs["local"], "-o", tmp_path / "no-such-folder" / "r.html", ok=(2,)).output
    assert "the report cannot be written" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_the_sdk_reports_a_job_and_a_plan_it_made(made, tmp_path):
    home, jobs, plan_file = made
    written = ftbroker.report(jobs["openai"], tmp_path / "job.html", home=home)
    assert written == tmp_path / "job.html" and "Evaluation" in written.read_text()
    plan = ftbroker.plan(Path(json.loads(plan_file.read_text())["dataset"]["path"]), models=["Qwen2.5-7B"],
                         method="qlora", today=DAY)
    page = ftbroker.report(plan=plan, output=tmp_path / "plan.html").read_text()
    assert "ftbroker.plan()" in page and plan.best[0].route.id in page


def test_a_run_measured_on_the_card_it_was_estimated_for_is_compared_figure_by_figure():
    resources = {"estimated_gpu": "H100-SXM", "estimated_allocated_gib": 20.0, "estimated_peak_vram_gib": 23.5,
                 "estimated_tokens_per_s": 4000.0, "estimated_hours": 0.5, "measured_peak_vram_allocated_gib": 22.0,
                 "measured_peak_vram_reserved_gib": 24.0, "measured_tokens_per_s": 3000.0,
                 "measured_train_seconds": 2400.0, "measured_gpu": "NVIDIA H100 80GB HBM3", "stack": "ftbroker"}
    job = {"id": "ftb-x", "backend": "local", "model": "m", "method": "lora", "status": "succeeded",
           "spec": {"dataset": "/d/a.jsonl", "name": None}, "resources": resources, "estimated_cost_usd": 1.25,
           "actual_cost_usd": None}
    page = job_html({"job": job, "metrics": [], "metrics_source": "s", "measured_on": "H100-SXM", "ledger": "l",
                     "generated": "now"})
    ratios = re.findall(r'<td class="num">([0-9.]+)x</td>', page)
    assert ratios == ["1.10", "0.75", "1.33"]  # allocated VRAM, throughput, time (2400 s of an estimated 0.5 h)
    assert "not divided: the estimate counts the CUDA context" in page and "24 GiB" in page
    assert "$1.25 <span" in page and "no charge reported" in page and "not comparable" not in page


def test_a_job_that_reported_nothing_yet_says_so():
    job = {"id": "ftb-x", "backend": "openai", "model": "m", "method": "lora", "status": "queued",
           "spec": {"dataset": "/d/a.jsonl", "name": None}, "resources": {}, "estimated_cost_usd": None}
    page = job_html({"job": job, "metrics": [], "metrics_source": "s", "ledger": "l", "generated": "now"})
    assert "No loss was reported" in page and "<svg" not in page


def test_log_axes_tick_at_one_two_five():
    scale = svg._Scale(0.13, 0.46, 0, 100, log=True)
    assert [label for _, label in scale.ticks()] == ["0.1", "0.2", "0.5"]
    assert scale(0.1) == 0 and scale(0.5) == pytest.approx(100)
    wide = svg._Scale(0.03, 300, 0, 100, log=True)  # past three decades: the decades alone
    assert [label for _, label in wide.ticks()] == ["0.1", "1", "10", "100"]
    assert wide(0.02) == 0 and wide(500) == pytest.approx(100)  # out to the nearest 1, 2 or 5 x 10^k


# --- in a real browser -------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright (never `playwright install`: it downloads), with a fresh profile."""
    if CHROMIUM is None:
        if os.environ.get("FTBROKER_BROWSER_TESTS") == "required":  # CI installed it: a skip would hide a failure
            pytest.fail("FTBROKER_BROWSER_TESTS=required and no chromium on PATH")
        pytest.skip("no chromium on PATH (apt-get install chromium; CI installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    with tempfile.TemporaryDirectory(prefix="ftb-chromium-") as profile, sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=FLAGS,
                                                                headless=True, viewport={"width": 1000, "height": 900})
        yield context
        context.close()


class Opened:
    """A report loaded in a fresh tab, with every request it made and every error it logged."""

    def __init__(self, context, path: Path, viewport: dict[str, int] | None = None):
        self.page = context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        if viewport:
            self.page.set_viewport_size(viewport)
        self.url = path.resolve().as_uri()
        self.page.goto(self.url, wait_until="load")

    def charts(self) -> list[dict]:
        """Each chart's box and its marks (lines, points, bars), each with its box and whether it shows."""
        return self.page.eval_on_selector_all("svg.chart", """charts => charts.map(chart => {
            const box = chart.getBoundingClientRect();
            const marks = [...chart.querySelectorAll('path, .point, .bar')].map(mark => {
                const b = mark.getBoundingClientRect(), style = getComputedStyle(mark);
                return {x: b.x, y: b.y, w: b.width, h: b.height, kind: mark.tagName,
                        shown: style.visibility === 'visible' && style.display !== 'none' && style.opacity !== '0'};
            });
            return {x: box.x, y: box.y, w: box.width, h: box.height, marks};
        })""")

    def overflow(self) -> tuple[int, int]:
        return self.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def drawn(chart: dict, marks: int) -> None:
    assert chart["w"] > 300 and chart["h"] > 150, chart
    assert len(chart["marks"]) >= marks, (len(chart["marks"]), marks)
    for mark in chart["marks"]:
        assert mark["shown"] and (mark["w"] > 0 or mark["h"] > 0), mark  # a flat line still has a length
        assert chart["x"] - 1 <= mark["x"] and mark["x"] + mark["w"] <= chart["x"] + chart["w"] + 1, (mark, chart)
        assert chart["y"] - 1 <= mark["y"] and mark["y"] + mark["h"] <= chart["y"] + chart["h"] + 1, (mark, chart)


def not_blank(png: bytes, min_colours: int = 30) -> float:
    """The screenshot's pixel standard deviation (greyscale), after checking it shows more than a few colours."""
    from PIL import Image, ImageStat

    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert len(image.getcolors(maxcolors=1 << 20) or ()) >= min_colours
    spread = ImageStat.Stat(image.convert("L")).stddev[0]
    assert spread > 10, spread
    return spread


@pytest.mark.browser
def test_job_reports_in_chromium(made, browser, tmp_path, summary_line):
    home, jobs, _ = made
    started = time.monotonic()
    for which, charts in (("openai", 2), ("local", 1)):
        path = ftbroker.report(jobs[which], tmp_path / f"{which}.html", home=home)
        opened = Opened(browser, path)
        assert opened.requests == [opened.url] and opened.errors == []
        found = opened.charts()
        assert len(found) == charts
        drawn(found[0], marks=1)  # the loss curve(s)
        if which == "openai":
            assert len(found[0]["marks"]) > 2  # train and eval paths, eval points
            drawn(found[1], marks=4)  # base and fine-tuned bars, two scores at least
            not_blank(opened.page.locator("svg.chart").first.screenshot())
        else:  # the hostile name: shown as text, never run, never fetched
            assert opened.page.evaluate("typeof window.pwned") == "undefined"
            assert opened.page.locator("h1").inner_text() == HOSTILE
        not_blank(opened.page.screenshot(full_page=True))
        phone = Opened(browser, path, PHONE)
        scroll, width = phone.overflow()
        assert scroll <= width == PHONE["width"]
        drawn(phone.charts()[0], marks=1)
        phone.page.emulate_media(media="print")
        assert phone.page.pdf()[:5] == b"%PDF-"
        opened.page.close()
        phone.page.close()
    summary_line(f"report in Chromium: two job reports opened, checked at 1000 and 390 px and printed in "
                 f"{time.monotonic() - started:.1f} s")


@pytest.mark.browser
def test_the_plan_report_in_chromium(made, browser, tmp_path, summary_line):
    home, _, plan_file = made
    path = tmp_path / "plan.html"
    report(home, "--plan", plan_file, "-o", path)
    doc = json.loads(plan_file.read_text())
    priced = sum(1 for r in doc["routes"] if r["feasible"] and r["cost_usd"])
    opened = Opened(browser, path)
    assert opened.requests == [opened.url] and opened.errors == []
    (chart,) = opened.charts()
    drawn(chart, marks=priced)
    spread = not_blank(opened.page.screenshot(full_page=True))
    phone = Opened(browser, path, PHONE)
    scroll, width = phone.overflow()
    assert scroll <= width
    drawn(phone.charts()[0], marks=priced)
    summary_line(f"plan report: {path.stat().st_size / 1024:.0f} KiB for {len(doc['routes'])} routes ({priced} "
                 f"drawn); screenshot pixel spread {spread:.0f}; no request but the file itself")
    assert math.isfinite(spread)
