"""The FiftyOne App in a real browser: a dataset with tracked keypoints, seen by headless Chromium.

Starts the App server (``fiftyone.server.main``) in a subprocess on a free localhost port, with
this process's environment (so it uses the same isolated MongoDB as the test), opens the dataset
in Debian's Chromium through Playwright, and checks that the sample grid rendered the videos with
the keypoint field "tracks" present and drawn. The screenshot is saved as ``app_grid.png`` in
``$POINTTRACK_TEST_ARTIFACTS``.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from _browser import (
    PAGE_TIMEOUT_MS,
    app_server,
    artifacts,
    assert_field_drawn,
    browser_page,
    hide_and_show,
    image,
    needs_chromium,
)

pytestmark = needs_chromium

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


def test_app_grid_shows_tracks(app_url):
    from playwright.sync_api import expect

    wait = {"timeout": PAGE_TIMEOUT_MS}
    with browser_page(artifacts() / "app_grid_failure.png") as page:
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
            shots = [image(tiles.nth(i).screenshot()) for i in range(NUM_VIDEOS)]
            spread = [round(float(img.std()), 1) for img in shots]
            if min(spread) > 20:
                break
            assert time.monotonic() < deadline, f"grid tiles still blank: pixel std {spread}"
            page.wait_for_timeout(1000)
        page.mouse.move(700, 650)  # off the tiles: no hover decorations in the screenshot
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts() / "app_grid.png"))

        # The keypoints are drawn: hiding the field changes the tile, showing it restores it.
        shots = hide_and_show(page, "frames.tracks", tiles.first)
    assert_field_drawn(shots, "frames.tracks", 20 * NUM_POINTS)
