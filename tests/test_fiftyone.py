"""pointtrack.fiftyone against a real embedded MongoDB (run through scripts/test.sh)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import cv2
import fiftyone as fo
import numpy as np
import psutil
import pytest

import pointtrack.fiftyone as ptf
from pointtrack.cli import main
from pointtrack.trackers import load_tracker
from pointtrack.tracks import Tracks
from pointtrack.video import write_video

W, H, T, STEP = 96, 72, 12, (2, 1)  # videos drift right 2 px, down 1 px per frame


def textured_video(path: Path, seed: int, num_frames: int = T, size=(W, H)) -> Path:
    rng = np.random.default_rng(seed)
    w, h = size
    big = rng.integers(0, 256, (h + 64, w + 64, 3), dtype=np.uint8)
    big = cv2.GaussianBlur(big, (0, 0), 2.0)
    big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX)
    frames = []
    for t in range(num_frames):
        dx, dy = STEP[0] * t, STEP[1] * t
        # The content moves by (+dx, +dy): crop a window that moves the other way.
        frames.append(np.ascontiguousarray(big[32 - dy : 32 - dy + h, 32 - dx : 32 - dx + w]))
    return write_video(path, frames, fps=10)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    for i in range(3):
        textured_video(d / f"clip{i}.mp4", seed=i)
    return d


def new_name() -> str:
    return f"pt-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def dataset(video_dir):
    ds = ptf.create_dataset(video_dir, new_name())
    yield ds
    ds.delete()


def random_tracks(T=7, N=40, seed=0, confidence=True) -> Tracks:
    rng = np.random.default_rng(seed)
    xy = (rng.random((T, N, 2)) * [W - 1, H - 1]).astype(np.float32)
    return Tracks(
        xy=xy,
        visible=rng.random((T, N)) < 0.7,
        queries=np.c_[np.zeros(N), xy[0]],
        frame_numbers=np.arange(T) * 2 + 1,
        frame_size=(W, H),
        fps=5.0,
        tracker="test",
        visibility=rng.random((T, N)),
        confidence=rng.random((T, N)) if confidence else None,
        options={"a": 1, "b": [1, 2]},
    )


def frame_keypoints(sample, field="tracks") -> dict[int, list]:
    return {
        fn: frame[field].keypoints
        for fn, frame in sample.frames.items()
        if frame[field] is not None
    }


# -- storing and reading back ----------------------------------------------------------------


def test_create_dataset_metadata_and_load(video_dir):
    name = new_name()
    ds = ptf.create_dataset(str(video_dir / "*.mp4"), name)
    try:
        assert len(ds) == 3
        m = ds.first().metadata
        assert (m.frame_width, m.frame_height, m.total_frame_count) == (W, H, T)
        assert m.frame_rate == pytest.approx(10.0)
        assert ptf.load_dataset(name) is ds
        with pytest.raises(ptf.DatasetError, match="already exists"):
            ptf.create_dataset(video_dir, name)
    finally:
        ds.delete()
    with pytest.raises(ptf.DatasetError, match="no dataset named"):
        ptf.load_dataset(name)
    with pytest.raises(ptf.DatasetError, match="no video files"):
        ptf.create_dataset(video_dir / "*.txt", new_name())


def test_create_dataset_leaves_no_samples_for_later_reloads(video_dir):
    """FiftyOne reloads every in-memory sample after each schema change and at the end of a
    tracking run; the samples `create_dataset` made are nobody's, so none may stay
    registered (a video sample lives until the garbage collector breaks its cycle)."""
    import gc

    import fiftyone.core.sample as fos

    gc.disable()
    try:
        ds = ptf.create_dataset(video_dir, new_name())
        held = fos.Sample._instances.get(ds._sample_collection_name, {})
        assert len(held) == 0
        assert len(ds) == 3 and ds.first().metadata.total_frame_count == T
    finally:
        gc.enable()
        ds.delete()


def test_write_read_back_exact(dataset):
    sample = dataset.first()
    tracks = random_tracks()
    ptf.add_tracks(sample, tracks)

    back = ptf.tracks_from_sample(dataset.first())
    assert back.equals(tracks)  # every array bit-exact, dtypes and options included

    kps = frame_keypoints(dataset.first())
    # 1-based FiftyOne frame numbers land on source frame + 1; every tracked frame present.
    assert sorted(kps) == (tracks.frame_numbers + 1).tolist()
    for t, fn in enumerate(tracks.frame_numbers):
        frame = kps[fn + 1]
        ids = np.array([kp.index for kp in frame])
        np.testing.assert_array_equal(ids, np.flatnonzero(tracks.visible[t]))
        xy = np.array([kp.points[0] for kp in frame]) * [W, H]
        np.testing.assert_allclose(xy, tracks.xy[t, ids], rtol=2e-7, atol=1e-5)
        conf = np.array([kp.confidence[0] for kp in frame])
        np.testing.assert_array_equal(conf, tracks.confidence[t, ids].astype(np.float64))
        assert all(getattr(kp, "occluded", None) is None for kp in frame)


@pytest.mark.parametrize("confidence", [True, False])
@pytest.mark.parametrize("occluded", [False, True])
def test_frames_encoded_with_numpy_are_pymongos_documents(confidence, occluded):
    """The writer's NumPy BSON (tracks without sources) decodes to exactly the documents of
    `tracks_to_frames`, and re-encodes to the same bytes; frames of 0 to 1200 keypoints cover
    every width of BSON's array keys."""
    import bson

    from pointtrack.fiftyone.labels import _frames_bson

    tracks = random_tracks(T=6, N=1200, seed=3, confidence=confidence)
    tracks.visible[0] = False  # a frame with no keypoint
    tracks.visible[1, :7] = True
    tracks.visible[1, 7:] = False
    tracks.visible[2] = True
    fast = _frames_bson(tracks, occluded)
    slow = ptf.tracks_to_frames(tracks, include_occluded=occluded, raw=True)
    assert list(fast) == list(slow)
    ids = []
    for fn, doc in slow.items():
        decoded = bson.decode(fast[fn].raw)
        assert bson.encode(decoded) == fast[fn].raw
        ids += [kp.pop("_id") for kp in decoded["keypoints"]]
        for kp in doc["keypoints"]:
            kp.pop("_id")
        assert decoded == doc
    assert len(ids) == len(set(ids)) == sum(len(d["keypoints"]) for d in slow.values())


