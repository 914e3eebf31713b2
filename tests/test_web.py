"""The web page in a real browser: Debian's chromium driven by Selenium through Debian's
chromedriver (``scripts/test.sh`` installs both), against the real service on loopback. The
elements are found by the page's ``data-testid`` contract (docs/api.md)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile
import soxr
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as Driver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from edge_asr.config import Config
from edge_asr.samples import meeting
from edge_asr.server.web import stream_limit
from tests.service import LLM, TTS, Service

ASR = "whisper-tiny-en"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def chromium_options() -> webdriver.ChromeOptions:
    assert CHROMIUM and CHROMEDRIVER, "Debian's chromium and chromium-driver: scripts/test.sh installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


@pytest.fixture(scope="module")
def browser() -> WebDriver:
    driver = webdriver.Chrome(service=Driver(CHROMEDRIVER), options=chromium_options())
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_service(tmp_path_factory) -> Service:
    svc = Service(tmp_path_factory.mktemp("web") / "state").start()
    yield svc
    svc.stop()


def by_testid(driver: WebDriver, name: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def until(driver: WebDriver, condition: Callable[[WebDriver], object], timeout: float = 60) -> object:
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def text_of(name: str, predicate: Callable[[str], bool]) -> Callable[[WebDriver], bool]:
    return lambda driver: predicate(by_testid(driver, name).text)


def console_errors(driver: WebDriver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def open_page(driver: WebDriver, service: Service) -> None:
    """The page, fresh: what an earlier page logged (a service a test stopped) is drained first."""
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get(service.url + "/")
    until(driver, text_of("memory-available", lambda text: text.endswith("B")))


def test_models_memory_free_and_events(browser: WebDriver, page_service: Service):
    open_page(browser, page_service)
    unit = page_service.get("/healthz").json()["unit"]  # which unit of a fleet this page is on
    until(browser, text_of("unit", lambda name: name == unit))
    assert browser.title == f"edge-asr · {unit}"
    models = page_service.get("/api/models").json()["models"]
    for model in models:
        assert by_testid(browser, f"model-row-{model['id']}").is_displayed()
        assert by_testid(browser, f"model-state-{model['id']}").text == "unloaded"

    assert page_service.post(f"/api/models/{ASR}/load").ok  # through the API: the page follows
    until(browser, text_of(f"model-state-{ASR}", lambda state: state == "ready"))
    by_testid(browser, f"unload-{ASR}").click()
    until(browser, text_of(f"model-state-{ASR}", lambda state: state == "unloaded"))
    assert page_service.model(ASR)["last_unload_reason"] == "user"

    by_testid(browser, f"load-{ASR}").click()
    until(browser, text_of(f"model-state-{ASR}", lambda state: state == "ready"))
    by_testid(browser, "free-memory").click()
    until(browser, text_of("free-result", lambda text: "freed" in text))
    reclaimed = int(by_testid(browser, "free-result").get_attribute("data-reclaimed"))
    freed = [e for e in page_service.get("/api/events").json()["events"] if e["reason"] == "free"]
    assert reclaimed == freed[-1]["reclaimed_bytes"], freed  # what the unload measured (noisy here: ±MBs)
    assert ASR in by_testid(browser, "free-result").text
    until(browser, text_of(f"model-state-{ASR}", lambda state: state == "unloaded"))

    chart = by_testid(browser, "memory-chart")
    until(browser, lambda _: int(chart.get_attribute("data-points")) >= 3)
    until(browser, lambda _: int(chart.get_attribute("data-events")) >= 4)  # two loads, two unloads
    events = by_testid(browser, "events").find_elements(By.TAG_NAME, "li")
    assert len(events) >= 4 and "free" in events[0].text  # newest first
    assert console_errors(browser) == []


def test_settings_survive_a_reload_and_a_restart(browser: WebDriver, tmp_path: Path):
    service = Service(tmp_path / "state").start()
    open_page(browser, service)
    form = by_testid(browser, f"settings-{ASR}")
    for name, value in (("prompt", "Anna, Ben, Carla"), ("beam_size", "2")):
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    until(browser, lambda _: form.find_element(By.CLASS_NAME, "message").text == "saved")
    stored = service.model(ASR)["settings"]
    assert (stored["prompt"], stored["beam_size"]) == ("Anna, Ben, Carla", 2)

    def shown() -> tuple[str, ...]:
        form = by_testid(browser, f"settings-{ASR}")
        return tuple(form.find_element(By.NAME, name).get_attribute("value") for name in ("prompt", "beam_size"))

    browser.refresh()
    until(browser, lambda _: shown() == ("Anna, Ben, Carla", "2"))
    service.stop()
    restarted = Service(service.state_dir).start()
    try:
        open_page(browser, restarted)
        until(browser, lambda _: shown() == ("Anna, Ben, Carla", "2"))
        form = by_testid(browser, f"settings-{ASR}")
        form.find_element(By.NAME, "language").send_keys("de")  # tiny.en is English-only: refused, said
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        until(browser, lambda _: "English-only" in form.find_element(By.CLASS_NAME, "message").text)
    finally:
        restarted.stop()


def test_try_the_whole_chain(browser: WebDriver, tmp_path: Path, clips):
    service = Service(tmp_path / "state").start()
    try:
        open_page(browser, service)
        by_testid(browser, "try-file").send_keys(str(clips["beckett"]))
        browser.find_element(By.ID, "transcribe").click()
        until(browser, text_of("try-transcript", lambda text: text.startswith("Ever tried. Ever failed.")))
        until(browser, lambda _: browser.find_element(By.ID, "ask").is_enabled())
        browser.find_element(By.ID, "ask").click()
        until(browser, lambda _: browser.find_element(By.ID, "speak").is_enabled(), timeout=120)  # answered
        assert len(by_testid(browser, "try-output").text.split()) >= 3
        browser.find_element(By.ID, "speak").click()
        until(browser, lambda _: int(by_testid(browser, "try-audio").get_attribute("data-bytes") or 0) > 20_000)
        chart = by_testid(browser, "memory-chart")
        until(browser, lambda _: int(chart.get_attribute("data-events")) >= 3)  # the three loads
        assert console_errors(browser) == []
    finally:
        service.stop()


def test_try_it_shows_who_said_what(browser: WebDriver, tmp_path: Path, config):
    """With Speakers ticked, the transcript comes back as a line a turn: the meeting's reader and
    guest take turns five times. (A service of its own: the models it loads stay out of the
    shared page's event tests.)"""
    recording = tmp_path / "meeting.wav"
    soundfile.write(recording, meeting(config).audio, 16000)
    service = Service(tmp_path / "state").start()
    try:
        open_page(browser, service)
        by_testid(browser, "try-file").send_keys(str(recording))
        by_testid(browser, "try-speakers").click()
        browser.find_element(By.ID, "transcribe").click()
        until(browser, text_of("try-transcript", lambda text: text.count("\n") >= 2), timeout=120)
        lines = by_testid(browser, "try-transcript").text.splitlines()
        assert [line.split(":")[0] for line in lines][:3] == ["A", "B", "A"]
        assert "best of times" in lines[0].lower()
        assert console_errors(browser) == []
    finally:
        service.stop()


def test_the_page_asks_for_the_key_and_says_when_it_is_wrong(browser: WebDriver, tmp_path: Path):
    service = Service(tmp_path / "state", EDGE_ASR_API_KEY="right-key").start()
    try:
        browser.get(service.url + "/")
        until(browser, lambda _: by_testid(browser, "api-key-form").is_displayed())
        by_testid(browser, "api-key").send_keys("wrong-key\n")
        until(browser, text_of("api-key-message", lambda text: "refused" in text))
        key = by_testid(browser, "api-key")
        key.clear()
        key.send_keys("right-key\n")
        until(browser, text_of("memory-available", lambda text: text.endswith("B")))
        until(browser, lambda _: browser.find_element(By.ID, "connection").text == "live")  # the stream too
        assert not by_testid(browser, "api-key-form").is_displayed()
        browser.refresh()  # kept in the browser
        until(browser, text_of("memory-available", lambda text: text.endswith("B")))
    finally:
        browser.execute_script("localStorage.clear()")
        service.stop()


def test_on_a_phone_each_models_state_and_buttons_are_in_view(browser: WebDriver, page_service: Service):
    """At 390 px no sideways scrolling, not even inside the models table: each model is a card."""
    browser.set_window_size(390, 844)
    try:
        open_page(browser, page_service)
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        assert by_testid(browser, "free-memory").is_displayed()
        width = browser.execute_script("return document.documentElement.clientWidth")
        for model in page_service.get("/api/models").json()["models"]:
            for name in (f"model-state-{model['id']}", f"load-{model['id']}", f"unload-{model['id']}"):
                box = by_testid(browser, name).rect
                assert box["x"] >= 0 and box["x"] + box["width"] <= width, (name, box, width)
    finally:
        browser.set_window_size(1280, 800)


def test_the_stream_carries_readings_and_events_and_is_bounded(browser: WebDriver, page_service: Service):
    browser.get("about:blank")  # the page's own stream closes

    def messages(response: requests.Response) -> Iterator[dict]:
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                yield json.loads(line[6:])

    def open_stream() -> requests.Response:
        """A stream, once there is room: a closed one gives its place back at its next write (1 s)."""
        deadline = time.monotonic() + 10
        while (response := requests.get(page_service.url + "/api/stream", stream=True, timeout=60)).status_code == 503:
            response.close()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        return response

    limit = stream_limit(Config().threads)  # the service runs with the default threads
    streams = [open_stream() for _ in range(limit)]
    try:
        assert all(s.status_code == 200 and s.headers["Content-Type"].startswith("text/event-stream") for s in streams)
        refused = page_service.get("/api/stream")
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert page_service.get("/healthz").ok  # reads still find a thread
        feed = messages(streams[0])
        reading = next(feed)
        assert reading["type"] == "memory" and reading["available_bytes"] > 0
        assert page_service.post(f"/api/models/{ASR}/load").ok
        loaded = next(m for m in feed if m["type"] == "event")
        assert (loaded["model"], loaded["to"]) == (ASR, "ready")
    finally:
        for s in streams:
            s.close()
    again = [open_stream() for _ in range(limit)]  # the closed streams gave their places back
    for s in again:
        s.close()


def test_another_sites_page_can_neither_act_on_the_unit_nor_read_it(
    browser: WebDriver, page_service: Service, tmp_path: Path
):
    """What any web site's page opened on the LAN tries: a POST that needs no preflight (the
    unload), then reading the answer of a GET. The first is refused (403), the second not the
    page's to read (no CORS headers)."""
    assert page_service.post(f"/api/models/{ASR}/load").ok
    unit = page_service.url
    (tmp_path / "evil.html").write_text(
        "<!doctype html><script>"
        f'fetch("{unit}/api/models/{ASR}/unload", {{method: "POST", mode: "no-cors"}})'
        f'.then(() => fetch("{unit}/api/models"))'
        '.then(() => { document.title = "read"; }, () => { document.title = "refused"; });'
        "</script>"
    )
    site = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://localhost:{site.server_port}/evil.html")  # another origin than the unit's
        until(browser, lambda driver: driver.title in ("read", "refused"))
        assert browser.title == "refused"
        assert page_service.model(ASR)["state"] == "ready"
    finally:
        site.shutdown()
        assert page_service.post(f"/api/models/{ASR}/unload").ok


def test_events_too_close_to_tell_apart_share_a_chart_label_and_each_shows_on_hover(
    browser: WebDriver, page_service: Service
):
    """Three models loaded at once, then freed in one call: labels never lie on each other, the
    unloads (within a second) share one, and hovering the labels lists every event."""
    open_page(browser, page_service)
    chart = browser.find_element(By.ID, "chart")
    models = (ASR, LLM, TTS)
    with ThreadPoolExecutor(len(models)) as pool:
        assert all(r.ok for r in pool.map(lambda m: page_service.post(f"/api/models/{m}/load"), models))
    assert page_service.post("/api/system/free").ok
    recent = time.time() - 290  # inside the chart's five minutes
    moves = [e for e in page_service.get("/api/events").json()["events"] if e["from"] != e["to"] and e["time"] > recent]
    until(browser, lambda _: int(chart.get_attribute("data-events")) >= len(moves))  # the page has them all
    labels = json.loads(chart.get_attribute("data-labels"))  # [x, events] of each label
    events = int(chart.get_attribute("data-events"))
    assert sum(n for _, n in labels) == events and max(n for _, n in labels) >= 2
    assert all(b - a >= 14 for a, b in itertools.pairwise(x for x, _ in labels))  # none on another
    listed = []
    for x, count in labels:
        ActionChains(browser).move_to_element_with_offset(chart, int(x - chart.size["width"] / 2), 0).perform()
        lines = chart.get_attribute("title").splitlines()
        assert len(lines) == count, (x, lines)
        listed += lines
    assert len(listed) == events
    assert all(f"{m} ready (user)" in listed and f"{m} unloaded (free)" in listed for m in models), listed


def test_live_captions_from_the_microphone(tmp_path: Path, page_service: Service, speech):
    """Live, with Chromium's fake microphone playing Beckett (then a pause, looped): the words
    appear in ``live-transcript`` as the server's VAD ends each turn; Stop closes the session,
    which gives its lease back."""
    recording = np.concatenate([speech["beckett"], np.zeros(24000, np.float32)])
    microphone = tmp_path / "microphone.wav"
    soundfile.write(microphone, soxr.resample(recording, 16000, 48000), 48000, subtype="PCM_16")
    options = chromium_options()
    for argument in ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):
        options.add_argument(argument)
    options.add_argument(f"--use-file-for-fake-audio-capture={microphone}")
    driver = webdriver.Chrome(service=Driver(CHROMEDRIVER), options=options)
    try:
        open_page(driver, page_service)
        by_testid(driver, "live-start").click()
        until(driver, lambda _: by_testid(driver, "live-stop").is_displayed())
        words = {"tried", "failed", "matter", "again", "better"}
        until(driver, text_of("live-transcript", lambda text: words <= set(re.findall(r"[a-z]+", text.lower()))), 60)
        assert page_service.model(ASR)["in_flight"] == 1  # the session holds its model
        by_testid(driver, "live-stop").click()
        until(driver, lambda _: by_testid(driver, "live-start").is_displayed())
        until(driver, lambda _: page_service.model(ASR)["in_flight"] == 0, timeout=10)
        assert console_errors(driver) == []
    finally:
        driver.quit()
