"""What the browser tests share: the FiftyOne App server in a subprocess, a headless Chromium
page (Playwright) that reaches localhost only, and the check that a sidebar field is drawn.

Debian's Chromium (scripts/install_test_tools.sh); the App server uses this process's
environment, so the test's MongoDB.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER_START_S = 90  # the App server imports all of FiftyOne: slow on 2 cores
PAGE_TIMEOUT_MS = 90_000

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} missing: run scripts/install_test_tools.sh (Debian's chromium)",
)


@contextlib.contextmanager
def app_server(log_path: Path, env: dict | None = None):
    """The App server (``fiftyone.server.main``) on a free localhost port, in a process group of
    its own; yields ``(base_url, tail)`` once it answers (``tail()``: the end of its log) and
    stops it, and any child it made, afterwards. ``env`` defaults to this process's, so the
    server uses the same MongoDB."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def tail() -> str:
        return log_path.read_text(errors="replace")[-3000:]

    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "fiftyone.server.main", "--port", str(port),
             "--address", "127.0.0.1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"App server exited with {server.returncode}:\n{tail()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"App server not up after {SERVER_START_S} s:\n{tail()}")
            time.sleep(0.5)
        yield url, tail
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(15)


def _localhost_only(route) -> None:
    # The App also asks for web fonts, which must not leave the machine.
    if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
        route.continue_()
    else:
        route.abort()


@contextlib.contextmanager
def browser_page(failure: Path, width: int = 1280, height: int = 720) -> Iterator:
    """A Playwright page of headless Chromium that reaches 127.0.0.1 only, with the tests'
    default timeout. Should the block raise, the page is saved to ``failure`` (a PNG, removed
    at the start so that one left over from an earlier run cannot mislead)."""
    from playwright.sync_api import sync_playwright

    failure.unlink(missing_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.route("**/*", _localhost_only)
            try:
                yield page
            except Exception:
                page.screenshot(path=str(failure))
                raise
        finally:
            browser.close()


def image(png: bytes) -> np.ndarray:
    """A screenshot as int16 RGB ``(H, W, 3)`` (signed: differences of shots stay exact)."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def artifacts() -> Path:
    path = Path(os.environ.get("POINTTRACK_TEST_ARTIFACTS", "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def hide_and_show(page, field: str, tile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Screenshots of ``tile`` with the sidebar field ``field`` (``frames.tracks``) shown,
    hidden through its checkbox, and shown again."""
    from playwright.sync_api import expect

    shown = image(tile.screenshot())
    checkbox = page.locator(f'[data-cy="checkbox-{field}"]')
    expect(checkbox.locator("input")).to_be_checked()
    checkbox.click()
    expect(checkbox.locator("input")).not_to_be_checked()
    page.wait_for_timeout(1500)
    hidden = image(tile.screenshot())
    checkbox.click()
    page.wait_for_timeout(1500)
    return shown, hidden, image(tile.screenshot())


def assert_field_drawn(shots: tuple[np.ndarray, np.ndarray, np.ndarray], field: str,
                       min_pixels: int) -> None:
    """Hiding ``field`` changed at least ``min_pixels`` pixels of the tile, and showing it
    again restored it (`hide_and_show`'s shots)."""
    shown, hidden, again = shots
    assert shown.shape == hidden.shape == again.shape
    changed = np.abs(shown - hidden).max(axis=2) > 40
    restored = np.abs(shown - again).max(axis=2) > 40
    print(f"pixels changed by hiding {field}: {changed.sum()}, after showing it again: "
          f"{restored.sum()}")
    assert changed.sum() > min_pixels, f"hiding {field} changed nothing on the tile"
    assert restored.sum() < changed.sum() / 4, f"showing {field} again did not restore it"