@pytest.mark.parametrize("with_sources", [False, True])
def test_store_in_parts_equals_one_store(dataset, with_sources):
    """A sample stored in parts (begin, frame parts from two processes at once in reverse
    order, end), over an older result, holds what one store writes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from pointtrack.fiftyone.labels import _clear, _result, _write, _write_result

    first, second = dataset.take(2, seed=1)
    tracks = random_tracks(T=9, N=30, seed=4)
    sources = (ptf.Sources(label=["a", "b", "c"] * 10, id=["x"] * 30, index=np.arange(30))
               if with_sources else None)
    ptf.prepare_fields(dataset, "tracks")
    _write(dataset, first.id, tracks, "tracks", sources=sources)
    ptf.add_tracks(second, random_tracks(T=12, N=5, seed=5))  # stale: longer, other points
    _clear(dataset, second.id, "tracks")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = [pool.submit(_write_part, dataset.name, second.id, tracks, sources, k)
                 for k in (2, 1, 0)]
        [p.result() for p in parts]
    _write_result(dataset, second.id, "tracks",
                  _result(dataset, second.id, tracks, "tracks", sources, None))
    dataset.reload()
    one, parted = dataset[first.id], dataset[second.id]
    assert ptf.tracks_from_sample(parted).equals(ptf.tracks_from_sample(one))
    labels = [{fn: [(kp.index, kp.points, kp.confidence, kp.label) for kp in frame]
               for fn, frame in frame_keypoints(s).items()} for s in (one, parted)]
    assert labels[0] == labels[1] and len(labels[1]) == 9  # the stale frames 10-12 cleared
    assert (ptf.sources_from_sample(parted) is None) == (not with_sources)


def _write_part(name, sample_id, tracks, sources, part):
    from pointtrack.fiftyone.labels import _write_frames

    rows = np.array_split(np.arange(tracks.num_frames), 3)[part]
    _write_frames(ptf.load_dataset(name), sample_id, tracks, "tracks", sources=sources,
                  rows=rows)


def test_include_occluded_and_rewrite_leaves_nothing_stale(dataset):
    sample = dataset.first()
    ptf.add_tracks(sample.id, random_tracks(T=9, N=30, seed=1), dataset=dataset,
                   include_occluded=True)
    tracks = random_tracks(T=4, N=25, seed=2, confidence=False)
    ptf.add_tracks(sample, tracks, include_occluded=True)

    kps = frame_keypoints(dataset.first())
    assert sorted(kps) == (tracks.frame_numbers + 1).tolist()  # old frames 9..17 cleared
    for t, fn in enumerate(tracks.frame_numbers):
        frame = kps[fn + 1]
        assert [kp.index for kp in frame] == list(range(25))
        assert [kp.occluded for kp in frame] == (~tracks.visible[t]).tolist()
        assert all(kp.confidence is None for kp in frame)
    assert dataset.count("frames.tracks.keypoints") == 4 * 25
    assert ptf.tracks_from_sample(dataset.first()).equals(tracks)


def test_result_over_mongo_limit_spills_to_file(dataset, monkeypatch):
    monkeypatch.setattr(ptf.labels, "_MAX_DOC_BYTES", 1000)  # stand-in for 15 MB
    tracks = random_tracks(T=6, N=30, seed=4)
    sources = ptf.Sources(label=["a"] * 30, id=["x"] * 30, index=np.arange(30))
    with pytest.raises(ValueError, match="over MongoDB's 16 MB"):
        ptf.tracks_to_doc(tracks)
    ptf.add_tracks(dataset.first(), tracks, sources=sources)
    result = dataset.first().tracks_result
    assert result.xy is None and Path(result.path).is_file()
    assert Path(result.path).is_relative_to(fo.config.default_dataset_dir)
    assert ptf.tracks_from_sample(dataset.first()).equals(tracks)
    back = ptf.sources_from_sample(dataset.first())
    assert back.label == sources.label and np.array_equal(back.index, sources.index)
    assert dataset.count("frames.tracks.keypoints") == tracks.visible.sum()


def test_missing_result_and_wrong_field_type(dataset):
    with pytest.raises(ptf.DatasetError, match="has no tracks"):
        ptf.tracks_from_sample(dataset.first())
    sample = dataset.first()
    sample.frames[1]["boxes"] = fo.Detections()
    sample.save()
    with pytest.raises(ptf.DatasetError, match="holds Detections, not Keypoints"):
        ptf.add_tracks(dataset.first(), random_tracks(), label_field="boxes")


# -- running over datasets -----------------------------------------------------------------------


def test_track_dataset_sampled_frames_land_on_source_frames(dataset):
    summary = ptf.track_dataset(dataset, load_tracker("lk"), grid_size=4, every=3,
                                progress=False)
    assert len(summary.done) == 3 and not summary.failed
    for sample in dataset:
        tracks = ptf.tracks_from_sample(sample)
        np.testing.assert_array_equal(tracks.frame_numbers, [0, 3, 6, 9])
        assert sorted(frame_keypoints(sample)) == [1, 4, 7, 10]
        assert tracks.tracker == "lk" and tracks.options == load_tracker("lk").options
        # The content drifts by STEP per source frame: the tracks must follow it.
        moved = tracks.xy[-1] - tracks.xy[0]
        both = tracks.visible[-1] & tracks.visible[0]
        assert both.sum() >= 8
        np.testing.assert_allclose(np.median(moved[both], axis=0), np.array(STEP) * 9, atol=1.0)
        assert sample.tracks_error is None
        assert sample.tracks_result.settings["every"] == 3

    # A second run skips everything and changes nothing; overwrite redoes with new labels.
    ids = dataset.values("frames.tracks.keypoints.id", unwind=True)
    again = ptf.track_dataset(dataset, load_tracker("lk"), grid_size=4, every=3,
                              progress=False)
    assert len(again.skipped) == 3 and not again.done
    assert dataset.values("frames.tracks.keypoints.id", unwind=True) == ids
    redo = ptf.track_dataset(dataset, load_tracker("lk"), grid_size=3, fps=5.0,
                             overwrite=True, progress=False)
    assert len(redo.done) == 3
    for sample in dataset:
        tracks = ptf.tracks_from_sample(sample)
        np.testing.assert_array_equal(tracks.frame_numbers, np.arange(0, T, 2))
        assert tracks.num_tracks == 9
        assert sorted(frame_keypoints(sample)) == list(range(1, T + 1, 2))
        assert sum(len(k) for k in frame_keypoints(sample).values()) == tracks.visible.sum()


def test_corrupt_video_in_the_middle(video_dir, tmp_path):
    for i, name in enumerate(["a.mp4", "c.mp4"]):
        shutil.copy(video_dir / f"clip{i}.mp4", tmp_path / name)
    good = (video_dir / "clip2.mp4").read_bytes()
    (tmp_path / "b.mp4").write_bytes(good[: len(good) // 3])  # truncated mid-stream
    ds = ptf.create_dataset(tmp_path, new_name())
    try:
        summary = ptf.track_dataset(ds, load_tracker("lk"), grid_size=3, progress=False)
        bad_id = ds.match(fo.ViewField("filepath").ends_with("b.mp4")).first().id
        assert list(summary.failed) == [bad_id] and len(summary.done) == 2
        bad = ds[bad_id]
        assert bad.tracks_result is None and "b.mp4" in bad.tracks_error
        assert bad.tracks_error == summary.failed[bad_id]
        assert ds.select(bad_id).count("frames.tracks") == 0
        for sample in ds.exclude(bad_id):
            assert ptf.tracks_from_sample(sample).num_frames == T
        # A rerun retries only the failed sample.
        again = ptf.track_dataset(ds, load_tracker("lk"), grid_size=3, progress=False)
        assert len(again.skipped) == 2 and list(again.failed) == [bad_id]
    finally:
        ds.delete()


def test_half_written_sample_is_redone(dataset):
    """Frames written but no result (a run killed mid-write): the next run redoes the sample."""
    first = dataset.first()
    stale = ptf.tracks_to_frames(random_tracks(T=5, N=50, seed=3), raw=True)
    ptf.prepare_fields(dataset, "tracks")
    dataset.set_values("frames.tracks", {first.id: stale}, key_field="id", validate=False)
    assert dataset.count("frames.tracks.keypoints") > 0

    summary = ptf.track_dataset(dataset, load_tracker("lk"), grid_size=3, progress=False)
    assert len(summary.done) == 3
    for sample in dataset:
        tracks = ptf.tracks_from_sample(sample)
        kps = frame_keypoints(sample)
        assert sorted(kps) == list(range(1, T + 1))
        assert sum(len(k) for k in kps.values()) == tracks.visible.sum()


RESUME_SCRIPT = """
import sys, time
import pointtrack.fiftyone as ptf
from pointtrack.trackers import register
from pointtrack.trackers.lk import LucasKanadeTracker

