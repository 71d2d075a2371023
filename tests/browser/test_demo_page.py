"""The issue's own "done when": run the main job (``vsearch demo``, what ``make demo``
runs) as a person would in a terminal, open the search page it prints, drop in a photo,
see the nearest pictures; Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.chromium import browser_errors, chromium
from vsearch.ids import item_id

pytestmark = pytest.mark.slow


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_make_demo_prints_a_search_page_that_finds_a_dropped_photo(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("vsearch")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSEARCH_")}
    demo_dir = tmp_path / "demo-data"
    # --serve: what a terminal gets by default (stdin is not a terminal under pytest).
    # Ctrl-C reaches a program in a terminal; a runner started in the background (as
    # `cmd &` from a script) passes SIGINT on ignored, and Python then never raises
    # KeyboardInterrupt. The child gets the terminal's disposition back.
    proc = subprocess.Popen([str(exe), "demo", "--dir", str(demo_dir), "--images", "40",
                             "--serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, preexec_fn=_sigint_as_in_a_terminal)  # fmt: skip
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 600
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the demo ended before printing its search page:\n" + "".join(seen)
            seen.append(line)
            if found := re.match(r"Search page: (http://\S+/)", line.strip()):
                url = found.group(1)
        assert url is not None, "".join(seen)
        photo = sorted((demo_dir / "images").rglob("*.jpg"))[7]
        with chromium() as browser:
            browser.get(url)
            wait = WebDriverWait(browser, 60)
            wait.until(lambda d: "recall@10" in d.find_element(By.ID, "snapshot").text)
            browser.find_element(By.ID, "file").send_keys(str(photo))
            wait.until(lambda d: " results for " in d.find_element(By.ID, "status").text)
            first = browser.find_element(By.CSS_SELECTOR, "#results .hit")
            key = photo.relative_to(demo_dir / "images").as_posix()  # the folder source's key
            assert first.get_attribute("data-id") == str(item_id(key))
            wait.until(lambda d: d.execute_script(
                "return [...document.querySelectorAll('#results img.thumb')]"
                ".every(i => i.complete && i.naturalWidth > 0)"))  # fmt: skip
            assert browser_errors(browser) == []
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0, "".join(seen) + proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
