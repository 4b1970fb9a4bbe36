"""`evaluate_tracks` as a FiftyOne evaluation run, on generated clips with exact ground truth,
tracked with lk through `track_dataset` (real MongoDB, run through scripts/test.sh)."""

from __future__ import annotations

import uuid

import fiftyone as fo
import numpy as np
import pytest

import pointtrack.fiftyone as ptf
from pointtrack.cli import main
from pointtrack.metrics import compute_tapvid_metrics
from pointtrack.synthetic import write_synthetic
from pointtrack.trackers import load_tracker
from pointtrack.tracks import Tracks

T, SIZE, POINTS = 10, (128, 96), 24


@pytest.fixture(scope="module")
def scored_dataset(tmp_path_factory):
    """Two generated clips: ``ground_truth`` tracks, a ``prompt`` keypoint per ground-truth
    query on frame 1, and lk's ``tracks`` (every frame) and ``sparse`` (every 2nd) from them."""
    root = tmp_path_factory.mktemp("synthetic")
    dataset = fo.Dataset(f"pt-eval-{uuid.uuid4().hex[:8]}")
    W, H = SIZE
    for seed in range(2):
        path = root / f"clip{seed}.mp4"
        video = write_synthetic(path, seed=seed, num_frames=T, size=SIZE, num_points=POINTS)
        sample = fo.Sample(filepath=str(path), metadata=ptf.video_metadata(str(path)))
        dataset.add_sample(sample)
        gt = video.tracks
        assert (gt.queries[:, 0] == 0).all()
        ptf.add_tracks(sample, gt, "ground_truth")
        sample.frames[1]["prompt"] = fo.Keypoints(keypoints=[
            fo.Keypoint(label="gt", points=[(float(x) / W, float(y) / H)], index=i)
            for i, (x, y) in enumerate(gt.queries[:, 1:])
        ])
        sample.save()
    lk = load_tracker("lk")
    ptf.track_dataset(dataset, lk, "tracks", prompt_field="prompt", progress=False)
    ptf.track_dataset(dataset, lk, "sparse", prompt_field="prompt", every=2, progress=False)
    yield dataset
    dataset.delete()


def test_per_sample_fields_equal_direct_metrics(scored_dataset):
    ds = scored_dataset
    results = ptf.evaluate_tracks(ds, "tracks", "ground_truth", eval_key="lk")
    assert ds.list_evaluations() == ["lk"]
    expected = []
    for sample in ds:
        pred = ptf.tracks_from_sample(sample, "tracks")
        gt = ptf.tracks_from_sample(sample, "ground_truth")
        assert pred.xy.shape == gt.xy.shape == (T, POINTS, 2)
        m = compute_tapvid_metrics(pred, gt, "first")
        expected.append(m)
        assert sample["lk_aj"] == pytest.approx(m["average_jaccard"], abs=1e-12)
        assert sample["lk_delta_avg"] == pytest.approx(m["average_pts_within_thresh"], abs=1e-12)
        assert sample["lk_oa"] == pytest.approx(m["occlusion_accuracy"], abs=1e-12)
        assert 0.2 < m["average_jaccard"] <= 1.0  # lk does track these clips
    mean_aj = np.mean([m["average_jaccard"] for m in expected])
    assert results.metrics()["average_jaccard"] == pytest.approx(mean_aj, abs=1e-12)
    # Sortable in the App: the view sorted by the field is ordered by the direct metric.
    ordered = ds.sort_by("lk_aj").values("lk_aj")
    assert ordered == sorted(m["average_jaccard"] for m in expected)


