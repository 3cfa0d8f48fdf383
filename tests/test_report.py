"""The report folder and its one-page HTML, checked in a real headless browser."""

import json
import shutil

import pytest
from fakes import FakeLargeModel

from datashunt import ShuntClassifier
from datashunt.eval.compare import compare, write_report
from datashunt.eval.html import report_html
from datashunt.small import make_small

CHROMIUM = shutil.which("chromium")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def report_folder(sentiment, tmp_path):
    texts, labels = sentiment
    texts = list(texts)
    for i in range(500, 600, 4):  # an item is text, never markup
        texts[i] = f"<script>document.title = 'pwned'</script> & {texts[i]}"
    large = FakeLargeModel(dict(zip(texts, labels)), accuracy=0.95)
    shunt = ShuntClassifier(
        make_small("tfidf"), large, validation_fraction=0.7, max_calibration_calls=120, random_state=0
    ).fit(texts[:500], labels[:500])
    evaluation = compare(shunt, texts[500:], labels[500:])
    return write_report(
        tmp_path / "report", evaluation, shunt, {"command": "datashunt demo", "seed": 0}, texts=texts[500:]
    )


def test_report_folder_holds_json_figure_and_a_self_contained_page(report_folder):
    report = json.loads((report_folder / "report.json").read_text())
    assert {row["system"] for row in report["summary"]} == {"small only", "large only", "data shunt"}
    page = (report_folder / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page.replace("&lt;script", "")
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    assert "&lt;script&gt;document.title" in page


def test_report_page_without_an_evaluation_still_states_the_promise():
    page = report_html(
        {
            "info": {"command": "datashunt fit"},
            "thresholds": [float("inf")],
            "calibration": {
                "goal": "accuracy >= last stage's accuracy - 0.01 with probability >= 0.9 (Learn then Test)",
                "goal_met": False,
                "n_validation": 100,
                "accuracy": None,
                "large_accuracy": None,
                "large_rate": 1.0,
            },
        }
    )
    assert 'class="promise missed"' in page and "NOT met" in page and "δ = inf" in page


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup.sh installs it)")
def test_report_page_renders_in_a_real_browser_with_nothing_fetched(report_folder):
    sync_api = pytest.importorskip("playwright.sync_api")
    requests, errors = [], []
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((report_folder / "report.html").as_uri())
            page.wait_for_load_state("load")
            title = page.title()
            figure = page.evaluate(
                "() => { const i = document.querySelector('img'); "
                "return i ? [i.complete, i.naturalWidth, i.naturalHeight] : null; }"
            )
            systems = page.locator("table").nth(1).locator("tbody tr td:first-child").all_inner_texts()
            promise = page.locator(".promise").inner_text()
            headings = page.locator("h2").all_inner_texts()
            sample_heads = page.locator("table").last.locator("thead th").all_inner_texts()
            sample_rows = page.locator("table").last.locator("tbody tr").count()
            scripts = page.locator("script").count()
            shown = page.locator("table").last.inner_text()
            width = page.evaluate("() => document.documentElement.scrollWidth")
        finally:
            browser.close()
    assert requests == [(report_folder / "report.html").as_uri()] and not errors
    assert title == "Data Shunt report: datashunt demo" and scripts == 0
    assert figure is not None and figure[0] and figure[1] > 500 and figure[2] > 200  # the PNG decoded
    assert systems == ["small only", "large only", "data shunt"]
    assert "promise: accuracy >= last stage's accuracy - 0.01 with probability >= 0.9" in promise
    assert "Accuracy by true class" in headings
    assert sample_heads == ["item", "truth", "route", "small model", "its confidence", "large model", "answer"]
    assert 0 < sample_rows <= 24 and "large" in shown and "small" in shown
    assert width <= 1400  # long items wrap instead of widening the page
