"""The FiftyOne plugin (plugins/pointtrack): discovered by FiftyOne, its operators run
programmatically, delegated, and from the App in headless Chromium, on real encoded videos and
the real MongoDB."""

from __future__ import annotations

import uuid
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from _browser import (
    PAGE_TIMEOUT_MS,
    app_server,
    assert_field_drawn,
    browser_page,
    hide_and_show,
    needs_chromium,
)
from conftest import textured_frames
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionContext, ExecutionError, ExecutionRunState

from pointtrack.fiftyone import create_dataset, track_dataset, tracks_from_sample
from pointtrack.fiftyone.evaluation import aligned
from pointtrack.metrics import compute_tapvid_metrics
from pointtrack.trackers import load_tracker
from pointtrack.video import write_video

PLUGINS_DIR = Path(__file__).resolve().parents[1] / "plugins"
PLUGIN = "@pointtrack/pointtrack"
TRACK = f"{PLUGIN}/track_points"
EVALUATE = f"{PLUGIN}/evaluate_tracks"
NUM_VIDEOS, NUM_FRAMES = 2, 8


@pytest.fixture(autouse=True)
def plugins_dir(monkeypatch):
    """FiftyOne finds plugins under ``fo.config.plugins_dir`` (``FIFTYONE_PLUGINS_DIR``)."""
    monkeypatch.setattr(fo.config, "plugins_dir", str(PLUGINS_DIR))


@pytest.fixture
def videos(tmp_path):
    """A dataset of 2 encoded videos x 8 frames of a texture moving by (2, 1) px a frame."""
    for i in range(NUM_VIDEOS):
        write_video(tmp_path / f"v{i}.mp4", textured_frames(NUM_FRAMES, seed=i), fps=10)
    dataset = create_dataset(tmp_path, f"pointtrack-test-plugin-{uuid.uuid4().hex[:8]}",
                             persistent=False)
    yield dataset
    dataset.delete()


def _run(dataset, params, **ctx):
    return foo.execute_operator(TRACK, ctx={"dataset": dataset, "params": params, **ctx})


def _assert_same_tracks(dataset, field_a, field_b, ids=None):
    dataset.reload()
    for sample in dataset.select(ids) if ids else dataset:
        a, b = tracks_from_sample(sample, field_a), tracks_from_sample(sample, field_b)
        np.testing.assert_array_equal(a.xy, b.xy)
        np.testing.assert_array_equal(a.visible, b.visible)
        np.testing.assert_array_equal(a.frame_numbers, b.frame_numbers)
    points_a = dataset.values(f"frames.{field_a}.keypoints.points")
    assert points_a == dataset.values(f"frames.{field_b}.keypoints.points")
    assert sum(p is not None for video in points_a for p in video) > 0


def test_fiftyone_discovers_the_plugin():
    assert PLUGIN in [p.name for p in fo.plugins.list_plugins()]
    uris = [op.uri for op in foo.list_operators()]
    assert TRACK in uris and EVALUATE in uris
    op = foo.get_operator(TRACK)
    assert op.config.label == "Track points"
    assert op.config.allow_delegated_execution and op.config.allow_immediate_execution


def test_installed_with_fiftyone_plugins_create(tmp_path, monkeypatch, videos):
    """The documented install: ``fiftyone plugins create`` copies the plugin into the user's
    plugins directory, where FiftyOne finds it and runs it."""
    import os
    import subprocess
    import sys

    plugins = tmp_path / "fiftyone-plugins"
    env = {**os.environ, "FIFTYONE_PLUGINS_DIR": str(plugins)}
    created = subprocess.run(
        [str(Path(sys.executable).parent / "fiftyone"), "plugins", "create", PLUGIN,
         # Files, not the directory: fiftyone 1.22 cannot copy a directory into the plugin
         # directory it has just made (FileExistsError).
         "--from-files", *(str(PLUGINS_DIR / "pointtrack" / f)
                           for f in ("fiftyone.yml", "__init__.py"))],
        env=env, capture_output=True, text=True,
    )
    assert created.returncode == 0, created.stderr
    monkeypatch.setattr(fo.config, "plugins_dir", str(plugins))
    found = {p.name: p.directory for p in fo.plugins.list_plugins()}
    assert Path(found[PLUGIN]).is_relative_to(plugins)
    result = _run(videos, {"engine": "lk", "grid_size": 2, "label_field": "plug"})
    assert result.result["tracked"] == NUM_VIDEOS


