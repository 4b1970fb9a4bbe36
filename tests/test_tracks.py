import csv

import numpy as np
import pytest

from pointtrack import Tracks, TracksError


def random_tracks(T=5, N=4, seed=0, probs=True):
    rng = np.random.default_rng(seed)
    return Tracks(
        xy=rng.uniform(0, 100, (T, N, 2)),
        visible=rng.random((T, N)) > 0.3,
        queries=np.c_[rng.integers(0, T, N), rng.uniform(0, 100, (N, 2))],
        frame_numbers=np.arange(T) * 3 + 1,
        frame_size=(128, 96),
        fps=7.5,
        tracker="test",
        visibility=rng.random((T, N)) if probs else None,
        confidence=rng.random((T, N)) if probs else None,
        options={"grid_size": 2, "every": 3},
    )


def test_validates_shapes():
    t = random_tracks()
    with pytest.raises(TracksError, match="visible"):
        Tracks(t.xy, t.visible[:, :2], t.queries, t.frame_numbers, t.frame_size)
    with pytest.raises(TracksError, match="queries"):
        Tracks(t.xy, t.visible, t.queries[:2], t.frame_numbers, t.frame_size)
    with pytest.raises(TracksError, match="frame_numbers"):
        Tracks(t.xy, t.visible, t.queries, t.frame_numbers[:2], t.frame_size)
    with pytest.raises(TracksError, match="xy"):
        Tracks(t.xy[..., :1], t.visible, t.queries, t.frame_numbers, t.frame_size)
    with pytest.raises(TracksError, match="confidence"):
        Tracks(t.xy, t.visible, t.queries, t.frame_numbers, t.frame_size, confidence=t.xy)


@pytest.mark.parametrize("probs", [True, False])
def test_npz_roundtrip_exact(tmp_path, probs):
    t = random_tracks(probs=probs)
    path = t.save(tmp_path / "t.npz")
    back = Tracks.load(path)
    assert back.equals(t)
    assert back.xy.dtype == np.float32 and back.visible.dtype == bool
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no temp file left


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    with pytest.raises(TracksError, match="bad.npz"):
        Tracks.load(bad)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(TracksError, match="other.npz"):
        Tracks.load(tmp_path / "other.npz")


def test_csv_and_tapvid(tmp_path):
    t = random_tracks(T=3, N=2)
    rows = list(csv.DictReader(open(t.to_csv(tmp_path / "t.csv"))))
    assert len(rows) == 6
    assert rows[3]["frame_number"] == str(t.frame_numbers[1]) and rows[3]["track_id"] == "1"
    assert float(rows[3]["x"]) == pytest.approx(t.xy[1, 1, 0], abs=1e-3)
    assert rows[3]["visible"] == str(int(t.visible[1, 1]))
    d = t.to_tapvid()
    assert d["points"].shape == (2, 3, 2) and d["occluded"].shape == (2, 3)
    np.testing.assert_allclose(d["points"][1, 2] * [128, 96], t.xy[2, 1], rtol=1e-5)
    assert np.array_equal(d["occluded"], ~t.visible.T)
    np.testing.assert_allclose(d["query_points"][:, 1:], t.queries[:, [2, 1]])


def test_select():
    t = random_tracks()
    s = t.select([2, 0])
    assert s.num_tracks == 2 and np.array_equal(s.xy[:, 0], t.xy[:, 2])
    assert np.array_equal(s.confidence[:, 1], t.confidence[:, 0])
