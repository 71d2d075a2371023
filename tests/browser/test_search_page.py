"""The search page in headless Chromium, against the real server on loopback serving a
snapshot of 256 real COCO photos (built by the real stages, EfficientNet-Lite0).

What a person does: upload, drop or paste a photo and see it first with its own
thumbnail; click a result for "more like this"; send a bad file and read the API's
reason; see an upsert (through the API, with its key) on the next search with its
thumbnail; use the page at phone width and by keyboard. Screenshots go to the test's
tmp dir; with VSEARCH_SAVE_SCREENSHOTS=1 the desktop one also goes to docs/images/.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.chromium import browser_errors, chromium, screenshot
from tests.fixtures.photos import PhotoSnapshot
from vsearch.cli.service_process import http_json, running_service

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "browser-test-key"


@pytest.fixture(scope="module")
def photo_host(
    photo_snapshot: PhotoSnapshot, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An HTTP server on loopback with the photos as files (for image-URL searches)."""
    root = tmp_path_factory.mktemp("photo-host")
    for key, data in list(photo_snapshot.photos.items())[:60]:
        (root / f"{key}.jpg").write_bytes(data)
    handler = partial(QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def service(
    photo_snapshot: PhotoSnapshot, tmp_path_factory: pytest.TempPathFactory, photo_host: str
) -> Iterator[str]:
    data = tmp_path_factory.mktemp("page-service")
    env = {
        "VSEARCH_STORE": str(photo_snapshot.store.root),
        "VSEARCH_DATA_DIR": str(data),
        "VSEARCH_API_KEY": API_KEY,
        "VSEARCH_IMAGE_FETCH_ALLOW": "127.0.0.0/8",  # the photo host above
    }
    with running_service(env, log_path=data / "service.log") as base:
        yield base


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium(1400, 900) as driver:
        yield driver
        assert browser_errors(driver) == []  # no script error, no failed load


def open_page(driver: Any, base: str) -> None:
    driver.get(base + "/")
    wait(driver, lambda d: "recall@10" in d.find_element(By.ID, "snapshot").text)


def wait(driver: Any, until: Any, timeout: float = 60) -> Any:
    return WebDriverWait(driver, timeout).until(until)


def results(driver: Any) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, "#results .hit")


def searched(driver: Any, before: str) -> None:
    """Wait until the status line moved on from ``before`` to a finished search."""

    def done(d: Any) -> bool:
        status = d.find_element(By.ID, "status").text
        return (status != before and " results for " in status) or d.find_element(
            By.ID, "error"
        ).is_displayed()

    wait(driver, done)


def thumbnails_loaded(driver: Any) -> list[tuple[int, int]]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results img.thumb')]"
        ".filter(i => i.complete).map(i => [i.naturalWidth, i.naturalHeight])"
    )


def photo_file(tmp_path: Path, photo_snapshot: PhotoSnapshot, n: int) -> tuple[Path, str]:
    key = list(photo_snapshot.photos)[n]
    path = tmp_path / f"{key}.jpg"
    path.write_bytes(photo_snapshot.photos[key])
    return path, str(photo_snapshot.id_of(key))


def test_upload_a_photo_and_see_its_own_thumbnail_first(
    service: str, browser: Any, photo_snapshot: PhotoSnapshot, tmp_path: Path
) -> None:
    open_page(browser, service)
    snapshot = browser.find_element(By.ID, "snapshot").text
    assert photo_snapshot.manifest.snapshot_id in snapshot and "256 vectors" in snapshot
    # EfficientNet-Lite0 has no text tower: the box is off and says why.
    assert not browser.find_element(By.ID, "text").is_enabled()
    assert "embeds images only" in browser.find_element(By.ID, "text-reason").text
    path, own_id = photo_file(tmp_path, photo_snapshot, 5)
    browser.find_element(By.ID, "file").send_keys(str(path))
    searched(browser, "")
    hits = results(browser)
    assert len(hits) == 10 and hits[0].get_attribute("data-id") == own_id
    wait(browser, lambda d: len(thumbnails_loaded(d)) == 10)
    with Image.open(io.BytesIO(photo_snapshot.photos[path.stem])) as im:
        w, h = im.size
    first = thumbnails_loaded(browser)[0]
    assert max(first) == 160 and abs(first[0] / first[1] - w / h) < 0.05
    assert all(w > 0 for w, _ in thumbnails_loaded(browser))  # every thumbnail decoded
    shot = screenshot(browser, tmp_path / "search-page.png")
    if os.environ.get("VSEARCH_SAVE_SCREENSHOTS") == "1":
        shutil.copy(shot, ROOT / "docs" / "images" / "search-page.png")
    # Nothing was fetched from anywhere but the service.
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
    )
    assert set(origins) <= {service}


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_a_dropped_or_pasted_photo_is_searched(
    service: str, browser: Any, photo_snapshot: PhotoSnapshot, how: str
) -> None:
    open_page(browser, service)
    key = list(photo_snapshot.photos)[9]
    data = base64.b64encode(photo_snapshot.photos[key]).decode()
    browser.execute_script(
        """
        const [data, how] = arguments;
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "photo.jpg", {type: "image/jpeg"}));
        const event = how === "drop"
          ? new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true})
          : new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true});
        (how === "drop" ? document.getElementById("drop") : document).dispatchEvent(event);
        """,
        data,
        how,
    )
    searched(browser, "")
    assert results(browser)[0].get_attribute("data-id") == str(photo_snapshot.id_of(key))


