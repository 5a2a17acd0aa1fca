"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium through chromedriver.

Each test saves a screenshot of every state it reaches under its temporary folder.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from wanhook.service.domain.models import MODELS

from ..conftest import Stack
from ..support import Process, free_port, wait_for, wanhook

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
)
DESKTOP = (1280, 800)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    # Every request the page makes is logged, so a test can tell that none left the machine.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # The explicit driver path keeps selenium-manager from looking for (or downloading) one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: WebDriver) -> Iterator[WebDriver]:
    browser.get("about:blank")
    set_viewport(browser, *DESKTOP)
    browser.get_log("performance")  # start each test with empty logs
    browser.get_log("browser")
    yield browser
    browser.get("about:blank")


@pytest.fixture
def dash_stack(tmp_path: Path, redis_url: str, processes: list[Process]) -> Iterator[Stack]:
    """The usual stack, with callbacks allowed to reach a receiver on loopback."""
    stack = Stack(tmp_path, redis_url, processes)
    stack.env["WANHOOK_CALLBACK_ALLOW_PRIVATE"] = "1"
    stack.start()
    yield stack
    stack.http.close()
    stack.redis.close()


def shot(driver: WebDriver, folder: Path, name: str, scroll_to: str | None = None) -> Path:
    """A screenshot of the page from its top (or from the element ``scroll_to``)."""
    driver.execute_script(
        "document.activeElement.blur();"
        "const target = arguments[0] && document.querySelector(arguments[0]);"
        "if (target) target.scrollIntoView(); else window.scrollTo(0, 0);",
        scroll_to,
    )
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def set_viewport(driver: WebDriver, width: int, height: int) -> None:
    """Size the window so that the page itself gets ``width`` x ``height`` pixels."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])


def card(driver: WebDriver, task_id: str) -> Any:
    return driver.find_element(By.ID, f"task-{task_id}")


def card_status(driver: WebDriver, task_id: str) -> str | None:
    found = driver.find_elements(By.ID, f"task-{task_id}")
    return found[0].get_attribute("data-status") if found else None


def wait_card(driver: WebDriver, task_id: str, *statuses: str, timeout: float = 30) -> Any:
    wait_for(
        lambda: card_status(driver, task_id) in statuses,
        timeout,
        interval=0.05,
        what=f"task {task_id} shown as {'/'.join(statuses)}",
    )
    return card(driver, task_id)


def newest_card_id(driver: WebDriver) -> str | None:
    cards = driver.find_elements(By.CSS_SELECTOR, "#tasks > li.task")
    return cards[0].get_attribute("data-id") if cards else None


def open_dashboard(driver: WebDriver, url: str) -> None:
    driver.get(url + "/")
    wait_for(lambda: driver.find_element(By.ID, "prompt").is_displayed(), 15, what="the page to load its tasks")


def requested_urls(driver: WebDriver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def responses(driver: WebDriver) -> list[dict[str, Any]]:
    return [
        message["params"]["response"]
        for message in (json.loads(entry["message"])["message"] for entry in driver.get_log("performance"))
        if message["method"] == "Network.responseReceived"
    ]


def keyboard_to(driver: WebDriver, element_id: str, limit: int = 15) -> None:
    """Tab through the page until ``element_id`` has the focus, as a keyboard user would."""
    for _ in range(limit):
        if driver.switch_to.active_element.get_attribute("id") == element_id:
            return
        driver.switch_to.active_element.send_keys(Keys.TAB)
    raise AssertionError(f"#{element_id} cannot be reached with the Tab key")


def test_submit_watch_play_and_fail(dash_stack: Stack, page: WebDriver, tmp_path: Path) -> None:
    stack = dash_stack
    # Slow enough to see each state: a render of 1.5 s and a download of a few seconds.
    stack.emulator.configure(render_seconds=1.5, video_bytes_per_second=300_000)
    open_dashboard(page, stack.url)
    assert page.find_element(By.ID, "connection").text == "Live · no task in flight"
    assert "No tasks yet" in page.find_element(By.ID, "tasks").text

    # Only the chosen model's sizes and durations can be picked (text-to-video's; test_form_per_kind has the others).
    model, size, duration = (Select(page.find_element(By.ID, name)) for name in ("model", "size", "duration"))
    for rules in (rules for rules in MODELS.values() if rules.kind == "t2v"):
        model.select_by_value(rules.name)
        assert [option.get_attribute("value") for option in size.options] == list(rules.sizes)
        assert [int(option.get_attribute("value")) for option in duration.options] == list(rules.durations)
    model.select_by_value("wan2.2-t2v-plus")
    assert size.first_selected_option.get_attribute("value") == "832*480"
    shot(page, tmp_path, "01-empty")

    # Keyboard only: Tab to the prompt, type, Tab to the button, Enter.
    page.execute_script("window.notReloaded = true")
    page.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    keyboard_to(page, "prompt")
    page.switch_to.active_element.send_keys("a lighthouse in a storm, waves breaking on the rocks")
    keyboard_to(page, "submit")
    page.switch_to.active_element.send_keys(Keys.ENTER)
    task_id = wait_for(lambda: newest_card_id(page), 15, what="the new task's card")
    item = wait_card(page, task_id, "queued", "submitted")
    assert "lighthouse" in item.find_element(By.CSS_SELECTOR, ".prompt").text
    wait_card(page, task_id, "submitted")
    assert "Rendering at DashScope" in item.text
    assert page.find_element(By.ID, "connection").text == "Live · following 1 task"
    wait_for(lambda: page.find_element(By.ID, "count-submitted").text == "1", 10, what="the At DashScope counter")
    assert "wan2.2-t2v-plus: 1 of 2" in page.find_element(By.ID, "quota").text
    shot(page, tmp_path, "02-submitted")

    # Download progress arrives through the stream while the video is fetched.
    wait_card(page, task_id, "downloading")
    label = wait_for(
        lambda: (
            (text := item.find_element(By.CSS_SELECTOR, ".progress-label").text)
            and re.search(r"\(([3-9]\d)%\)", text)
            and text
        ),
        15,
        what="download progress past 30%",
    )
    # Sizes read in the unit that suits them: reads of up to 1 MiB can put the first report past 1 MB.
    assert re.search(r"Downloading: [\d.]+ (KB|MB) of [\d.]+ (KB|MB) \(\d+%\)", label), label
    shot(page, tmp_path, "03-downloading")

    wait_card(page, task_id, "ready", timeout=40)
    assert page.execute_script("return window.notReloaded") is True
    steps = item.find_elements(By.CSS_SELECTOR, ".steps li.done time")
    assert len(steps) == 4 and all(step.text for step in steps)

    # The page reads the video's duration, plays it, and seeks through Range requests.
    video = item.find_element(By.TAG_NAME, "video")
    duration = float(wait_for(lambda: video.get_attribute("data-duration"), 15, what="the video's duration"))
    assert abs(duration - 5.0) < 0.2
    assert f"{duration:.1f} s" in item.find_element(By.CSS_SELECTOR, ".duration").text
    page.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "arguments[0].muted = true; arguments[0].play().then(() => done(true));",
        video,
    )
    wait_for(lambda: page.execute_script("return arguments[0].currentTime", video) > 0.3, 15, what="the video to play")
    page.execute_script("arguments[0].currentTime = 4.2", video)
    wait_for(
        lambda: page.execute_script("return !arguments[0].seeking && arguments[0].currentTime >= 4.2", video),
        15,
        what="the seek",
    )
    page.execute_script("arguments[0].pause(); arguments[0].currentTime = 2.5", video)
    wait_for(lambda: page.find_element(By.ID, "count-ready").text == "1", 10, what="the Ready counter")
    shot(page, tmp_path, "04-ready")
    video_responses = [r for r in responses(page) if f"/v1/tasks/{task_id}/video" in r["url"]]
    assert video_responses and all(r["status"] in (200, 206) for r in video_responses)
    assert any(r["status"] == 206 for r in video_responses)

    # A task DashScope fails shows its error code and message.
    prompt = page.find_element(By.ID, "prompt")
    prompt.send_keys("a scene that will not render [fail]")
    prompt.send_keys(Keys.CONTROL, Keys.ENTER)
    failed_id = wait_for(lambda: (newest := newest_card_id(page)) != task_id and newest, 15, what="the second card")
    failed = wait_card(page, failed_id, "failed", timeout=30)
    task = stack.task(failed_id)
    assert failed.find_element(By.CSS_SELECTOR, ".error-code").text == task["error"]["code"]
    assert failed.find_element(By.CSS_SELECTOR, ".error-message").text == task["error"]["message"]
    wait_for(lambda: page.find_element(By.ID, "count-failed").text == "1", 10, what="the Failed counter")
    shot(page, tmp_path, "05-failed")
    assert page.execute_script("return window.notReloaded") is True

    # Phone width: nothing wider than the screen.
    set_viewport(page, 390, 844)
    wait_for(
        lambda: page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"),
        5,
        what="the page to fit a phone-width screen",
    )
    shot(page, tmp_path, "06-phone")
    shot(page, tmp_path, "07-phone-tasks", scroll_to="#tasks-heading")

    # Nothing was fetched from anywhere but the service, and the script raised no error.
    urls = requested_urls(page)
    assert urls and all(url.startswith(stack.url + "/") or url.startswith(("data:", "blob:")) for url in urls), urls
    assert [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"] == []


def test_many_tasks_in_flight_share_one_stream(dash_stack: Stack, page: WebDriver, tmp_path: Path) -> None:
    stack = dash_stack
    stack.emulator.configure(render_seconds=60)
    created = [stack.create(f"waiting task {n}") for n in range(7)]
    open_dashboard(page, stack.url)
    wait_for(
        lambda: page.find_element(By.ID, "connection").text == "Live · following 7 tasks",
        10,
        what="one stream for the 7 tasks",
    )
    # A stream per task would take every connection the browser allows a host; the form still works.
    prompt = page.find_element(By.ID, "prompt")
    prompt.send_keys("one more")
    prompt.send_keys(Keys.CONTROL, Keys.ENTER)
    new_id = wait_for(
        lambda: (newest := newest_card_id(page)) != created[-1]["id"] and newest, 10, what="the eighth task's card"
    )
    wait_for(
        lambda: page.find_element(By.ID, "connection").text == "Live · following 8 tasks",
        10,
        what="the stream to take the new task in",
    )
    assert page.find_element(By.ID, "count-queued").text in {"5", "6"}
    shot(page, tmp_path, "01-eight-in-flight")

    # Cancel from the keyboard; the card follows the change.
    button = card(page, new_id).find_element(By.XPATH, ".//button[text()='Cancel']")
    button.send_keys(Keys.ENTER)
    wait_card(page, new_id, "canceled", timeout=10)
    assert stack.task(new_id)["status"] == "canceled"
    # Delete it, ended: its card goes, and so does the task.
    card(page, new_id).find_element(By.XPATH, ".//button[text()='Delete']").send_keys(Keys.ENTER)
    wait_for(lambda: card_status(page, new_id) is None, 10, what="the deleted task's card to go")
    assert stack.http.get(f"/v1/tasks/{new_id}").status_code == 404
    streams = [url for url in requested_urls(page) if "/v1/stream?" in url]
    assert len(streams) == 2  # the first seven, then the eight


def test_callback_deliveries_are_shown(dash_stack: Stack, page: WebDriver, tmp_path: Path) -> None:
    received: list[str] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(self.headers["webhook-id"])
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        open_dashboard(page, dash_stack.url)
        page.find_element(By.ID, "prompt").send_keys("a kite over green hills")
        page.find_element(By.CSS_SELECTOR, "details.more summary").click()
        page.find_element(By.ID, "callback").send_keys(f"http://127.0.0.1:{server.server_port}/hook")
        page.find_element(By.ID, "submit").click()
        task_id = wait_for(lambda: newest_card_id(page), 15, what="the task's card")
        item = wait_card(page, task_id, "ready", timeout=30)
        # Its last states came within a second: the counters still end up telling the same.
        wait_for(
            lambda: [page.find_element(By.ID, f"count-{name}").text for name in ("downloading", "ready")] == ["0", "1"],
            10,
            what="the counters to show the task ready",
        )
        wait_for(lambda: received, 15, what="the callback")

        def delivered() -> bool:
            # Deliveries change after the task's last state: the page reads them again when asked.
            item.find_element(By.CSS_SELECTOR, ".callbacks button").click()
            return "delivered" in item.find_element(By.CSS_SELECTOR, ".callbacks").text

        wait_for(delivered, 15, interval=0.3, what="the delivery shown as delivered")
        text = item.find_element(By.CSS_SELECTOR, ".callbacks").text
        assert "task.ready" in text and "1 attempt" in text and "HTTP 204" in text
        shot(page, tmp_path, "01-callback-delivered", scroll_to=f"#task-{task_id} .callbacks")
    finally:
        server.shutdown()
        server.server_close()


def test_with_tokens_the_page_asks_for_one(stack: Stack, page: WebDriver, tmp_path: Path) -> None:
    guarded = stack.serve(env={"WANHOOK_API_TOKENS": "token-a,token-b"})
    http = httpx.Client(base_url=guarded.url, timeout=30)
    mine = http.post(
        "/v1/tasks",
        json={"prompt": "mine: a heron in the reeds", "size": "832*480"},
        headers={"Authorization": "Bearer token-a"},
    ).json()
    theirs = http.post(
        "/v1/tasks",
        json={"prompt": "theirs: a city at night", "size": "832*480"},
        headers={"Authorization": "Bearer token-b"},
    ).json()

    # Reads may carry the token in the query (for EventSource and <video>); writes may not.
    assert http.get("/v1/stats").status_code == 401
    assert http.get("/v1/stats", params={"access_token": "token-a"}).status_code == 200
    assert http.get("/v1/tasks", params={"access_token": "nope"}).status_code == 401
    listed = http.get("/v1/tasks", params={"access_token": "token-a"}).json()["tasks"]
    assert [task["id"] for task in listed] == [mine["id"]]
    refused = http.post("/v1/tasks?access_token=token-a", json={"prompt": "p", "size": "832*480"})
    assert refused.status_code == 401
    wait_for(
        lambda: http.get(f"/v1/tasks/{mine['id']}", params={"access_token": "token-a"}).json()["status"] == "ready",
        30,
        what="the token's task to be ready",
    )
    with http.stream(
        "GET", "/v1/stream", params={"tasks": f"{mine['id']},{theirs['id']}", "access_token": "token-a"}
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith(("event: ", "data: "))]
    assert lines[0] == "event: task.ready" and json.loads(lines[1][6:])["id"] == mine["id"]
    assert lines[2:] == ["event: end", "data: {}"]  # the other token's task is left out
    # The page itself holds no task: it is served without a token.
    assert http.get("/").status_code == 200
    assert "theirs" not in http.get("/").text

    open_dashboard_for_token = guarded.url + "/"
    page.get(open_dashboard_for_token)
    signin = wait_for(
        lambda: (form := page.find_element(By.ID, "signin")).is_displayed() and form, 10, what="the token form"
    )
    assert not page.find_element(By.ID, "compose").is_displayed()
    assert page.switch_to.active_element.get_attribute("id") == "token"
    page.switch_to.active_element.send_keys("wrong", Keys.ENTER)
    wait_for(lambda: "refused" in page.find_element(By.ID, "signin-error").text, 10, what="the refusal")
    shot(page, tmp_path, "01-token-refused")
    page.find_element(By.ID, "token").send_keys("token-a", Keys.ENTER)
    item = wait_card(page, mine["id"], "ready", timeout=15)
    assert not signin.is_displayed()
    assert "theirs" not in page.find_element(By.ID, "tasks").text
    assert page.find_elements(By.CSS_SELECTOR, "#tasks > li.task") == [item]
    duration = wait_for(
        lambda: item.find_element(By.TAG_NAME, "video").get_attribute("data-duration"),
        15,
        what="the video to load with the token",
    )
    assert abs(float(duration) - 5.0) < 0.2
    assert page.find_element(By.ID, "counters-note").is_displayed()
    shot(page, tmp_path, "02-token-accepted")

    # A task submitted from the page is followed through the stream with the token.
    page.find_element(By.ID, "prompt").send_keys("mine too: a fox in the snow", Keys.CONTROL, Keys.ENTER)
    new_id = wait_for(lambda: (newest := newest_card_id(page)) != mine["id"] and newest, 15, what="the new card")
    wait_card(page, new_id, "ready", timeout=30)
    assert http.get(f"/v1/tasks/{new_id}", headers={"Authorization": "Bearer token-b"}).status_code == 404
    http.close()


def test_page_without_javascript(stack: Stack, page: WebDriver, tmp_path: Path) -> None:
    ready = stack.wait_status(stack.create("a paper boat on a calm lake")["id"], "ready")
    failed = stack.wait_status(stack.create("a storm [fail]")["id"])
    response = stack.http.get("/")
    assert response.status_code == 200
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    text = response.text
    assert "a paper boat on a calm lake" in text and f'src="/v1/tasks/{ready["id"]}/video"' in text
    assert failed["error"]["code"] in text
    # Every asset is the service's own: no address elsewhere in the page, its style or its script.
    for path in ("/", "/static/dashboard.css", "/static/dashboard.js", "/static/icon.svg"):
        asset = stack.http.get(path)
        assert asset.status_code == 200, path
        assert not re.search(
            r"""(src|href)=["'](?!/|#)|url\((?!["']?/)|https?://(?!example\.com)""",
            asset.text.replace('xmlns="http://www.w3.org/2000/svg"', ""),
        ), path

    page.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        page.get(stack.url + "/")
        tasks = page.find_element(By.ID, "tasks").text
        assert "a paper boat on a calm lake" in tasks and failed["error"]["code"] in tasks
        assert page.find_element(By.ID, "count-ready").text == "1"
        assert not page.find_element(By.ID, "prompt").is_displayed()
        assert "Submitting needs JavaScript" in page.find_element(By.ID, "compose").text
        shot(page, tmp_path, "01-no-javascript")
    finally:
        page.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def test_demo_serve_prints_the_page_and_keeps_serving(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    demo = Process(
        "demo",
        wanhook("demo", "a kite over green hills", "--serve"),
        tmp_path,
        env={
            "WANHOOK_REDIS_URL": redis_url,
            "WANHOOK_DATA_DIR": str(tmp_path / "data"),
            "WANHOOK_DEMO_RENDER_SECONDS": "0.3",
            "WANHOOK_API_TOKENS": "",
            "COLUMNS": "200",
        },
    )
    processes.append(demo.start())
    url = wait_for(
        lambda: (
            "serving until interrupted" in demo.log()
            and re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/", demo.log()).group(1)
        ),
        60,
        what="the demo to print its page and keep serving",
    )
    assert demo.alive
    assert "a kite over green hills" in httpx.get(url + "/", timeout=10).text
    task = httpx.get(url + "/v1/tasks", timeout=10).json()["tasks"][0]
    assert task["status"] == "ready"
    assert demo.proc is not None
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(20) == 0


def test_form_per_kind(dash_stack: Stack, page: WebDriver, tmp_path: Path) -> None:
    """Choosing a kind shows only its fields and models; images chosen as files make image tasks."""
    from PIL import Image

    stack = dash_stack
    images = {}
    for name, colour, shape in (("first", (200, 40, 40), (640, 480)), ("last", (40, 40, 200), (640, 480))):
        images[name] = tmp_path / f"{name}.jpg"
        Image.new("RGB", shape, colour).save(images[name], "JPEG")
    open_dashboard(page, stack.url)
    kind, model, resolution, duration, size = (
        Select(page.find_element(By.ID, name)) for name in ("kind", "model", "resolution", "duration", "size")
    )

    def shown(element_id: str) -> bool:
        return page.find_element(By.ID, element_id).is_displayed()

    def models_offered() -> list[str]:
        return [
            option.get_attribute("value")
            for option in model.options
            if page.execute_script("return !arguments[0].hidden", option)
        ]

    # Each kind's own fields, and of the kinds' fields only those.
    own = {"t2v": {"size"}, "i2v": {"image", "resolution"}, "kf2v": {"first-frame", "last-frame", "resolution"}}

    def kind_fields_shown() -> set[str]:
        return {field for field in set().union(*own.values()) if shown(field)}

    assert shown("size") and not shown("image") and not shown("first-frame") and not shown("resolution")
    assert kind_fields_shown() == own["t2v"]
    assert models_offered() == [name for name, rules in MODELS.items() if rules.kind == "t2v"]
    for chosen, fields in (("i2v", ("image",)), ("kf2v", ("first-frame", "last-frame")), ("t2v", ())):
        kind.select_by_value(chosen)
        assert models_offered() == [name for name, rules in MODELS.items() if rules.kind == chosen]
        assert kind_fields_shown() == own[chosen], chosen
        if chosen == "t2v":  # back to text-to-video: one of its models, with its sizes again
            rules = MODELS[model.first_selected_option.get_attribute("value") or ""]
            assert rules.kind == "t2v" and [option.get_attribute("value") for option in size.options] == list(
                rules.sizes
            )
            continue
        assert all(shown(field) for field in fields) and shown("resolution") and not shown("size")
        for name in models_offered():
            model.select_by_value(name)
            assert [option.get_attribute("value") for option in resolution.options] == list(MODELS[name].tiers)
            assert [int(option.get_attribute("value")) for option in duration.options] == list(MODELS[name].durations)
        shot(page, tmp_path, f"kind-{chosen}")

    # First and last frame: both files, no prompt.
    kind.select_by_value("kf2v")
    model.select_by_value("wan2.2-kf2v-flash")
    resolution.select_by_value("480P")
    page.find_element(By.ID, "first-frame").send_keys(str(images["first"]))
    page.find_element(By.ID, "submit").click()
    assert "Choose an image" in page.find_element(By.ID, "compose-error").text  # the last frame is missing
    page.find_element(By.ID, "last-frame").send_keys(str(images["last"]))
    page.find_element(By.ID, "submit").click()
    task_id = wait_for(lambda: newest_card_id(page), 15, what="the new task's card")
    wait_card(page, task_id, "ready", timeout=60)
    task = stack.task(task_id)
    assert task["model"] == "wan2.2-kf2v-flash" and task["parameters"]["resolution"] == "480P"
    assert task["parameters"]["first_frame_url"].startswith("data:image/jpeg;base64,")

    # Image to video, with a prompt.
    kind.select_by_value("i2v")
    page.find_element(By.ID, "image").send_keys(str(images["first"]))
    page.find_element(By.ID, "prompt").send_keys("the red square turns")
    page.find_element(By.ID, "submit").click()
    second = wait_for(lambda: (found := newest_card_id(page)) != task_id and found, 15, what="the second card")
    wait_card(page, second, "ready", timeout=60)
    assert stack.task(second)["model"] == "wan2.2-i2v-flash"
    shot(page, tmp_path, "kinds-ready")
