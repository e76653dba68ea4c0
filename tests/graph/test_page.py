"""The page at `GET /`, in a real headless browser (Debian's chromium, driven by selenium through chromedriver)
against the deployed graph: a person types a sentence and sees each task's labels with probability bars, the
embedding size and the model fingerprint; the page loads nothing from anywhere else."""

from __future__ import annotations

import shutil
import tempfile

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); .ci/run installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def test_a_typed_sentence_gets_its_labels_shown_as_bars(service, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    text = "The striker scored twice in the final and the crowd went wild."
    wait = WebDriverWait(browser, 60)
    browser.get(service.url + "/")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#tasks input[type=checkbox]")))
    browser.find_element(By.CSS_SELECTOR, "#texts textarea").send_keys(text)
    browser.find_element(By.ID, "classify").click()
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#results article .task")))

    expected = service.post("/v1/predict", json={"texts": [text]}).json()
    result = expected["results"][0]
    for task in ("topic", "sentiment"):
        rows = browser.find_elements(By.CSS_SELECTOR, f'#results [data-task="{task}"] .row')
        assert {row.get_attribute("data-label") for row in rows} == set(result[task]["scores"])
        top = browser.find_element(By.CSS_SELECTOR, f'#results [data-task="{task}"] .row.top')
        assert top.get_attribute("data-label") == result[task]["label"]
        fill, track = (top.find_element(By.CSS_SELECTOR, part).size["width"] for part in (".fill", ".track"))
        assert abs(fill / track - result[task]["confidence"]) < 0.02  # the bar is the probability
    assert browser.find_element(By.ID, "model-fingerprint").text == expected["model"]["fingerprint"]
    assert browser.find_element(By.ID, "model-embedding-size").text == "1024"
    # the title names the served tasks, whatever they are
    assert browser.find_element(By.ID, "title").text == "multitask: topic, sentiment"
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors  # no blocked or failed request, no script error


def test_the_page_allows_only_its_own_script_style_and_origin(service):
    response = service.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "http://" not in response.text and "https://" not in response.text  # no URL of another origin
    assert "/" in service.get("/openapi.json").json()["paths"]