@register("slow-lk")
class SlowLK(LucasKanadeTracker):
    calls = 0

    def _track(self, clip, prompt):
        # Two samples finish; the third hangs until the test kills the run. (A fixed delay
        # per sample let a fast machine track all five while the store process started,
        # and then store them all before the kill.)
        SlowLK.calls += 1
        time.sleep(0.3 if SlowLK.calls <= 2 else 600)
        return super()._track(clip, prompt)

dataset = ptf.load_dataset(sys.argv[1])
ptf.track_dataset(dataset, SlowLK(), grid_size=3, every=2, progress=False,
                  runner_options={"store_processes": 1})  # stores in a process of its own
"""


def test_resume_after_kill(video_dir, tmp_path):
    for i in range(5):
        textured_video(tmp_path / f"v{i}.mp4", seed=10 + i)
    name = new_name()
    ds = ptf.create_dataset(tmp_path, name)
    try:
        script = tmp_path / "run.py"
        script.write_text(textwrap.dedent(RESUME_SCRIPT))
        proc = subprocess.Popen([sys.executable, str(script), name], env=os.environ.copy())
        deadline = time.time() + 120
        children = []
        try:
            while time.time() < deadline and proc.poll() is None:
                if len(ds.exists("tracks_result")) >= 2:
                    children = psutil.Process(proc.pid).children(recursive=True)
                    break
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        # Its store process ends too, rather than wait for work for ever. It may finish the
        # store it holds first, so the finished samples are counted once it is gone.
        assert children
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"left behind: {alive}"
        done_before = set(ds.exists("tracks_result").values("id"))
        assert 2 <= len(done_before) < 5, "the run must be killed part way through"

        summary = ptf.track_dataset(ds, load_tracker("lk"), grid_size=3, every=2,
                                    progress=False)
        assert set(summary.skipped) == done_before
        assert len(summary.done) == 5 - len(done_before) and not summary.failed
        ids = ds.values("frames.tracks.keypoints.id", unwind=True)
        assert len(ids) == len(set(ids))  # nothing duplicated
        for sample in ds:
            tracks = ptf.tracks_from_sample(sample)  # nothing lost
            kps = frame_keypoints(sample)
            assert sorted(kps) == list(range(1, T + 1, 2))
            assert sum(len(k) for k in kps.values()) == tracks.visible.sum()
    finally:
        ds.delete()


# -- prompts from labels -------------------------------------------------------------------------


def test_prompts_from_detections_masks_and_keypoints(dataset):
    sample = dataset.first()
    box = [0.1, 0.2, 0.3, 0.4]
    yy, xx = np.mgrid[:20, :30]
    mask = xx < yy * 1.5  # lower-left triangle of the second box
    frame = sample.frames[3]
    frame["boxes"] = fo.Detections(
        detections=[
            fo.Detection(label="car", bounding_box=box),
            fo.Detection(label="dog", bounding_box=[0.5, 0.4, 0.4, 0.5], mask=mask, index=7),
        ]
    )
    seg = np.zeros((H // 2, W // 2), dtype=np.uint8)
    seg[5:15, 20:40] = 3
    frame["seg"] = fo.Segmentation(mask=seg)
    frame["points"] = fo.Keypoints(
        keypoints=[fo.Keypoint(label="eye", points=[(0.25, 0.5), (float("nan"),) * 2,
                                                    (0.75, 0.5)])]
    )
    sample.save()
    one = dataset.select(sample.id)

    g = 3
    summary = ptf.track_dataset(one, load_tracker("lk"), "from_boxes", grid_size=g,
                                prompt_field="boxes", prompt_frame=3, progress=False)
    assert len(summary.done) == 1
    tracks = ptf.tracks_from_sample(dataset.first(), "from_boxes")
    sources = ptf.sources_from_sample(dataset.first(), "from_boxes")
    dets = dataset.first().frames[3].boxes.detections
    car = np.array([i == dets[0].id for i in sources.id])
    dog = np.array([i == dets[1].id for i in sources.id])
    assert car.sum() == g * g and 0 < dog.sum() < g * g  # the mask keeps part of the grid
    assert (tracks.queries[:, 0] == 2).all()  # frame 3 is row 2 of the clip
    q = tracks.queries[car, 1:] / [W, H]
    assert ((q >= [0.1, 0.2]) & (q <= [0.4, 0.6])).all()
    uv = (tracks.queries[dog, 1:] / [W, H] - [0.5, 0.4]) / [0.4, 0.5]  # in the dog box
    assert mask[(uv[:, 1] * 20).astype(int), (uv[:, 0] * 30).astype(int)].all()
    assert sources.label == ["car"] * 9 + ["dog"] * int(dog.sum())
    assert sources.index.tolist() == [0] * 9 + [7] * int(dog.sum())
    kp = dataset.first().frames[3].from_boxes.keypoints[0]
    assert (kp.label, kp.source_id, kp.source_index) == ("car", dets[0].id, 0)

    ptf.track_dataset(one, load_tracker("lk"), "from_seg", grid_size=4,
                      prompt_field="frames.seg", prompt_frame=3, progress=False)
    tracks = ptf.tracks_from_sample(dataset.first(), "from_seg")
    px = (tracks.queries[:, 1:] * [seg.shape[1] / W, seg.shape[0] / H]).astype(int)
    assert len(px) > 0 and (seg[px[:, 1], px[:, 0]] == 3).all()
    assert ptf.sources_from_sample(dataset.first(), "from_seg").label == ["3"] * len(px)

    ptf.track_dataset(one, load_tracker("lk"), "from_points", prompt_field="points",
                      prompt_frame=3, progress=False)
    tracks = ptf.tracks_from_sample(dataset.first(), "from_points")
    np.testing.assert_allclose(tracks.queries[:, 1:], [[0.25 * W, 0.5 * H], [0.75 * W, 0.5 * H]],
                               atol=1e-4)

    # No labels on the prompt frame: recorded on the sample, not raised.
    failed = ptf.track_dataset(one, load_tracker("lk"), "none", prompt_field="boxes",
                               prompt_frame=5, progress=False)
    assert "no 'boxes' labels on frame 5" in failed.failed[sample.id]
    assert dataset.first().none_error == failed.failed[sample.id]

    sample = dataset.first()
    sample.frames[1]["cls"] = fo.Classification(label="x")
    sample.save()
    with pytest.raises(ptf.DatasetError, match="prompts need"):
        ptf.track_dataset(one, load_tracker("lk"), prompt_field="cls", progress=False)


# -- apply_model ---------------------------------------------------------------------------------


def test_tracker_model_predicts_frame_keypoints(video_dir):
    """The model itself, without FiftyOne's ffmpeg reader: a path in, frame keypoints out."""
    model = ptf.TrackerModel(load_tracker("lk"), grid_size=3, every=4)
    assert model.media_type == "video"
    frames = model.predict(str(video_dir / "clip0.mp4"))
    tracks = load_tracker("lk").track(str(video_dir / "clip0.mp4"), grid_size=3)
    assert sorted(frames) == [1, 5, 9]
    assert all(isinstance(k, fo.Keypoints) for k in frames.values())
    first = frames[1].keypoints
    assert [k.index for k in first] == list(range(9))
    np.testing.assert_allclose([k.points[0] for k in first], tracks.xy[0] / [W, H], atol=1e-6)


@pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                    reason="FiftyOne's apply_model opens each video with ffmpeg/ffprobe")
def test_apply_model_matches_track_dataset(dataset):
    model = ptf.TrackerModel(load_tracker("lk"), grid_size=4, every=2)
    dataset.apply_model(model, label_field="applied")
    ptf.track_dataset(dataset, load_tracker("lk"), grid_size=4, every=2, progress=False)
    for sample in dataset:
        applied = frame_keypoints(sample, "applied")
        ours = frame_keypoints(sample, "tracks")
        assert sorted(applied) == sorted(ours) == list(range(1, T + 1, 2))
        for fn in ours:
            assert [k.index for k in applied[fn]] == [k.index for k in ours[fn]]
            assert [k.points for k in applied[fn]] == [k.points for k in ours[fn]]


# -- CLI -------------------------------------------------------------------------------------------


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_create_track_list(video_dir, capsys):
    name = new_name()
    code, out, _ = run_cli(capsys, "dataset", "create", str(video_dir), "--name", name)
    assert code == 0 and "3 videos" in out
    try:
        code, out, err = run_cli(capsys, "dataset", "track", name, "--engine", "lk",
                                 "--grid-size", "3", "--every", "4", "--field", "pts",
                                 "--no-progress")
        assert code == 0, err
        assert "3 tracked" in out
        ds = ptf.load_dataset(name)
        assert ds.distinct("frames.frame_number") == [1, 5, 9]
        for sample in ds:
            assert sorted(frame_keypoints(sample, "pts")) == [1, 5, 9]
        code, out, _ = run_cli(capsys, "dataset", "list")
        assert code == 0 and name in out
    finally:
        fo.delete_dataset(name)


