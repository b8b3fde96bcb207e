"""The report page in a real browser: Debian's headless Chromium, driven by selenium.

Run by ``nox -s browser_check`` (and CI), which sets PPBENCH_BROWSER_REQUIRED=1 so that a missing
browser fails instead of skipping, and PPBENCH_BROWSER_OUT to the folder that keeps the page and
the screenshot. The page is generated from the committed results/ (as a new user would open it).
"""

import os
import shutil
import time
from pathlib import Path

import pytest

from ppbench.report.summary import run_report

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        message = "needs Debian's chromium and chromium-driver (apt install chromium chromium-driver)"
        if os.environ.get("PPBENCH_BROWSER_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver  # in the test extra, as README's install command has it
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--window-size=1300,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = Path(os.environ.get("PPBENCH_BROWSER_OUT") or tmp_path_factory.mktemp("browser"))
    start = time.monotonic()
    code, _, warnings = run_report(str(ROOT / "results"), "table", str(out / "report"), None, None, None, None)
    assert code == 0, warnings
    print(f"ppbench report results/ took {time.monotonic() - start:.1f} s")
    return out


def test_the_report_page_works_in_chromium(browser, page):
    from selenium.webdriver.common.by import By

    index = page / "report" / "index.html"
    browser.get(index.as_uri())
    # findings come first, before any picture or table
    sections = [s.get_attribute("id") for s in browser.find_elements(By.CSS_SELECTOR, "body > section")]
    assert sections[0] == "findings", sections
    findings = browser.find_elements(By.CSS_SELECTOR, "#findings > ul > li")
    assert len(findings) >= 3 and all(f.text for f in findings)
    # every image loads (a decoded picture has a natural width)
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 8
    broken = [i.get_attribute("src") for i in images
              if not browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)]
    assert not broken, broken
    # clicking a numeric header sorts its table's rows, ascending then descending
    table = max(browser.find_elements(By.CSS_SELECTOR, "table.results"),
                key=lambda t: len(t.find_elements(By.CSS_SELECTOR, "tbody tr")))
    headers = [h.text for h in table.find_elements(By.CSS_SELECTOR, "thead th")]
    column = headers.index("step (ms)")

    def values():
        return browser.execute_script(
            "return Array.from(arguments[0].tBodies[0].rows).map(r => parseFloat(r.cells[arguments[1]].textContent))",
            table, column)

    before = values()
    header = table.find_elements(By.CSS_SELECTOR, "thead th")[column]
    browser.execute_script("arguments[0].scrollIntoView()", header)
    header.click()
    ascending = values()
    assert ascending == sorted(before) and ascending != before
    header.click()
    assert values() == sorted(before, reverse=True)
    # the filter hides the rows that lack a word
    search = browser.find_element(By.ID, "filter")
    search.send_keys("zb-h1")
    visible = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "table.results tbody tr") if r.is_displayed()]
    assert visible and all("zb-h1" in line for line in visible)
    # no errors in the browser console
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(page / "report-first-screen.png"))
    browser.set_window_size(1300, browser.execute_script("return document.body.scrollHeight"))
    browser.save_screenshot(str(page / "report-whole-page.png"))
