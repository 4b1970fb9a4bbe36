"""``pointtrack eval`` run as a subprocess on synthetic clips and TAP-Vid-format pickles."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pointtrack import load_tracker
from pointtrack.cli.eval import tapvid_ground_truth
from pointtrack.metrics import METRIC_KEYS, evaluate_tracker, tapvid_queries
from pointtrack.synthetic import make_video

CLIP = dict(num_frames=12, num_points=32)


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "pointtrack", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )


def _davis_entry(video):
    """A synthetic clip in TAP-Vid's layout: points (N, T, 2) in [0, 1], occluded (N, T)."""
    W, H = video.size
    return {
        "video": video.frames,
        "points": (video.tracks.xy / np.array([W, H], np.float32)).transpose(1, 0, 2),
        "occluded": ~video.tracks.visible.T,
    }


def test_eval_synthetic_prints_table_and_writes_json(tmp_path):
    out = tmp_path / "res" / "synthetic.json"
    r = run_cli("eval", "synthetic", "--engine", "lk", "--clips", 2, "--seed", 3,
                "--frames", CLIP["num_frames"], "--points", CLIP["num_points"], "--json", out)
    assert r.returncode == 0, r.stderr
    assert "seed3" in r.stdout and "seed4" in r.stdout and "mean" in r.stdout
    result = json.loads(out.read_text())
    assert [v["name"] for v in result["videos"]] == ["seed3", "seed4"]
    assert result["engine"] == "lk" and result["query_mode"] == "first"
    assert set(result["mean"]) == set(METRIC_KEYS)
    # The CLI's numbers are the library's numbers for the same clips.
    tracker = load_tracker("lk")
    for entry, seed in zip(result["videos"], (3, 4), strict=True):
        video = make_video(seed=seed, **CLIP)
        _, _, expected = evaluate_tracker(tracker, video.frames, video.tracks)
        for key in METRIC_KEYS:
            assert entry["metrics"][key] == pytest.approx(expected[key], abs=1e-9), key
        assert entry["num_points"] == CLIP["num_points"]
    for key in METRIC_KEYS:
        mean = np.mean([v["metrics"][key] for v in result["videos"]])
        assert result["mean"][key] == pytest.approx(mean)
    # LK follows these clips reasonably (measured on seeds 3-4: d_avg ~0.8): not a coin toss.
    assert 0.5 < result["mean"]["average_pts_within_thresh"] <= 1.0


def test_eval_tapvid_davis_pickle_matches_synthetic(tmp_path):
    """A DAVIS-style pickle (dict name -> entry) made from synthetic clips scores the same as
    the synthetic source itself: the reader maps normalised points back to the same pixels."""
    videos = {f"clip{s}": make_video(seed=s, **CLIP) for s in (0, 1)}
    pkl = tmp_path / "tapvid_davis.pkl"
    pkl.write_bytes(pickle.dumps({k: _davis_entry(v) for k, v in videos.items()}))
    out = tmp_path / "davis.json"
    r = run_cli("eval", "tapvid", pkl, "--engine", "lk", "--json", out)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert [v["name"] for v in result["videos"]] == ["clip0", "clip1"]
    tracker = load_tracker("lk")
    for entry, video in zip(result["videos"], videos.values(), strict=True):
        # The reader gives back the ground truth in pixels (to float32 round-off) ...
        gt = tapvid_ground_truth("x", _davis_entry(video), video.frames)
        np.testing.assert_allclose(gt.xy, video.tracks.xy, atol=1e-4)
        np.testing.assert_array_equal(gt.visible, video.tracks.visible)
        # ... so the scores match; round-off in the queries may flip a point-frame or two.
        _, _, expected = evaluate_tracker(tracker, video.frames, video.tracks)
        for key in ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy"):
            assert entry["metrics"][key] == pytest.approx(expected[key], abs=0.01), key

    # Strided mode: one query per visible point on every 5th frame, tracked both ways.
    out = tmp_path / "strided.json"
    r = run_cli("eval", "tapvid", pkl, "--engine", "lk", "--query-mode", "strided",
                "--max-videos", 1, "--json", out)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert len(result["videos"]) == 1 and result["query_mode"] == "strided"
    expected_queries = len(tapvid_queries(videos["clip0"].tracks.visible, "strided", 5)[0])
    assert result["videos"][0]["num_points"] == expected_queries > CLIP["num_points"]


def test_eval_tapvid_kinetics_pickle_with_jpeg_frames(tmp_path):
    """Kinetics-style: a list of entries whose video is a list of JPEG bytes; an odd size
    (not 256x256) so the 256x256 rescaling is exercised."""
    video = make_video(seed=2, size=(200, 150), **CLIP)
    entry = _davis_entry(video)
    entry["video"] = [cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
                      .tobytes() for f in video.frames]
    pkl = tmp_path / "kinetics_part.pkl"
    pkl.write_bytes(pickle.dumps([entry, entry]))
    out = tmp_path / "kinetics.json"
    r = run_cli("eval", "tapvid", pkl, "--engine", "lk", "--resize", "256x256", "--json", out)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert [v["name"] for v in result["videos"]] == ["0000", "0001"]
    m = result["videos"][0]["metrics"]
    assert all(math.isfinite(m[k]) for k in METRIC_KEYS)
    # JPEG noise costs LK some precision, but it still tracks (measured d_avg ~0.8).
    assert m["average_pts_within_thresh"] > 0.5
    assert result["resize"] == [256, 256]


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "no such file"),
        (b"this is not a pickle", "not a readable pickle"),
        (pickle.dumps(42), "expected a dict or list"),
        (pickle.dumps({"a": {"video": np.zeros((2, 8, 8, 3), np.uint8)}}), "lacks occluded"),
        (pickle.dumps({"a": {"video": np.zeros((2, 8, 8, 3), np.uint8),
                             "points": np.zeros((3, 5, 2)), "occluded": np.zeros((3, 5))}}),
         r"points must be \(N, 2, 2\)"),
    ],
)
def test_eval_tapvid_bad_files(tmp_path, content, message):
    pkl = tmp_path / "bad.pkl"
    if content is not None:
        pkl.write_bytes(content)
    out = tmp_path / "out.json"
    r = run_cli("eval", "tapvid", pkl, "--json", out)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--clips", "0"], "--clips must be >= 1"),
        (["--size", "big"], "size must be WxH"),
        (["--engine", "nope"], "unknown engine"),
    ],
)
def test_eval_synthetic_bad_options(args, message):
    r = run_cli("eval", "synthetic", *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_eval_without_source_prints_help():
    r = run_cli("eval")
    assert r.returncode == 2
    assert "synthetic" in r.stdout and "tapvid" in r.stdout
