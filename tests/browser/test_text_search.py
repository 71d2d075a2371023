"""The search page with an encoder that has a text tower: the text box is on, a typed
query (Enter) gives results, and hits of a snapshot without thumbnails show a
placeholder without asking for one. The app runs under waitress (the service's server)
in this process, on loopback: the encoder is an in-process stand-in with a text tower
(tests/service/conftest.py), since no CLIP weights can be downloaded here."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import waitress
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from service.app import close_app, create_app
from tests.browser.chromium import browser_errors, chromium
from tests.fixtures.snapshots import publish_series
from tests.service.conftest import HashEncoder
from vsearch.storage import LocalStore


@pytest.fixture(scope="module")
def text_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("text-page")
    store = LocalStore(root / "store")
    publish_series(store, [1], n=300)
    app = create_app({"DATA_DIR": str(root / "data"), "STORE_OBJECT": store,
                      "ENCODER": HashEncoder(), "WATCH_INTERVAL_S": 0,
                      "LOAD_ON_START": "sync"})  # fmt: skip
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"  # type: ignore[union-attr]
    finally:
        server.close()
        close_app(app)


def test_text_search_by_keyboard_with_placeholders_for_missing_thumbnails(
    text_service: str,
) -> None:
    with chromium() as browser:
        browser.get(text_service + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: "300 vectors" in d.find_element(By.ID, "snapshot").text)
        box = browser.find_element(By.ID, "text")
        assert box.is_enabled()
        assert not browser.find_element(By.ID, "text-reason").is_displayed()
        box.send_keys("a red bicycle", Keys.ENTER)
        wait.until(lambda d: " results for " in d.find_element(By.ID, "status").text)
        assert '"a red bicycle"' in browser.find_element(By.ID, "status").text
        hits: list[Any] = browser.find_elements(By.CSS_SELECTOR, "#results .hit")
        assert len(hits) == 10
        # The synthetic snapshot has no thumbnails: placeholders, and no request for one.
        assert len(browser.find_elements(By.CSS_SELECTOR, "#results .missing")) == 10
        requested = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert not [u for u in requested if "/thumbnail" in u]
        assert browser_errors(browser) == []