def test_form_offers_prompt_fields_and_engine_options(videos):
    sample = videos.first()
    sample.frames[1]["boxes"] = fo.Detections(detections=[
        fo.Detection(label="a", bounding_box=[0.2, 0.2, 0.4, 0.4])])
    sample.frames[1]["note"] = "not a label"
    sample.save()
    op = foo.get_operator(TRACK)

    def form(params):
        ctx = ExecutionContext(request_params={"dataset_name": videos.name, "params": params})
        return op.resolve_input(ctx).type.properties

    props = form({})
    assert props["prompt_field"].type.values == ["boxes"]  # frame labels that can prompt only
    assert list(props["engine"].type.values) == ["lk", "cotracker3-offline", "cotracker3-online"]
    assert "checkpoint" not in props and "device" not in props
    assert "every" in props and "fps" not in props
    props = form({"engine": "cotracker3-offline", "sampling": "fps"})
    assert "checkpoint" in props and "fps" in props and "every" not in props
    assert props["device"].default == "auto" and props["precision"].default == "fp32"


def test_track_points_writes_what_track_dataset_writes(videos):
    params = {"engine": "lk", "grid_size": 4, "sampling": "every", "every": 2,
              "label_field": "plug"}
    result = _run(videos, params)
    assert result.result["tracked"] == NUM_VIDEOS and result.result["failed"] == 0
    summary = track_dataset(videos, load_tracker("lk"), "direct", grid_size=4, every=2,
                            progress=False)
    assert len(summary.done) == NUM_VIDEOS
    _assert_same_tracks(videos, "plug", "direct")
    assert tracks_from_sample(videos.first(), "plug").frame_numbers.tolist() == [0, 2, 4, 6]
    # The per-track colour scheme is saved on the dataset for the App.
    scheme = videos.app_config.color_scheme
    assert scheme.color_by == "instance" and scheme.fields[0]["path"] == "frames.plug"

    # Resumable like the runner: a second run skips both videos unless overwrite.
    assert _run(videos, params).result["skipped"] == NUM_VIDEOS
    assert _run(videos, {**params, "overwrite": True}).result["tracked"] == NUM_VIDEOS


def test_track_points_on_selected_samples_with_fps_and_prompts(videos):
    first_id = videos.first().id
    for sample in videos:
        sample.frames[1]["boxes"] = fo.Detections(detections=[
            fo.Detection(label="a", bounding_box=[0.25, 0.25, 0.5, 0.5])])
        sample.save()
    params = {"engine": "lk", "grid_size": 3, "prompt_field": "boxes", "sampling": "fps",
              "fps": 5.0, "max_frames": 3, "label_field": "plug",
              "view_target": "SELECTED_SAMPLES"}
    result = _run(videos, params, selected=[first_id])
    assert result.result["tracked"] == 1
    track_dataset(videos.select(first_id), load_tracker("lk"), "direct", grid_size=3,
                  prompt_field="boxes", fps=5.0, max_frames=3, progress=False)
    assert videos.exists("plug_result").values("id") == [first_id]
    _assert_same_tracks(videos, "plug", "direct", ids=[first_id])
    tracks = tracks_from_sample(videos.first(), "plug")
    assert tracks.num_tracks == 9 and tracks.frame_numbers.tolist() == [0, 2, 4]


def test_track_points_with_cotracker3_and_a_checkpoint_file(videos, tmp_path):
    """The checkpoint input reaches the engine (synthetic weights: the tracks mean nothing
    about the video, but they are the runner's tracks bit for bit)."""
    import torch

    from pointtrack.models.cotracker3 import CoTracker3Offline
    from pointtrack.models.weights import model_shapes, synthetic_state_dict

    checkpoint = tmp_path / "synthetic_offline.pth"
    torch.save(synthetic_state_dict(model_shapes(CoTracker3Offline()), seed=0), checkpoint)
    first = videos.first().id  # one video of 2 frames: CoTracker3 on 2 CPU cores is slow
    params = {"engine": "cotracker3-offline", "checkpoint": str(checkpoint), "grid_size": 2,
              "max_frames": 2, "label_field": "plug", "view_target": "SELECTED_SAMPLES"}
    assert _run(videos, params, selected=[first]).result["tracked"] == 1
    tracker = load_tracker("cotracker3-offline", checkpoint=str(checkpoint), device="cpu")
    track_dataset(videos.select(first), tracker, "direct", grid_size=2, max_frames=2,
                  progress=False)
    _assert_same_tracks(videos, "plug", "direct", ids=[first])
    assert tracks_from_sample(videos.first(), "plug").tracker == "cotracker3-offline"


