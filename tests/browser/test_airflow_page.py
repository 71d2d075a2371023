"""The "vsearch snapshots" pages rendered by a running Airflow, in headless Chromium.

A real API server (``airflow api-server``) on the home ``vsearch airflow init`` writes,
as ``make airflow`` does: the SimpleAuthManager with user ``admin`` (its password in
``passwords.json``) and the ``vsearch_store`` connection. Into that store go a
snapshot made by the pipeline's stages (run record, IVF index, validation report) and
two flat ones, one with a long tagged id. The browser logs in through Airflow's login
page, as a user does, and checks that the list fits the window at 1400 and 400 px
wide, that a snapshot's page draws its curve, and that the page works inside the UI.

Screenshots go to pytest's tmp dir; with ``VSEARCH_SAVE_SCREENSHOTS=1`` the snapshot
page inside the Airflow UI is also copied to ``docs/images/airflow-snapshots.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser.chromium import browser_errors, chromium, screenshot, set_viewport
from tests.dags.test_plugin import BUILT, pipeline_snapshot
from tests.fixtures.snapshots import DIM, build_snapshot, build_synthetic_snapshot, sample_vectors
from tests.fixtures.snapshots import snapshot_id as day_snapshot_id
from vsearch.catalog import publish_snapshot
from vsearch.cli.service_process import free_port, http_json
from vsearch.config import Settings
from vsearch.index.report import read_report
from vsearch.storage import LocalStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LONG_ID = day_snapshot_id(45, "compactedwithaverylongtagthatmustwrapinnarrowwindows")


class AirflowUI:
    """``vsearch airflow init``, then only the API server (no scheduler: pages only)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.base = f"http://localhost:{self.port}"
        self.home = root / "data" / "airflow"
        self.log = root / "api-server.log"
        self.env = {k: v for k, v in os.environ.items()
                    if k != "AIRFLOW_HOME" and not k.startswith("AIRFLOW__")}  # fmt: skip
        # Pages only, one process using the DB: SQLite (VSEARCH_AIRFLOW_DB), not the
        # PostgreSQL server `vsearch airflow up` runs, which `init` stops when done.
        self.env.update(VSEARCH_DATA_DIR=str(root / "data"),
                        VSEARCH_SERVICE_URL="http://localhost:8000",
                        VSEARCH_AIRFLOW_DB=f"sqlite:///{self.home}/airflow.db")  # fmt: skip
        argv = [str(BIN / "vsearch"), "airflow", "init", "--port", str(self.port)]
        init = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=300)
        assert init.returncode == 0, init.stdout[-3000:] + init.stderr[-3000:]
        self.store = LocalStore(Settings.load(environ={}, data_dir=str(root / "data")).store)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def password(self) -> str:
        return str(json.loads((self.home / "passwords.json").read_text())["admin"])

    def start(self, timeout: float = 180) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "airflow"), "api-server", "--port", str(self.port), "--workers", "1"],
            env={**self.env, "AIRFLOW_HOME": str(self.home)}, stdout=open(self.log, "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]
            try:
                status, _ = http_json("POST", f"{self.base}/auth/token",
                                      {"username": "admin", "password": self.password})  # fmt: skip
                if status in (200, 201):
                    return
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError("the API server did not come up:\n" + self.log.read_text()[-4000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowUI]:
    ui = AirflowUI(tmp_path_factory.mktemp("airflow-ui"))
    flat = build_synthetic_snapshot(ui.store, datetime(2026, 2, 1, tzinfo=UTC), n=300)
    publish_snapshot(ui.store, flat)
    pipeline_snapshot(ui.store, ui.root / "pipeline")  # BUILT, the live one
    xb = sample_vectors(200, DIM, seed=7)
    tagged = build_snapshot(ui.store, LONG_ID, xb, np.arange(200, dtype="int64"))
    publish_snapshot(ui.store, tagged)  # older than BUILT: recorded, CURRENT stays
    try:
        ui.start()
        yield ui
    finally:
        ui.stop()


def wait_for(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def log_in(driver: Any, ui: AirflowUI, path: str) -> None:
    """Open ``path``: Airflow sends the browser to its login page, then back to ``path``."""
    from selenium.webdriver.common.by import By

    driver.get(ui.base + path)
    wait_for(driver, lambda d: "/auth/login" in d.current_url)
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "input[name=username]"))
    driver.find_element(By.CSS_SELECTOR, "input[name=username]").send_keys("admin")
    driver.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(ui.password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(driver, lambda d: d.current_url == ui.base + path)


def set_width(driver: Any, width: int, height: int) -> None:
    set_viewport(driver, width, height)


def page_fits(driver: Any) -> tuple[int, int]:
    """(the document's width, the window's): no horizontal scrolling when the first is
    not larger."""
    width, inner = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    return int(width), int(inner)


def curve_points(driver: Any) -> int:
    from selenium.webdriver.common.by import By

    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.curve"))
    return len(driver.find_elements(By.CSS_SELECTOR, "svg.curve g.point"))


@pytest.mark.parametrize("width", [1400, 400])
def test_the_list_fits_the_window_and_opens_a_snapshot(
    airflow_ui: AirflowUI, width: int, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    with chromium(width, 900) as driver:
        set_width(driver, width, 900)
        log_in(driver, airflow_ui, "/vsearch/")
        assert driver.title == "vsearch snapshots"
        rows = driver.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert len(rows) == 3 and LONG_ID in driver.page_source
        document, window = page_fits(driver)
        assert window == width and document <= window, (document, window)
        screenshot(driver, tmp_path / f"list-{width}.png")

        driver.find_element(By.LINK_TEXT, BUILT).click()
        wait_for(driver, lambda d: d.current_url.endswith(f"/vsearch/snapshots/{BUILT}"))
        assert curve_points(driver) == len(read_report(airflow_ui.store, BUILT).curve) >= 3
        document, window = page_fits(driver)
        assert document <= window, (document, window)
        screenshot(driver, tmp_path / f"snapshot-{width}.png")
        assert browser_errors(driver) == []


def test_a_snapshot_inside_the_airflow_ui(airflow_ui: AirflowUI, tmp_path: Path) -> None:
    """The nav entry's page (the UI frames ``vsearch/``), after a login that started
    from a snapshot's own address."""
    from selenium.webdriver.common.by import By

    with chromium(1400, 1300) as driver:  # tall enough to show the lineage too
        log_in(driver, airflow_ui, f"/vsearch/snapshots/{BUILT}")
        assert curve_points(driver) >= 3
        driver.get(airflow_ui.base + "/plugin/vsearch-snapshots")
        frame = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "iframe"))[0]
        driver.switch_to.frame(frame)
        wait_for(driver, lambda d: d.find_elements(By.LINK_TEXT, BUILT))[0].click()
        assert curve_points(driver) == len(read_report(airflow_ui.store, BUILT).curve)
        driver.switch_to.default_content()
        shot = screenshot(driver, tmp_path / "airflow-snapshots.png")
        assert browser_errors(driver) == []
    if os.environ.get("VSEARCH_SAVE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "images" / "airflow-snapshots.png")