def test_cli_names_a_failed_sample_in_one_warning_line(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    textured_video(videos / "good.mp4", seed=0)
    broken = videos / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    name = new_name()
    code, _, _ = run_cli(capsys, "dataset", "create", str(videos), "--name", name)
    assert code == 0
    try:
        code, out, err = run_cli(capsys, "dataset", "track", name, "--engine", "lk",
                                 "--grid-size", "3")
        assert code == 1  # some samples failed: not success, not a usage error
        assert "1 tracked" in out and "1 failed" in out
        bad = ptf.load_dataset(name).match({"filepath": str(broken)}).first()
        # The warning (written through tqdm, around the bar) names the sample and the file,
        # once, in the CLI's one-line form.
        lines = [x.strip("\r ") for x in err.replace("\r", "\n").splitlines()
                 if "warning:" in x]
        assert lines == [f"pointtrack: warning: {bad.id}: {broken}: not a readable video "
                         "(Invalid data found when processing input)"], err
    finally:
        fo.delete_dataset(name)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["dataset", "track", "NOPE", "--engine", "lk"], "no dataset named 'NOPE'"),
        (["app", "NOPE"], "no dataset named 'NOPE'"),
        (["dataset", "track", "{name}", "--prompt-field", "missing"], "no frame field 'missing'"),
        (["dataset", "track", "{name}", "--prompt-field", "cls"], "prompts need"),
        (["dataset", "track", "{name}", "--field", "cls"], "not Keypoints"),
        (["app", "{name}", "--field", "missing"], "no frame field 'missing'"),
        (["dataset", "create", "/no/such/dir", "--name", "x"], "no such directory"),
    ],
)
def test_cli_errors(dataset, capsys, argv, message):
    sample = dataset.first()
    sample.frames[1]["cls"] = fo.Classification(label="x")
    sample.save()
    argv = [a.replace("{name}", dataset.name) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err and err.startswith("pointtrack: error:")


def test_cli_app_serves_the_dataset(dataset):
    ptf.track_dataset(dataset, load_tracker("lk"), grid_size=2, max_frames=2, progress=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Started as a shell would, except that SIGINT is ignored, as under some launchers (and
    # as a child inherits it from a parent that ignores it): Ctrl-C must still end the App.
    proc = subprocess.Popen(
        [sys.executable, "-m", "pointtrack", "app", dataset.name, "--remote", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
    reader.start()
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any("FiftyOne App:" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        url = next(line for line in lines if "FiftyOne App:" in line).split()[-1]
        assert url.startswith("http") and str(port) in url
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            assert "html" in response.read(2000).decode("utf-8", "replace").lower()
        saved = ptf.load_dataset(dataset.name)
        saved.reload()
        assert saved.app_config.color_scheme.color_by == "instance"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    assert proc.returncode == 0, "".join(lines)


def test_color_scheme_per_track(dataset):
    scheme = ptf.color_scheme("tracks", dataset)
    assert scheme.color_by == "instance"
    saved = ptf.load_dataset(dataset.name).app_config.color_scheme
    assert saved.color_by == "instance"
    assert saved.fields[0]["path"] == "frames.tracks"


def test_prompts_from_unlabeled_keypoints(video_dir):
    """Keypoints without a label prompt tracks whose source label is None, on every sample
    (samples held in memory are reloaded after each write)."""
    ds = ptf.create_dataset(video_dir, new_name())
    try:
        samples = list(ds)  # in memory, as a notebook holds them
        for sample in samples:
            sample.frames[1]["pts"] = fo.Keypoints(
                keypoints=[fo.Keypoint(points=[(0.3, 0.4), (0.6, 0.5)])])
            sample.save()
        summary = ptf.track_dataset(ds, load_tracker("lk"), "kp", prompt_field="pts",
                                    progress=False)
        assert not summary.failed and len(summary.done) == len(samples)
        for sample in samples:
            assert ptf.sources_from_sample(sample, "kp").label == [None, None]
            assert ptf.tracks_from_sample(sample, "kp").num_tracks == 2
    finally:
        ds.delete()
