"""pointtrack's trackers through FiftyOne's model zoo: `register_zoo_source`, then
``foz.load_zoo_model(name, **kwargs)`` and ``dataset.apply_model`` on real encoded videos
(real MongoDB, run through scripts/test.sh)."""

from __future__ import annotations

import shutil
import sys
import uuid

import fiftyone as fo
import fiftyone.zoo as foz
import numpy as np
import pytest
import torch
from conftest import textured_frames

import pointtrack
import pointtrack.fiftyone as ptf
from pointtrack.models.cotracker3 import CoTracker3Offline, CoTracker3Online
from pointtrack.models.weights import (
    CHECKPOINTS,
    CheckpointError,
    model_shapes,
    synthetic_state_dict,
)
from pointtrack.trackers import load_tracker
from pointtrack.video import read_clip, write_video

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="FiftyOne's apply_model opens videos with ffmpeg"
)


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """A model zoo directory of this test's own, with pointtrack's source registered."""
    monkeypatch.setattr(fo.config, "model_zoo_dir", str(tmp_path / "zoo"))
    url = ptf.register_zoo_source()
    yield url
    if url in foz.list_zoo_model_sources():
        foz.delete_zoo_model_source(url)


@pytest.fixture
def videos(tmp_path):
    """A dataset of two encoded videos (12 and 9 frames, 96x72) that drift 2 px right."""
    paths = [write_video(tmp_path / f"v{i}.mp4", textured_frames(n, size=(96, 72), seed=i),
                         fps=10) for i, n in enumerate((12, 9))]
    dataset = fo.Dataset(f"pt-zoo-{uuid.uuid4().hex[:8]}")
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in paths])
    yield dataset
    dataset.delete()


def keypoints_of(sample, field) -> dict[int, np.ndarray]:
    """Frame number -> ``(K, 3)`` rows of (index, u, v) of the stored keypoints."""
    out = {}
    for fn, frame in sample.frames.items():
        if frame[field] is not None:
            out[fn] = np.array([(k.index, *k.points[0]) for k in frame[field].keypoints])
    return out


def expected_keypoints(tracks) -> dict[int, np.ndarray]:
    W, H = tracks.frame_size
    return {
        int(fn) + 1: np.array([(n, x / W, y / H) for n, (x, y) in enumerate(tracks.xy[t])
                               if tracks.visible[t, n]])
        for t, fn in enumerate(tracks.frame_numbers)
    }


def test_source_lists_the_three_models_and_is_removed(zoo):
    assert zoo in foz.list_zoo_model_sources()
    names = foz.list_zoo_models(source=zoo)
    assert sorted(names) == ["cotracker3-offline", "cotracker3-online", "lk"]
    info = foz.get_zoo_model("cotracker3-offline")
    assert "facebook/cotracker3" in info.source and "keypoints" in info.tags
    assert ptf.register_zoo_source(overwrite=False) == zoo  # idempotent
    foz.delete_zoo_model_source(zoo)
    assert "lk" not in foz.list_zoo_models()


def test_lk_through_the_zoo_and_apply_model(zoo, videos):
    model = foz.load_zoo_model("lk", grid_size=3, every=2)
    assert isinstance(model, ptf.TrackerModel) and model.media_type == "video"
    # FiftyOne registers the zoo module in sys.modules under the source's name: it must not
    # take the place of the pointtrack package.
    assert sys.modules["pointtrack"] is pointtrack and hasattr(pointtrack, "__version__")
    assert model.grid_size == 3 and model.sampling["every"] == 2
    videos.apply_model(model, label_field="zoo")
    lk = load_tracker("lk")
    for sample in videos:
        tracks = lk.track(read_clip(sample.filepath, size=lk.input_size, every=2), grid_size=3)
        got, want = keypoints_of(sample, "zoo"), expected_keypoints(tracks)
        assert sorted(got) == sorted(want) == list(range(1, tracks.num_frames * 2, 2))
        for fn in want:
            np.testing.assert_allclose(got[fn], want[fn], atol=1e-6)
        # Points seen first and last moved left with the content (2 px a frame).
        first, last = got[1], got[max(got)]
        both = np.intersect1d(first[:, 0], last[:, 0])
        assert len(both) >= 2
        du = (last[np.isin(last[:, 0], both), 1] - first[np.isin(first[:, 0], both), 1]) * 96
        np.testing.assert_allclose(du, -2 * (max(got) - 1), atol=1.0)


def test_cotracker_offline_without_weights_names_url_and_fix(zoo, tmp_path, monkeypatch):
    monkeypatch.delenv("POINTTRACK_CHECKPOINT_DIR", raising=False)
    old_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))  # nothing cached
    url = "http://127.0.0.1:9/facebook/cotracker3/scaled_offline.pth"  # nothing listens: offline
    monkeypatch.setitem(CHECKPOINTS, "scaled_offline", url)
    try:
        with pytest.raises(CheckpointError) as e:
            foz.load_zoo_model("cotracker3-offline")
    finally:
        torch.hub.set_dir(old_hub)
    message = str(e.value)
    assert url in message
    assert "checkpoint='/path/to/scaled_offline.pth'" in message
    assert "POINTTRACK_CHECKPOINT_DIR" in message


def test_cotracker_through_the_zoo_with_local_checkpoints(zoo, videos, tmp_path, monkeypatch):
    weights = synthetic_state_dict(model_shapes(CoTracker3Offline()), seed=0)
    path = tmp_path / "my_offline.pth"
    torch.save(weights, path)
    model = foz.load_zoo_model("cotracker3-offline", checkpoint=str(path), grid_size=2,
                               max_frames=6)
    assert model.tracker.name == "cotracker3-offline"
    one = videos.limit(1)
    one.apply_model(model, label_field="co")
    sample = one.first()
    reference = load_tracker("cotracker3-offline", checkpoint=weights)
    tracks = reference.track(read_clip(sample.filepath, size=reference.input_size,
                                       max_frames=6), grid_size=2)
    got, want = keypoints_of(sample, "co"), expected_keypoints(tracks)
    assert sorted(got) == sorted(want) == list(range(1, 7))
    for fn in want:
        np.testing.assert_allclose(got[fn], want[fn], atol=1e-5)
    # The online engine by registry name from a directory of checkpoints (no internet).
    online = synthetic_state_dict(model_shapes(CoTracker3Online()), seed=1)
    (tmp_path / "ckpt").mkdir()
    torch.save(online, tmp_path / "ckpt" / "scaled_online.pth")
    monkeypatch.setenv("POINTTRACK_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    model = foz.load_zoo_model("cotracker3-online", device="cpu", fps=5)
    assert model.tracker.name == "cotracker3-online" and model.sampling["fps"] == 5
    loaded = model.tracker.model.state_dict()["time_emb"]
    assert torch.equal(loaded, online["time_emb"])
