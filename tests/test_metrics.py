"""TAP-Vid metrics pinned on small cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pointtrack.metrics import (
    METRIC_KEYS,
    average_metrics,
    compute_tapvid_metrics,
    tapvid_metrics,
    tapvid_queries,
    with_queries,
)
from pointtrack.synthetic import make_video
from pointtrack.tracks import Tracks


def _tracks(xy, visible, query_t, size=(256, 256)) -> Tracks:
    xy = np.asarray(xy, np.float32)  # (T, N, 2)
    T, N = xy.shape[:2]
    q = np.array([[t, *xy[t, n]] for n, t in enumerate(query_t)], np.float32)
    return Tracks(xy=xy, visible=np.asarray(visible, bool), queries=q,
                  frame_numbers=np.arange(T), frame_size=size)


def _hand_case():
    """2 points x 4 frames on a 256x256 frame (the evaluation scale: no rescaling).

    Point 0, query on frame 0, always visible, GT x = 10, 12, 14, 16 (y = 10); predicted
    visible everywhere with errors 0, 0.5, 3, 20 px on frames 0..3.
    Point 1, query on frame 1, GT at (100, 100), occluded on frame 2 only; predicted: frame 0
    visible with error 4, frame 1 exact, frame 2 visible (wrong: it is occluded) at the GT
    position, frame 3 occluded (wrong) with error 1.
    """
    gt_xy = np.zeros((4, 2, 2))
    gt_xy[:, 0] = [[10, 10], [12, 10], [14, 10], [16, 10]]
    gt_xy[:, 1] = [100, 100]
    gt_vis = np.array([[1, 1], [1, 1], [1, 0], [1, 1]], bool)
    pred_xy = gt_xy.copy()
    pred_xy[1, 0, 0] += 0.5
    pred_xy[2, 0, 0] += 3
    pred_xy[3, 0, 1] += 20
    pred_xy[0, 1, 0] += 4
    pred_xy[3, 1, 0] += 1
    pred_vis = np.array([[1, 1], [1, 1], [1, 1], [1, 0]], bool)
    gt = _tracks(gt_xy, gt_vis, [0, 1])
    pred = _tracks(pred_xy, pred_vis, [0, 1])
    return pred, gt


def test_hand_checked_query_first():
    pred, gt = _hand_case()
    m = compute_tapvid_metrics(pred, gt, "first")
    # Evaluated frames (after the query): p0 on 1, 2, 3; p1 on 2, 3 -> 5 frames.
    # Occlusion right: p0 x3; p1 frame 2 (pred visible, GT occluded) and frame 3 (pred
    # occluded, GT visible) wrong -> 3/5.
    assert m["occlusion_accuracy"] == pytest.approx(3 / 5)
    # GT-visible evaluated: p0 1, 2, 3 (errors 0.5, 3, 20) and p1 3 (error 1) -> 4.
    # < 1: {0.5} = 1/4; < 2: {0.5, 1} = 2/4; < 4, < 8, < 16: {0.5, 3, 1} = 3/4 (strict <).
    expected_within = [1 / 4, 2 / 4, 3 / 4, 3 / 4, 3 / 4]
    for d, e in zip((1, 2, 4, 8, 16), expected_within, strict=True):
        assert m[f"pts_within_{d}"] == pytest.approx(e), d
    assert m["average_pts_within_thresh"] == pytest.approx(3.0 / 5)  # (.25+.5+.75*3)/5
    # Jaccard = TP / (GT visible + FP). GT visible = 4. p1 frame 3 is predicted occluded: never
    # TP, never FP; p1 frame 2 is always a FP (visible but occluded).
    # d=1, 2: TP {p0 f1}, FP {p1 f2, p0 f2, p0 f3} -> 1/7.  d=4, 8, 16: TP {p0 f1, p0 f2},
    # FP {p1 f2, p0 f3} -> 2/6.
    expected_jaccard = [1 / 7, 1 / 7, 1 / 3, 1 / 3, 1 / 3]
    for d, e in zip((1, 2, 4, 8, 16), expected_jaccard, strict=True):
        assert m[f"jaccard_{d}"] == pytest.approx(e), d
    assert m["average_jaccard"] == pytest.approx(9 / 35)  # (2/7 + 1) / 5
    # Median of the evaluated GT-visible errors {0.5, 3, 20, 1} = (1 + 3) / 2.
    assert m["median_error"] == pytest.approx(2.0)
    assert list(m) == list(METRIC_KEYS)


def test_hand_checked_query_strided():
    pred, gt = _hand_case()
    m = compute_tapvid_metrics(pred, gt, "strided")
    # Strided: every frame but the query: p0 on 1, 2, 3; p1 on 0, 2, 3 -> 6 frames.
    # Occlusion right: p0 x3 + p1 frame 0 -> 4/6.
    assert m["occlusion_accuracy"] == pytest.approx(4 / 6)
    # GT-visible evaluated errors: p0 {0.5, 3, 20}, p1 frame 0 {4}, frame 3 {1} -> 5.
    # < 1: 1/5; < 2: 2/5; < 4: {0.5, 3, 1} 3/5 (4 is not < 4); < 8, < 16: 4/5.
    expected_within = [1 / 5, 2 / 5, 3 / 5, 4 / 5, 4 / 5]
    for d, e in zip((1, 2, 4, 8, 16), expected_within, strict=True):
        assert m[f"pts_within_{d}"] == pytest.approx(e), d
    assert m["average_pts_within_thresh"] == pytest.approx(2.8 / 5)
    # GT visible = 5. d=1, 2: TP {p0 f1}, FP {p1 f2, p0 f2, p0 f3, p1 f0} -> 1/9.
    # d=4: TP {p0 f1, p0 f2}, FP {p1 f2, p0 f3, p1 f0} -> 2/8.
    # d=8, 16: TP {p0 f1, p0 f2, p1 f0}, FP {p1 f2, p0 f3} -> 3/7.
    expected_jaccard = [1 / 9, 1 / 9, 1 / 4, 3 / 7, 3 / 7]
    for d, e in zip((1, 2, 4, 8, 16), expected_jaccard, strict=True):
        assert m[f"jaccard_{d}"] == pytest.approx(e), d
    assert m["average_jaccard"] == pytest.approx((2 / 9 + 1 / 4 + 6 / 7) / 5)
    assert m["median_error"] == pytest.approx(3.0)  # median of {0.5, 3, 20, 4, 1}


def test_array_version_matches_reference_layout():
    """The low-level function takes TAP-Vid's layout: (B, N, 3) (t, y, x) queries, (B, N, T)
    occlusion, (B, N, T, 2) tracks, and returns per-video arrays."""
    pred, gt = _hand_case()
    qp = gt.queries[:, [0, 2, 1]][None]
    args = (qp, ~gt.visible.T[None], gt.xy.transpose(1, 0, 2)[None])
    m = tapvid_metrics(*args, ~pred.visible.T[None], pred.xy.transpose(1, 0, 2)[None], "first")
    assert m["average_jaccard"].shape == (1,)
    assert m["average_jaccard"][0] == pytest.approx(9 / 35)
    # Two videos: the second predicted perfectly -> per-video values, not pooled.
    two = [np.concatenate([a, a]) for a in args]
    perfect = tapvid_metrics(*two, two[1], two[2], "first")
    mixed = tapvid_metrics(
        *two,
        np.concatenate([~pred.visible.T[None], args[1]]),
        np.concatenate([pred.xy.transpose(1, 0, 2)[None], args[2]]),
        "first",
    )
    np.testing.assert_allclose(perfect["average_jaccard"], [1, 1])
    np.testing.assert_allclose(mixed["occlusion_accuracy"], [3 / 5, 1])


def test_rescaled_to_256():
    """On a 512x128 frame x shrinks by 2 and y grows by 2: an error of (3, 0.5) source px is
    (1.5, 1.0) at 256x256, distance 1.80: not within 1, within 2."""
    gt = _tracks([[[100, 50]], [[100, 50]]], [[1], [1]], [0], size=(512, 128))
    pred = _tracks([[[100, 50]], [[103, 50.5]]], [[1], [1]], [0], size=(512, 128))
    m = compute_tapvid_metrics(pred, gt)
    assert m["pts_within_1"] == 0 and m["pts_within_2"] == 1
    assert m["median_error"] == pytest.approx(np.hypot(1.5, 1.0))


def test_perfect_and_shifted_ground_truth():
    gt = make_video(seed=0, num_frames=10).tracks
    m = compute_tapvid_metrics(gt, gt)
    assert all(m[k] == 1.0 for k in METRIC_KEYS if k != "median_error")
    assert m["median_error"] == 0.0
    # Shift x by 3 px (256 wide: 3 px at eval scale too): outside 1 and 2, inside 4, 8, 16.
    shifted = gt.select(slice(None))
    shifted.xy = gt.xy + np.array([3, 0], np.float32)
    m = compute_tapvid_metrics(shifted, gt)
    assert m["average_pts_within_thresh"] == pytest.approx(3 / 5)
    assert m["average_jaccard"] == pytest.approx(3 / 5)
    assert m["occlusion_accuracy"] == 1.0
    # Predicting everything visible: occlusion accuracy drops to the visible fraction.
    all_visible = gt.select(slice(None))
    all_visible.visible = np.ones_like(gt.visible)
    after_query = np.arange(10)[:, None] > gt.queries[:, 0]
    expected = gt.visible[after_query].mean()
    assert compute_tapvid_metrics(all_visible, gt)["occlusion_accuracy"] == pytest.approx(expected)
    assert expected < 1


def test_query_sampling_like_tapvid():
    # T = 6, three tracks: always visible, visible from frame 2, never visible.
    visible = np.zeros((6, 3), bool)
    visible[:, 0] = True
    visible[2:, 1] = True
    track, frame = tapvid_queries(visible, "first")
    assert track.tolist() == [0, 1] and frame.tolist() == [0, 2]
    # Strided (every 5th frame: 0 and 5): frame 0 has track 0, frame 5 has tracks 0 and 1.
    track, frame = tapvid_queries(visible, "strided", stride=5)
    assert track.tolist() == [0, 0, 1] and frame.tolist() == [0, 5, 5]

    xy = np.arange(6 * 3 * 2, dtype=np.float32).reshape(6, 3, 2)
    gt = Tracks(xy=xy, visible=visible, queries=np.zeros((3, 3)), frame_numbers=np.arange(6),
                frame_size=(64, 64))
    q = with_queries(gt, "strided", stride=5)
    assert q.num_tracks == 3
    np.testing.assert_array_equal(q.queries[:, 0], [0, 5, 5])
    np.testing.assert_array_equal(q.queries[:, 1:], [xy[0, 0], xy[5, 0], xy[5, 1]])
    np.testing.assert_array_equal(q.xy[:, 2], xy[:, 1])


def test_average_metrics_is_per_video_mean():
    avg = average_metrics([{"a": 1.0, "b": 0.0}, {"a": 0.5, "b": float("nan")}])
    assert avg == {"a": 0.75, "b": 0.0}
    assert average_metrics([]) == {}


def test_mismatched_inputs_raise():
    pred, gt = _hand_case()
    with pytest.raises(ValueError, match="query_mode"):
        compute_tapvid_metrics(pred, gt, "last")
    with pytest.raises(ValueError, match="ground truth"):
        compute_tapvid_metrics(pred.select([0]), gt)
