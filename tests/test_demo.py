"""The README's main job: `pointtrack demo`, then `pointtrack eval dataset` on its result."""

import json
import re
import subprocess
import sys
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest

from pointtrack import probe
from pointtrack.fiftyone import tracks_from_sample


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pointtrack", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_demo_on_generated_clips_then_eval(tmp_path):
    r = run_cli("demo", "--name", "demo-test", "--clips", "2", "--frames", "16")
    assert r.returncode == 0, r.stderr
    assert "engine: lk (CoTracker3 weights are not on this machine" in r.stdout
    assert "pointtrack app demo-test" in r.stdout
    mean_aj = float(re.search(r"average_jaccard\s+([0-9.]+)", r.stdout).group(1))
    assert 0.3 < mean_aj <= 1.0

    dataset = fo.load_dataset("demo-test")
    assert len(dataset) == 2
    for sample in dataset:
        pred = tracks_from_sample(sample, "tracks")
        gt = tracks_from_sample(sample, "ground_truth")
        assert pred.xy.shape == gt.xy.shape == (16, 128, 2)
        frame = sample.frames[1]
        keypoints = frame["tracks"].keypoints
        assert len(keypoints) == pred.visible[0].sum()
        assert {k.index for k in keypoints} <= set(range(128))
        overlay = Path(sample["overlay_filepath"])
        info = probe(overlay)
        assert (info.width, info.height, info.num_frames) == (320, 240, 16)

    out = tmp_path / "eval.json"
    r = run_cli("eval", "dataset", "demo-test", "--json", out)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert result["mean"]["average_jaccard"] == pytest.approx(mean_aj, abs=1e-3)


def test_demo_on_own_videos(make_video, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(2):
        path, _ = make_video(name=f"v{i}.mp4", num_frames=8, seed=i)
        path.rename(folder / path.name)
    r = run_cli("demo", folder, "--name", "demo-own", "--grid-size", "5")
    assert r.returncode == 0, r.stderr
    dataset = fo.load_dataset("demo-own")
    assert len(dataset) == 2
    for sample in dataset:
        tracks = tracks_from_sample(sample, "tracks")
        assert tracks.xy.shape == (8, 25, 2)
        assert np.isfinite(tracks.xy).all()
        assert Path(sample["overlay_filepath"]).is_file()


def test_demo_bad_input():
    r = run_cli("demo", "/nonexistent/folder", "--name", "demo-bad")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "/nonexistent/folder" in r.stderr
