"""The FiftyOne App in a real browser: a dataset with tracked keypoints, seen by headless Chromium.

Starts the App server (``fiftyone.server.main``) in a subprocess on a free localhost port, with
this process's environment (so it uses the same isolated MongoDB as the test), opens the dataset
in Debian's Chromium through Playwright, and checks that the sample grid rendered the videos with
the keypoint field "tracks" present and drawn. The screenshot is saved as ``app_grid.png`` in
``$POINTTRACK_TEST_ARTIFACTS``.
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
import uuid
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

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} missing: run scripts/install_test_tools.sh (Debian's chromium)",
)

NUM_VIDEOS, NUM_FRAMES, NUM_POINTS = 4, 12, 8
W, H = 320, 240
PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]


def _pan(photo: np.ndarray, t: int, step: tuple[int, int]) -> np.ndarray:
    """Frame ``t`` of a camera panning over ``photo`` by ``step`` pixels a frame."""
    x0, y0 = step[0] * t, step[1] * t
    return np.ascontiguousarray(photo[y0 : y0 + H, x0 : x0 + W])


def _make_dataset(name: str, root: Path):
    """Videos panning over photos, with per-frame keypoints that follow the photo's content."""
    import cv2
    import fiftyone as fo
    from skimage import data

    from pointtrack.fiftyone import video_metadata
    from pointtrack.video import write_video

    rng = np.random.default_rng(0)
    dataset = fo.Dataset(name, persistent=True)  # persistent: the server process must see it
    samples = []
    for v in range(NUM_VIDEOS):
        photo = cv2.resize(np.asarray(getattr(data, PHOTOS[v])()), (W + 100, H + 60))
        step = (8, 4)
        path = write_video(root / f"pan{v}.mp4", (_pan(photo, t, step) for t in range(NUM_FRAMES)),
                           fps=10)
        sample = fo.Sample(filepath=str(path), metadata=video_metadata(path))
        # Points fixed on the photo: in frame t they sit at (x - 8 t, y - 4 t).
        xy0 = rng.uniform([0.3 * W, 0.25 * H], [0.9 * W, 0.9 * H], size=(NUM_POINTS, 2))
        for t in range(NUM_FRAMES):
            xy = xy0 - np.array(step) * t
            sample.frames[t + 1]["tracks"] = fo.Keypoints(keypoints=[
                fo.Keypoint(label="point", points=[(x / W, y / H)], index=j)
                for j, (x, y) in enumerate(xy)
            ])
        samples.append(sample)
    dataset.add_samples(samples)
    # One colour per track (as pointtrack's datasets do): keypoints coloured by their index.
    dataset.app_config.color_scheme = fo.ColorScheme(
        color_by="instance", show_skeletons=False,
        fields=[{"path": "frames.tracks", "colorByAttribute": "index"}],
    )
    dataset.save()
    return dataset


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


@pytest.fixture
def app_url(tmp_path):
    """URL of the App server showing a fresh dataset; server and dataset removed afterwards."""
    import fiftyone as fo

    name = f"pointtrack-test-app-{uuid.uuid4().hex[:8]}"
    _make_dataset(name, tmp_path)
    try:
        with app_server(tmp_path / "server.log") as (url, _):
            yield f"{url}/datasets/{name}"
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def _image(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _artifacts() -> Path:
    path = Path(os.environ.get("POINTTRACK_TEST_ARTIFACTS", "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_app_grid_shows_tracks(app_url):
    from playwright.sync_api import expect, sync_playwright

    wait = {"timeout": PAGE_TIMEOUT_MS}
    (_artifacts() / "app_grid_failure.png").unlink(missing_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        # Localhost only: the App also asks for web fonts, which must not leave the machine.
        page.route("**/*", lambda route: route.continue_()
                   if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:"))
                   else route.abort())
        try:
            page.goto(app_url)

            # The keypoint field is listed among the frame labels.
            field = page.locator('[data-cy="sidebar-field-frames.tracks"]')
            expect(field).to_be_visible(**wait)
            expect(field).to_contain_text("frames.tracks")

            # The grid: one looker per video, each canvas drawn.
            canvases = page.locator('[data-cy="looker"] canvas[canvas-loaded="true"]')
            expect(canvases).to_have_count(NUM_VIDEOS, **wait)
            dismiss = page.get_by_role("button", name="Dismiss")  # an "Enterprise" pop-up
            if dismiss.count():
                dismiss.first.click()
            # Each tile shows its video's first frame (photo texture, not a flat background).
            tiles = page.locator('[data-cy="looker"]')
            deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
            while True:
                shots = [_image(tiles.nth(i).screenshot()) for i in range(NUM_VIDEOS)]
                spread = [round(float(img.std()), 1) for img in shots]
                if min(spread) > 20:
                    break
                assert time.monotonic() < deadline, f"grid tiles still blank: pixel std {spread}"
                page.wait_for_timeout(1000)
            page.mouse.move(700, 650)  # off the tiles: no hover decorations in the screenshot
            page.wait_for_timeout(1000)
            page.screenshot(path=str(_artifacts() / "app_grid.png"))

            tile = tiles.first
            with_tracks = _image(tile.screenshot())

            # The keypoints are drawn: hiding the field changes the tile, showing it restores it.
            checkbox = page.locator('[data-cy="checkbox-frames.tracks"]')
            expect(checkbox.locator("input")).to_be_checked()
            checkbox.click()
            expect(checkbox.locator("input")).not_to_be_checked()
            page.wait_for_timeout(1500)
            without = _image(tile.screenshot())
            checkbox.click()
            page.wait_for_timeout(1500)
            again = _image(tile.screenshot())
        except Exception:
            page.screenshot(path=str(_artifacts() / "app_grid_failure.png"))
            raise
        finally:
            browser.close()
    assert with_tracks.shape == without.shape == again.shape
    changed = np.abs(with_tracks - without).max(axis=2) > 40
    restored = np.abs(with_tracks - again).max(axis=2) > 40
    print(f"pixels changed by hiding frames.tracks: {changed.sum()}, after showing it again: "
          f"{restored.sum()}")
    assert changed.sum() > 20 * NUM_POINTS, "hiding frames.tracks changed nothing on the tile"
    assert restored.sum() < changed.sum() / 4, "showing frames.tracks again did not restore it"
