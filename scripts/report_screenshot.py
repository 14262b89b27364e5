"""The README's pictures of `ftbroker report`, from a real run: a tiny model (tests/tinymodels.py, built here, no
download) fully fine-tuned on this machine's CPU by the real trainer (the trainer holds out 10% for the eval loss),
evaluated by `ftbroker eval` on what it held out, reported, and the reports opened in Debian's Chromium.

    .venv/bin/python scripts/report_screenshot.py [--out docs]

Writes OUT/report-job.png (the job's report at a laptop's width) and OUT/report-plan-phone.png (the plan of
examples/data at a phone's width, its top), and prints what it measured. Needs the local and dev extras and
/usr/bin/chromium (apt-get install chromium). Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_report import FLAGS  # Chromium as the report tests launch it
from tinymodels import build_tiny_model, code_examples, write_jsonl


def ftbroker(home: Path, *args: object) -> str:
    done = subprocess.run([sys.executable, "-m", "ftbroker.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "FTBROKER_HOME": str(home), "COLUMNS": "120"}, check=False)
    if done.returncode:
        sys.exit(f"ftbroker {' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def make_reports(work: Path) -> tuple[Path, Path]:
    home = work / "home"
    model = build_tiny_model(work / "tiny-model")
    data = write_jsonl(work / "country-codes.jsonl", code_examples(100))
    started = time.monotonic()
    job = json.loads(ftbroker(home, "run", data, "--backend", "local", "--model", model, "--method", "full",
                              "--name", "country codes (tiny model, CPU)", "--epochs", "8", "--lr", "3e-3",
                              "--micro-batch", "8", "--max-seq-len", "128", "--seed", "0", "--yes", "--json"))
    job_id = job["job"]["id"]
    print(f"trained {job_id} in {time.monotonic() - started:.0f} s")
    ftbroker(home, "eval", job_id, "--json")
    ftbroker(home, "plan", REPO / "examples" / "data" / "support_chats.jsonl", "--max-cost", "2", "--json")
    started = time.perf_counter()
    ftbroker(home, "report", job_id, "-o", work / "job.html")
    ftbroker(home, "report", "--plan", "-o", work / "plan.html")
    print(f"two reports written in {time.perf_counter() - started:.2f} s (two ftbroker processes)")
    return work / "job.html", work / "plan.html"


def screenshot(pages: list[tuple[Path, Path, int, int | None]]) -> None:
    """(report, PNG, width, height to keep or None for the whole page) each."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=FLAGS, headless=True)
        for report, png, width, height in pages:
            page = browser.new_page()
            page.set_viewport_size({"width": width, "height": height or 900})
            page.goto(report.resolve().as_uri())
            page.screenshot(path=png, full_page=height is None)
            print(f"{png}: {report.stat().st_size / 1024:.0f} KiB of HTML at {width} px")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftb-report-") as work:
        job, plan = make_reports(Path(work))
        screenshot([(job, args.out / "report-job.png", 860, None), (plan, args.out / "report-plan-phone.png", 390, 1500)])


if __name__ == "__main__":
    main()