def test_run_is_listed_loaded_and_deleted(scored_dataset):
    ds = scored_dataset
    ptf.evaluate_tracks(ds, "tracks", "ground_truth", eval_key="run1", query_mode="strided")
    assert "run1" in ds.list_evaluations()
    info = ds.get_evaluation_info("run1")
    assert info.config.pred_field == "tracks" and info.config.gt_field == "ground_truth"
    assert info.config.query_mode == "strided" and info.config.method == "tapvid"
    # Loaded in a fresh view of the dataset from the database, not from the in-memory cache.
    ds.clear_cache()
    loaded = fo.load_dataset(ds.name).load_evaluation_results("run1", cache=False)
    assert isinstance(loaded, ptf.TrackEvaluationResults)
    strided = [compute_tapvid_metrics(ptf.tracks_from_sample(s, "tracks"),
                                      ptf.tracks_from_sample(s, "ground_truth"), "strided")
               for s in ds]
    for key in ("average_jaccard", "occlusion_accuracy", "pts_within_4"):
        assert loaded.metrics()[key] == pytest.approx(np.mean([m[key] for m in strided]))
    assert [s["name"] for s in loaded.scored] == ["clip0.mp4", "clip1.mp4"]
    assert loaded.skipped == []
    for field in ("run1_aj", "run1_delta_avg", "run1_oa"):
        assert ds.has_sample_field(field)
    ds.delete_evaluation("run1")
    assert "run1" not in ds.list_evaluations()
    for field in ("run1_aj", "run1_delta_avg", "run1_oa"):
        assert not ds.has_sample_field(field)


def test_sampled_predictions_are_scored_on_their_frames(scored_dataset):
    ds = scored_dataset
    ptf.evaluate_tracks(ds, "sparse", "ground_truth", eval_key="sparse_eval")
    for sample in ds:
        pred = ptf.tracks_from_sample(sample, "sparse")
        gt = ptf.tracks_from_sample(sample, "ground_truth")
        assert pred.frame_numbers.tolist() == list(range(0, T, 2))
        rows = slice(0, T, 2)
        gt_rows = Tracks(xy=gt.xy[rows], visible=gt.visible[rows], queries=gt.queries,
                         frame_numbers=gt.frame_numbers[rows], frame_size=gt.frame_size)
        m = compute_tapvid_metrics(pred, gt_rows, "first")
        assert sample["sparse_eval_aj"] == pytest.approx(m["average_jaccard"], abs=1e-12)
        assert sample["sparse_eval_oa"] == pytest.approx(m["occlusion_accuracy"], abs=1e-12)
    ds.delete_evaluation("sparse_eval")


def test_bad_fields_write_nothing(scored_dataset):
    ds = scored_dataset
    before = ds.list_evaluations()
    with pytest.raises(ptf.DatasetError, match="no tracks field 'nope'"):
        ptf.evaluate_tracks(ds, "nope", "ground_truth", eval_key="bad")
    with pytest.raises(ptf.DatasetError, match="query_mode"):
        ptf.evaluate_tracks(ds, "tracks", "ground_truth", eval_key="bad", query_mode="last")
    assert ds.list_evaluations() == before
    assert not ds.has_sample_field("bad_aj")
    # A key already used for other fields is refused, and its run stays as it was.
    ptf.evaluate_tracks(ds, "tracks", "ground_truth", eval_key="taken")
    values = ds.values("taken_aj")
    with pytest.raises(ptf.DatasetError, match="taken"):
        ptf.evaluate_tracks(ds, "sparse", "ground_truth", eval_key="taken")
    assert ds.values("taken_aj") == values
    assert ds.get_evaluation_info("taken").config.pred_field == "tracks"
    ds.delete_evaluation("taken")


def test_cli_eval_dataset_stores_the_run(scored_dataset, capsys, tmp_path):
    ds = scored_dataset
    out = tmp_path / "eval.json"
    code = main(["eval", "dataset", ds.name, "--pred", "tracks", "--gt", "ground_truth",
                 "--eval-key", "cli", "--json", str(out)])
    stdout, _ = capsys.readouterr()
    assert code == 0
    assert "mean over 2 video(s)" in stdout and "cli_aj" in stdout
    results = ds.load_evaluation_results("cli")
    line = next(x for x in stdout.splitlines() if x.startswith("mean over"))
    assert f"AJ {results.metrics()['average_jaccard']:.3f}" in line
    ds.delete_evaluation("cli")
    code = main(["eval", "dataset", ds.name, "--pred", "missing"])
    _, err = capsys.readouterr()
    assert code == 2 and err.strip() == (
        f"pointtrack: error: dataset '{ds.name}' has no tracks field 'missing'")
