"""Headless Chromium for the page tests: Debian's ``chromium`` and ``chromium-driver``,
driven by selenium over WebDriver (no driver is downloaded: the paths are given).

``.ci/run`` installs both packages where they are missing. A machine without them
fails these tests with the install command rather than skipping them: a skipped
browser test would hide a broken page.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

INSTALL_HINT = "apt-get install -y --no-install-recommends chromium chromium-driver"


def _find(env: str, *names: str) -> str:
    given = os.environ.get(env)
    if given:
        return given
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(f"{names[0]} not found (set {env}, or: {INSTALL_HINT})")


MIN_WINDOW_WIDTH = 500  # Chromium keeps a window at least this wide, headless too


def set_viewport(driver: Any, width: int, height: int) -> None:
    """A viewport ``width`` x ``height`` CSS pixels, narrower than a window can be
    emulated as Chromium's device toolbar does (DevTools ``setDeviceMetricsOverride``)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[Any]:
    """A headless Chromium window of ``width`` x ``height`` CSS pixels (a WebDriver);
    below ``MIN_WINDOW_WIDTH`` the viewport is emulated (``set_viewport``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _find("CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    service = Service(_find("CHROMEDRIVER", "chromedriver", "chromium-driver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    if width < MIN_WINDOW_WIDTH:
        set_viewport(driver, width, height)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, path: Path) -> Path:
    """Save a PNG of the window to ``path`` (its folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path


def browser_errors(driver: Any) -> list[str]:
    """Severe messages from the page's console (script errors, failed loads)."""
    try:
        logs = driver.get_log("browser")
    except Exception:  # not every driver keeps the log
        return []
    return [e["message"] for e in logs if e.get("level") == "SEVERE"]