def test_progress_comes_as_videos_finish(videos):
    from pointtrack.fiftyone.plugin import track_with_progress

    calls = []
    summary = track_with_progress(videos, load_tracker("lk"), "plug", grid_size=3,
                                  on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 2), (1, 2), (2, 2)]  # at the start, then as each video finishes
    assert sorted(summary.done) == sorted(videos.values("id")) and not summary.failed
    direct = track_dataset(videos, load_tracker("lk"), "direct", grid_size=3, progress=False)
    assert direct.done == summary.done
    _assert_same_tracks(videos, "plug", "direct")
    # An empty view: nothing to do, said once, after the runner's own checks.
    assert not track_with_progress(videos.limit(0), load_tracker("lk"), "plug",
                                   on_progress=lambda *a: calls.append(a)).done
    assert calls[3:] == [(0, 0)]


def test_delegated_run_gives_the_same_tracks(videos):
    result = _run(videos, {"engine": "lk", "grid_size": 4, "label_field": "plug"},
                  request_delegation=True)
    assert result.delegated
    assert not videos.has_sample_field("plug_result")  # queued, not run
    service = DelegatedOperationService()
    op_id = result.result["id"]
    assert service.get(op_id).run_state == ExecutionRunState.QUEUED

    service.execute_queued_operations(operator=TRACK, dataset_name=videos.name)
    doc = service.get(op_id)
    assert doc.run_state == ExecutionRunState.COMPLETED, doc.result
    assert doc.status.progress == 1.0 and doc.status.label == f"{NUM_VIDEOS}/{NUM_VIDEOS} videos"
    assert doc.result.result["tracked"] == NUM_VIDEOS
    track_dataset(videos, load_tracker("lk"), "direct", grid_size=4, progress=False)
    _assert_same_tracks(videos, "plug", "direct")


