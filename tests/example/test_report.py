"""`make report` writes one self-contained HTML file; headless Chromium (Debian's `chromium`,
installed by `make browser`) renders it without console errors or outside requests, with its
sections present. The screenshot is kept in test-artifacts/."""

import os
import subprocess
import sys

import pytest

from tests.pipeline_run import ROOT

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "test-artifacts" / "report.png"
SECTIONS = {
    "data-summary": "Data summary per split",
    "anomalies": "Anomalies",
    "leakage": "Data leakage",
    "drift": "Drift between the newest two spans",
    "evaluation": "Evaluation",
    "lineage": "Lineage of the served model",
}


@pytest.fixture(scope="module")
def report(finished_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "report", "--out", str(path)],
        env=finished_run.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"Report written to {path}"
    return path


@pytest.fixture(scope="module")
def page(report):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), (
        f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.console_errors, page.requests = [], []
        page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
        page.on("pageerror", lambda error: page.console_errors.append(str(error)))
        page.on("request", lambda request: page.requests.append(request.url))
        page.goto(report.as_uri(), wait_until="load")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        yield page
        browser.close()


def test_report_loads_without_errors_or_outside_requests(page, report):
    assert page.console_errors == []
    # Self-contained: the page itself, and nothing else (images are inline data: URLs).
    assert [url for url in page.requests if not url.startswith("data:")] == [report.as_uri()]
    assert SCREENSHOT.stat().st_size > 10_000


def test_key_sections_are_rendered(page, finished_run):
    from analysis import artifacts

    for section_id, title in SECTIONS.items():
        assert page.locator(f"section#{section_id} > h2").inner_text() == title
        assert "Not available" not in page.locator(f"section#{section_id}").inner_text()
    run = artifacts.latest_run(finished_run.settings)
    assert page.locator("#run-id").inner_text() == run.run_id
    assert run.started_text in page.locator("#run").inner_text()
    # Every figure decoded and drawn: distributions, missing rates, top values, drift
    # (numeric and categorical), ROC/PR, calibration and two per-slice plots.
    widths = page.evaluate("[...document.images].map(image => image.naturalWidth)")
    assert len(widths) == 9 and min(widths) > 100


def test_sections_show_the_runs_results(page, finished_run):
    text = {
        section_id: page.locator(f"section#{section_id}").inner_text() for section_id in SECTIONS
    }
    from analysis import artifacts, stats_views

    stats = stats_views.run_statistics(artifacts.latest_run(finished_run.settings))
    counts = {split: s.datasets[0].num_examples for split, s in stats.items()}
    assert sum(counts.values()) == 400  # the span's rows, split about 3:1
    assert (
        f"Span 2, as ExampleGen split it: train {counts['train']} examples, "
        f"eval {counts['eval']} examples"
    ) in text["data-summary"]
    assert "No anomalies: every split matches the schema." in text["anomalies"]
    assert "No leakage found." in text["leakage"] and "payment_type" in text["leakage"]
    assert "span 2 against span 1" in text["drift"]
    assert "BLESSED: the candidate cleared every threshold." in text["evaluation"]
    # The thresholds the run was blessed against (the test run's settings: 0.75).
    thresholds = page.locator("section#evaluation table").first.inner_text()
    assert "auc" in thresholds and ">= 0.75" in thresholds
    assert "Cash" in text["evaluation"]
    version = finished_run.pushed_versions()[-1]
    assert f"{finished_run.settings.serving_model_dir}/{version}" in text["lineage"]
    assert "spans:           1, 2" in text["lineage"]
