"""The overlays grouped dataset in the FiftyOne App, in a real browser: the grid shows the
``original`` slice, and a sample's modal shows its group with both slices side by side.

The App server runs in a subprocess on the test's MongoDB (tests/_browser.py).
Screenshot: ``app_overlays.png`` in ``$POINTTRACK_TEST_ARTIFACTS``.
"""

from __future__ import annotations

import time
import uuid

import pytest
from _browser import PAGE_TIMEOUT_MS, app_server, artifacts, browser_page, image, needs_chromium
from conftest import textured_frames

pytestmark = needs_chromium

NUM_VIDEOS = 2


@pytest.fixture
def overlays_url(tmp_path):
    import fiftyone as fo

    import pointtrack.fiftyone as ptf
    from pointtrack.trackers import load_tracker
    from pointtrack.video import write_video

    folder = tmp_path / "videos"
    for i in range(NUM_VIDEOS):
        write_video(folder / f"v{i}.mp4", textured_frames(10, size=(320, 240), seed=i), fps=10)
    source = ptf.create_dataset(folder, f"pt-app-ov-{uuid.uuid4().hex[:8]}")
    source.persistent = True  # the server process must see the datasets
    ptf.track_dataset(source, load_tracker("lk"), "tracks", grid_size=4, progress=False)
    groups = ptf.add_overlays(source, "tracks", tmp_path / "overlays").dataset
    try:
        with app_server(tmp_path / "server.log") as (url, _):
            yield f"{url}/datasets/{groups.name}"
    finally:
        for name in (groups.name, source.name):
            if fo.dataset_exists(name):
                fo.delete_dataset(name)


def test_app_shows_original_and_overlay_side_by_side(overlays_url):
    from playwright.sync_api import expect

    wait = {"timeout": PAGE_TIMEOUT_MS}
    with browser_page(artifacts() / "app_overlays_failure.png") as page:
        page.goto(overlays_url)
        # The grid: one tile per group (the default slice, original), keypoints listed.
        expect(page.locator('[data-cy="sidebar-field-frames.tracks"]')).to_be_visible(**wait)
        canvases = page.locator('[data-cy="looker"] canvas[canvas-loaded="true"]')
        expect(canvases).to_have_count(NUM_VIDEOS, **wait)
        dismiss = page.get_by_role("button", name="Dismiss")
        if dismiss.count():
            dismiss.first.click()
        page.locator('[data-cy="looker"]').first.click()
        # The modal: the group's carousel holds both slices.
        carousel = page.locator('[data-cy="group-carousel"]')
        expect(carousel).to_be_visible(**wait)
        tiles = carousel.locator("canvas")
        expect(tiles).to_have_count(2, **wait)
        deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
        while True:  # both tiles drawn (video texture, not a flat placeholder)
            spread = [float(image(tiles.nth(i).screenshot()).std()) for i in range(2)]
            if min(spread) > 8:  # the texture is low-contrast; a placeholder is flat
                break
            assert time.monotonic() < deadline, f"carousel tiles blank: std {spread}"
            page.wait_for_timeout(1000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts() / "app_overlays.png"))
        carousel_text = carousel.inner_text()
        text = page.locator("body").inner_text()
    assert "overlay" in carousel_text  # the overlay slice's tile is labelled in the carousel
    assert "original" in text  # the slice shown, named in the modal's header