def test_fiftyone_delegated_launch_runs_it(videos, tmp_path):
    """The documented way to run queued runs: a ``fiftyone delegated launch`` service."""
    import os
    import signal
    import subprocess
    import sys
    import time

    result = _run(videos, {"engine": "lk", "grid_size": 3, "label_field": "plug"},
                  request_delegation=True)
    service = DelegatedOperationService()
    env = {**os.environ, "FIFTYONE_PLUGINS_DIR": str(PLUGINS_DIR)}
    with open(tmp_path / "launch.log", "wb") as log:
        launcher = subprocess.Popen(
            [str(Path(sys.executable).parent / "fiftyone"), "delegated", "launch"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while service.get(result.result["id"]).run_state not in ExecutionRunState.TERMINAL_STATES:
            assert launcher.poll() is None, (tmp_path / "launch.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "launch.log").read_text()
            time.sleep(0.5)
    finally:
        os.killpg(launcher.pid, signal.SIGTERM)
        launcher.wait(15)
    doc = service.get(result.result["id"])
    assert doc.run_state == ExecutionRunState.COMPLETED, doc.result
    track_dataset(videos, load_tracker("lk"), "direct", grid_size=3, progress=False)
    _assert_same_tracks(videos, "plug", "direct")


def test_delegate_input_forces_delegation(videos):
    result = _run(videos, {"engine": "lk", "label_field": "plug", "delegate": True})
    assert result.delegated
    DelegatedOperationService().delete_operation(result.result["id"])


@pytest.mark.parametrize(("params", "message"), [
    # FiftyOne's own form validation names the input; the rest come from pointtrack.
    ({"engine": "nope"}, "Path: engine. Reason: Invalid enum value"),
    ({"engine": "lk", "checkpoint": "x.pth"}, "engine 'lk' takes no checkpoint"),
    ({"engine": "cotracker3-online", "device": "tpu"}, "Path: device. Reason: Invalid enum"),
    ({"engine": "lk", "label_field": "boxes"}, "holds Detections, not Keypoints"),
    ({"engine": "lk", "prompt_field": "nothing"}, "Path: prompt_field. Reason: Invalid enum"),
    ({"engine": "lk", "grid_size": 0}, "Path: grid_size"),
    ({"engine": "cotracker3-offline", "checkpoint": "/no/such.pth"},
     "checkpoint '/no/such.pth' is neither a file nor a URL"),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(videos, params, message):
    sample = videos.first()
    sample.frames[1]["boxes"] = fo.Detections()
    sample.save()
    with pytest.raises(ExecutionError, match=message):
        _run(videos, {"label_field": "plug", **params})
    videos.reload()
    assert not videos.has_sample_field("plug_result")
    assert not videos.has_frame_field("plug") or videos.count("frames.plug") == 0


def test_track_points_needs_videos(tmp_path):
    dataset = fo.Dataset(f"pointtrack-test-plugin-{uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(ExecutionError, match="no_videos"):
            _run(dataset, {"engine": "lk"})
    finally:
        dataset.delete()


def test_evaluate_tracks(videos):
    _run(videos, {"engine": "lk", "grid_size": 4, "label_field": "gt"})
    _run(videos, {"engine": "lk", "grid_size": 4, "sampling": "every", "every": 2,
                  "label_field": "pred"})

    # Against itself: perfect on every metric.
    same = foo.execute_operator(EVALUATE, ctx={"dataset": videos, "params": {
        "pred_field": "gt", "gt_field": "gt", "eval_key": "self"}}).result
    assert same == {"num_samples": NUM_VIDEOS, "aj": 1.0, "delta_avg": 1.0, "oa": 1.0}

    # Sampled predictions against the full tracks: the TAP-Vid mean over the videos.
    out = foo.execute_operator(EVALUATE, ctx={"dataset": videos, "params": {
        "pred_field": "pred", "gt_field": "gt", "query_mode": "strided"}}).result
    per_video = [compute_tapvid_metrics(*aligned(tracks_from_sample(s, "pred"),
                                                 tracks_from_sample(s, "gt")), "strided")
                 for s in videos]
    assert out["num_samples"] == NUM_VIDEOS
    assert out["aj"] == pytest.approx(np.mean([m["average_jaccard"] for m in per_video]))
    assert out["oa"] == pytest.approx(np.mean([m["occlusion_accuracy"] for m in per_video]))
    assert videos.values("eval_aj") == pytest.approx([m["average_jaccard"] for m in per_video])


def test_evaluate_tracks_without_comparable_tracks(videos):
    _run(videos, {"engine": "lk", "grid_size": 4, "label_field": "a"})
    _run(videos, {"engine": "lk", "grid_size": 3, "label_field": "b"})
    with pytest.raises(ExecutionError, match="has comparable 'a' and 'b' tracks"):
        foo.execute_operator(EVALUATE, ctx={"dataset": videos, "params": {
            "pred_field": "a", "gt_field": "b"}})


# -- the App, in headless Chromium ---------------------------------------------------------------


@pytest.fixture
def app_with_plugin(videos, tmp_path):
    """URL of an App server that loads the repo's plugins (``FIFTYONE_PLUGINS_DIR``) and shows
    ``videos`` (made persistent: the server process must see it); the server is stopped after."""
    import os

    videos.persistent = True
    # Legacy orchestrators: how open-source FiftyOne lets the App queue delegated runs.
    env = {**os.environ, "FIFTYONE_PLUGINS_DIR": str(PLUGINS_DIR),
           "FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS": "true"}
    with app_server(tmp_path / "server.log", env) as (url, tail):
        yield f"{url}/datasets/{videos.name}", tail


@needs_chromium
def test_track_points_from_the_app(videos, app_with_plugin, artifacts_dir):
    """Screenshots in $POINTTRACK_TEST_ARTIFACTS: plugin_browser.png (the operator browser),
    plugin_prompt.png (the form; docs/plugin.png is a copy), plugin_output.png, plugin_grid.png,
    plugin_evaluate.png, plugin_evaluate_output.png, plugin_delegate.png."""
    import time

    from playwright.sync_api import expect

    url, server_log = app_with_plugin
    wait = {"timeout": PAGE_TIMEOUT_MS}
    with browser_page(artifacts_dir / "plugin_failure.png", height=800) as page:
        page.goto(url)
        tiles = page.locator('[data-cy="looker"]')
        expect(page.locator('[data-cy="looker"] canvas[canvas-loaded="true"]')).to_have_count(
            NUM_VIDEOS, **wait)
        dismiss = page.get_by_role("button", name="Dismiss")  # an "Enterprise" pop-up
        if dismiss.count():
            dismiss.first.click()

        # The operator browser (backtick) lists both operators when searching "track".
        page.mouse.click(640, 60)
        page.keyboard.press("`")
        operators = page.locator('[data-cy="operators-browser"]')
        expect(operators).to_be_visible(**wait)
        page.keyboard.type("track")
        expect(operators.get_by_text("Track points", exact=True)).to_be_visible()
        expect(operators.get_by_text("Evaluate tracks", exact=True)).to_be_visible()
        page.screenshot(path=str(artifacts_dir / "plugin_browser.png"))

        # Its form, with the defaults: lk, a 10 x 10 grid, into frames.tracks.
        operators.get_by_text("Track points", exact=True).click()
        prompt = page.locator('[data-cy="operators-prompt-modal"]')
        expect(prompt).to_be_visible(**wait)
        expect(prompt.get_by_text("Engine")).to_be_visible(**wait)
        expect(prompt.get_by_text("Output field")).to_be_visible()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts_dir / "plugin_prompt.png"))
        prompt.get_by_role("button", name="Execute").click()

        # The run writes the keypoints to MongoDB...
        deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
        while len(videos.exists("tracks_result")) < NUM_VIDEOS:
            assert time.monotonic() < deadline, f"no tracks written:\n{server_log()}"
            page.wait_for_timeout(1000)  # not time.sleep: the page's routes must be served
        videos.reload()
        assert videos.count("frames.tracks") == NUM_VIDEOS * NUM_FRAMES

        # The operator's output: what was tracked.
        expect(prompt.get_by_text("Videos tracked")).to_be_visible(**wait)
        expect(prompt).to_contain_text(f"tracks: {NUM_VIDEOS} tracked, 0 skipped")
        page.screenshot(path=str(artifacts_dir / "plugin_output.png"))
        prompt.get_by_role("button", name="Close").click()
        expect(prompt).to_be_hidden()

        # ... and the reloaded grid lists and draws them.
        field = page.locator('[data-cy="sidebar-field-frames.tracks"]')
        expect(field).to_be_visible(**wait)
        expect(page.locator('[data-cy="looker"] canvas[canvas-loaded="true"]')).to_have_count(
            NUM_VIDEOS, **wait)
        page.mouse.move(700, 780)
        page.wait_for_timeout(2000)
        shots = hide_and_show(page, "frames.tracks", tiles.first)
        page.screenshot(path=str(artifacts_dir / "plugin_grid.png"))

        # Evaluate tracks: the tracks against themselves score 1 on every metric.
        page.keyboard.press("`")
        expect(operators).to_be_visible(**wait)
        page.keyboard.type("evaluate tracks")
        operators.get_by_text("Evaluate tracks", exact=True).click()
        expect(prompt.get_by_text("Ground truth", exact=True)).to_be_visible(**wait)
        for i in range(2):  # predictions, then ground truth
            prompt.get_by_role("combobox").nth(i).click()
            page.get_by_role("option", name="tracks", exact=True).click()
            page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts_dir / "plugin_evaluate.png"))
        prompt.get_by_role("button", name="Execute").click()
        expect(prompt.get_by_text("Average Jaccard")).to_be_visible(**wait)
        page.screenshot(path=str(artifacts_dir / "plugin_evaluate_output.png"))
        expect(prompt).to_contain_text("Videos scored")
        prompt.get_by_role("button", name="Close").click()
        expect(prompt).to_be_hidden()
        videos.reload()
        assert videos.values("eval_aj") == [1.0] * NUM_VIDEOS

        # "Delegate" in the form queues the run for `fiftyone delegated launch`.
        page.keyboard.press("`")
        expect(operators).to_be_visible(**wait)
        page.keyboard.type("track points")
        operators.get_by_text("Track points", exact=True).click()
        expect(prompt.get_by_text("Delegate", exact=True)).to_be_visible(**wait)
        prompt.get_by_text("Delegate", exact=True).click()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts_dir / "plugin_delegate.png"))
        prompt.get_by_role("button", name="Schedule").click()
        service = DelegatedOperationService()
        deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
        while not service.list_operations(dataset_name=videos.name, operator=TRACK):
            assert time.monotonic() < deadline, f"nothing queued:\n{server_log()}"
            page.wait_for_timeout(1000)
        queued = service.list_operations(dataset_name=videos.name, operator=TRACK)
        assert [op.run_state for op in queued] == [ExecutionRunState.QUEUED]
        assert queued[0].context.request_params["params"]["delegate"] is True
    assert_field_drawn(shots, "frames.tracks", 20 * 10)
    # One colour per track (the colour scheme the operator set), not one for the whole field.
    from matplotlib.colors import rgb_to_hsv

    with_tracks, without, _ = shots
    cores = np.abs(with_tracks - without).max(axis=2) > 100  # the points' centres
    hsv = rgb_to_hsv(with_tracks[cores] / 255.0)
    hues = (hsv[hsv[:, 1] > 0.5, 0] * 12).astype(int)  # saturated pixels, 12 hue bins
    bins = np.bincount(hues, minlength=12)
    print(f"keypoint pixels per hue bin: {bins.tolist()}")
    assert (bins >= 15).sum() >= 4, f"keypoints drawn in too few colours: {bins.tolist()}"

    # What the App's run wrote is what the runner writes with the form's defaults.
    track_dataset(videos, load_tracker("lk"), "direct", grid_size=10, progress=False)
    _assert_same_tracks(videos, "tracks", "direct")