def test_an_image_url_is_searched(
    service: str, browser: Any, photo_snapshot: PhotoSnapshot, photo_host: str
) -> None:
    open_page(browser, service)
    key = list(photo_snapshot.photos)[50]
    browser.find_element(By.ID, "image-url").send_keys(f"{photo_host}/{key}.jpg", Keys.ENTER)
    searched(browser, "")
    assert results(browser)[0].get_attribute("data-id") == str(photo_snapshot.id_of(key))
    # A URL the service cannot fetch: the API's reason on the page.
    before = browser.find_element(By.ID, "status").text
    url = browser.find_element(By.ID, "image-url")
    url.clear()
    url.send_keys(f"{photo_host}/missing.jpg", Keys.ENTER)
    error = wait(browser, lambda d: (e := d.find_element(By.ID, "error")).is_displayed() and e)
    assert "404" in error.text, (before, error.text)
    assert len(browser_errors(browser)) == 1  # the refused search, logged by the browser


def test_clicking_a_result_searches_more_like_it(
    service: str, browser: Any, photo_snapshot: PhotoSnapshot, tmp_path: Path
) -> None:
    open_page(browser, service)
    path, _ = photo_file(tmp_path, photo_snapshot, 20)
    browser.find_element(By.ID, "file").send_keys(str(path))
    searched(browser, "")
    second = results(browser)[1]
    clicked = second.get_attribute("data-id")
    before = browser.find_element(By.ID, "status").text
    second.click()
    searched(browser, before)
    assert "more like" in browser.find_element(By.ID, "status").text
    shown = [h.get_attribute("data-id") for h in results(browser)]
    # The page sent the exact 63-bit id: its answer is the API's own for that id.
    status, body = http_json("POST", f"{service}/v1/search", {"id": int(clicked), "k": 10})
    assert status == 200 and shown == [str(h["id"]) for h in body["hits"]]
    assert clicked not in shown
    # By keyboard: Tab onto a result and press Enter.
    before = browser.find_element(By.ID, "status").text
    target = results(browser)[0]
    target_id = target.get_attribute("data-id")
    browser.execute_script("arguments[0].focus()", target)
    target.send_keys(Keys.ENTER)
    searched(browser, before)
    assert target_id not in [h.get_attribute("data-id") for h in results(browser)]


def test_a_bad_file_shows_the_api_error(service: str, browser: Any, tmp_path: Path) -> None:
    open_page(browser, service)
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_bytes(b"<html>this is not an image</html>")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    error = wait(browser, lambda d: (e := d.find_element(By.ID, "error")).is_displayed() and e)
    assert "the image was rejected" in error.text
    assert results(browser) == []
    logged = browser_errors(browser)  # reading the log empties it
    assert len(logged) == 1 and "/v1/search" in logged[0] and "400" in logged[0]
    # Text search is refused by the API the same way the page explains it.
    status, body = http_json("POST", f"{service}/v1/search", {"text": "a dog"})
    assert status == 400 and body["error"]["code"] == "text_not_supported"


def test_an_upsert_appears_on_the_next_search_with_its_thumbnail(
    service: str, browser: Any, photo_snapshot: PhotoSnapshot, tmp_path: Path
) -> None:
    key = list(photo_snapshot.photos)[30]
    with Image.open(io.BytesIO(photo_snapshot.photos[key])) as im:
        mirrored = ImageOps.mirror(im.convert("RGB"))
    buf = io.BytesIO()
    mirrored.save(buf, "JPEG", quality=90)
    path = tmp_path / "mirrored.jpg"
    path.write_bytes(buf.getvalue())
    item = {"id": 4242, "image_b64": base64.b64encode(buf.getvalue()).decode(),
            "metadata": {"caption": "a mirrored photo, upserted"}}  # fmt: skip
    status, body = http_json("PUT", f"{service}/v1/items", {"items": [item]},
                             headers={"X-API-Key": API_KEY})  # fmt: skip
    assert status == 200, body
    open_page(browser, service)
    assert "1 live upserts" in browser.find_element(By.ID, "snapshot").text
    browser.find_element(By.ID, "file").send_keys(str(path))
    searched(browser, "")
    first = results(browser)[0]
    assert first.get_attribute("data-id") == "4242"
    assert first.find_element(By.CSS_SELECTOR, ".source").text == "delta"
    assert "upserted" in first.find_element(By.CSS_SELECTOR, ".caption").text
    wait(browser, lambda d: len(thumbnails_loaded(d)) == 10)
    assert max(thumbnails_loaded(browser)[0]) == 160
    # The page has no write endpoint: no form posts to /v1/items.
    assert '/v1/items"' not in browser.page_source and "api-key" not in browser.page_source.lower()


def test_the_page_fits_a_phone_and_works_by_keyboard(
    service: str, photo_snapshot: PhotoSnapshot, tmp_path: Path
) -> None:
    with chromium(390, 844) as phone:
        open_page(phone, service)
        path, own_id = photo_file(tmp_path, photo_snapshot, 40)
        phone.find_element(By.ID, "file").send_keys(str(path))
        searched(phone, "")
        wait(phone, lambda d: len(thumbnails_loaded(d)) == 10)
        width = phone.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
        assert width[1] == 390 and width[0] <= width[1], width
        assert results(phone)[0].get_attribute("data-id") == own_id
        # The k control by keyboard: focus it, step from 10 up to 5, and the search reruns.
        before = phone.find_element(By.ID, "status").text
        phone.find_element(By.ID, "k").send_keys(Keys.ARROW_UP)
        searched(phone, before)
        assert len(results(phone)) == 5
        screenshot(phone, tmp_path / "search-page-phone.png")
        assert browser_errors(phone) == []
