"""TAP-Vid metrics: occlusion accuracy, position accuracy (< delta^x_avg) and average Jaccard.

Same semantics as the TAP-Vid benchmark (Doersch et al., 2022):

- Positions are compared at the 256x256 evaluation scale: x is scaled by 256 / W and y by
  256 / H, so a threshold of 1 px means 1/256 of the frame's width (or height).
- Thresholds are 1, 2, 4, 8 and 16 px; a prediction is within a threshold when its distance
  to the ground truth is strictly less than it.
- Which frames count for a track depends on its query frame: in ``"first"`` mode only frames
  after the query frame, in ``"strided"`` mode every frame but the query frame.
- Position accuracy counts only frames where the ground truth is visible (the predicted
  visibility does not matter); occlusion accuracy counts every evaluated frame; Jaccard counts
  a true positive where the point is visible, predicted visible and within the threshold, and
  a false positive where it is predicted visible but is occluded or too far.
- Metrics are computed per video, then averaged over videos (`average_metrics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .tracks import Tracks

THRESHOLDS = (1, 2, 4, 8, 16)
EVAL_SIZE = 256  # TAP-Vid evaluates at 256x256
QUERY_MODES = ("first", "strided")

#: Keys of `compute_tapvid_metrics`, in table order.
METRIC_KEYS = (
    "average_jaccard",
    "average_pts_within_thresh",
    "occlusion_accuracy",
    *(f"pts_within_{d}" for d in THRESHOLDS),
    *(f"jaccard_{d}" for d in THRESHOLDS),
    "median_error",
)


def eval_frames(query_frames: np.ndarray, num_frames: int, query_mode: str) -> np.ndarray:
    """``(..., N, T)`` bool: the frames that count for each track given its query frame."""
    if query_mode not in QUERY_MODES:
        raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")
    t = np.arange(num_frames)
    q = np.asarray(query_frames)[..., None]
    return t > q if query_mode == "first" else t != q


def tapvid_metrics(
    query_points: np.ndarray,
    gt_occluded: np.ndarray,
    gt_tracks: np.ndarray,
    pred_occluded: np.ndarray,
    pred_tracks: np.ndarray,
    query_mode: str = "first",
) -> dict[str, np.ndarray]:
    """TAP-Vid metrics on arrays laid out as in the TAP-Vid reference evaluation.

    Args:
        query_points: ``(B, N, 3)`` as (t, y, x); only t is used.
        gt_occluded: ``(B, N, T)`` bool, True where the point is occluded.
        gt_tracks: ``(B, N, T, 2)`` (x, y) already at the 256x256 evaluation scale.
        pred_occluded: ``(B, N, T)`` bool.
        pred_tracks: ``(B, N, T, 2)`` (x, y) at the evaluation scale.
        query_mode: ``"first"`` (frames after the query) or ``"strided"`` (all but the query).

    Returns:
        ``{name: (B,) float64}`` per video: ``occlusion_accuracy``, ``pts_within_{d}``,
        ``jaccard_{d}`` for d in 1, 2, 4, 8, 16, ``average_pts_within_thresh`` (delta-avg) and
        ``average_jaccard``; NaN where a video has nothing to evaluate.
    """
    gt_occluded = np.asarray(gt_occluded, dtype=bool)
    pred_occluded = np.asarray(pred_occluded, dtype=bool)
    gt_tracks = np.asarray(gt_tracks, dtype=np.float64)
    pred_tracks = np.asarray(pred_tracks, dtype=np.float64)
    T = gt_occluded.shape[-1]
    query_frame = np.round(np.asarray(query_points)[..., 0]).astype(np.int64)
    evaluated = eval_frames(query_frame, T, query_mode)
    visible, pred_visible = ~gt_occluded, ~pred_occluded
    axes = (1, 2)

    def ratio(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(a, np.float64) / np.asarray(b, np.float64)

    metrics: dict[str, np.ndarray] = {
        "occlusion_accuracy": ratio(
            ((pred_occluded == gt_occluded) & evaluated).sum(axes), evaluated.sum(axes)
        )
    }
    sq_dist = np.sum(np.square(pred_tracks - gt_tracks), axis=-1)
    num_visible = (visible & evaluated).sum(axes)
    within_all, jaccard_all = [], []
    for d in THRESHOLDS:
        within = sq_dist < d * d
        correct = within & visible
        frac = ratio((correct & evaluated).sum(axes), num_visible)
        true_pos = (correct & pred_visible & evaluated).sum(axes)
        false_pos = (((~visible) | (~within)) & pred_visible & evaluated).sum(axes)
        jaccard = ratio(true_pos, num_visible + false_pos)
        metrics[f"pts_within_{d}"] = frac
        metrics[f"jaccard_{d}"] = jaccard
        within_all.append(frac)
        jaccard_all.append(jaccard)
    metrics["average_pts_within_thresh"] = np.mean(within_all, axis=0)
    metrics["average_jaccard"] = np.mean(jaccard_all, axis=0)
    return metrics


def _to_eval_scale(xy: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    W, H = frame_size
    return np.asarray(xy, np.float64) * np.array([EVAL_SIZE / W, EVAL_SIZE / H])


def compute_tapvid_metrics(pred: Tracks, gt: Tracks, query_mode: str = "first") -> dict[str, float]:
    """TAP-Vid metrics of predicted tracks against ground truth on one video.

    ``pred`` and ``gt`` must hold the same tracks (N) on the same rows (T); the query frame of
    each track is ``gt.queries[:, 0]``. Both are scaled from ``gt.frame_size`` to 256x256.

    Returns:
        ``{name: float}``: the keys of `tapvid_metrics` plus ``median_error``, the median
        distance (256x256 pixels) over evaluated frames where the ground truth is visible.
    """
    if pred.xy.shape != gt.xy.shape:
        raise ValueError(
            f"predicted tracks are {pred.xy.shape[:2]} (T, N), ground truth {gt.xy.shape[:2]}"
        )
    if pred.frame_size != gt.frame_size:
        raise ValueError(f"predicted frame size {pred.frame_size} != ground truth {gt.frame_size}")
    gt_xy = _to_eval_scale(gt.xy, gt.frame_size).transpose(1, 0, 2)[None]  # (1, N, T, 2)
    pred_xy = _to_eval_scale(pred.xy, gt.frame_size).transpose(1, 0, 2)[None]
    queries = gt.queries[None]  # only t is read
    m = tapvid_metrics(queries, ~gt.visible.T[None], gt_xy, ~pred.visible.T[None], pred_xy,
                       query_mode)
    out = {k: float(v[0]) for k, v in m.items()}
    evaluated = eval_frames(gt.queries[:, 0].round().astype(int), gt.num_frames, query_mode)
    mask = evaluated & gt.visible.T
    dist = np.linalg.norm(pred_xy[0] - gt_xy[0], axis=-1)[mask]
    out["median_error"] = float(np.median(dist)) if dist.size else float("nan")
    return {k: out[k] for k in METRIC_KEYS}


def average_metrics(per_video: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over videos (TAP-Vid's aggregation), ignoring NaN entries."""
    per_video = list(per_video)
    if not per_video:
        return {}
    keys = [k for k in per_video[0] if all(k in m for m in per_video)]
    out = {}
    for k in keys:
        values = np.array([m[k] for m in per_video], dtype=np.float64)
        out[k] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out


def tapvid_queries(
    visible: np.ndarray, query_mode: str = "first", stride: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """TAP-Vid's query sampling from ground-truth visibility ``(T, N)``.

    ``"first"``: one query per track on its first visible frame. ``"strided"``: one query per
    visible frame ``t`` with ``t % stride == 0``. Tracks never visible get no query.

    Returns:
        ``(M,)`` track index and ``(M,)`` query frame of each query.
    """
    visible = np.asarray(visible, dtype=bool)
    if query_mode == "first":
        track = np.flatnonzero(visible.any(axis=0))
        return track, visible[:, track].argmax(axis=0)
    if query_mode == "strided":
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        t, track = np.nonzero(visible[::stride])  # row-major: grouped by frame, like TAP-Vid
        return track, t * stride
    raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")


def with_queries(gt: Tracks, query_mode: str = "first", stride: int = 5) -> Tracks:
    """Ground truth re-queried the TAP-Vid way: one track per query of `tapvid_queries`
    (``"strided"`` repeats a track once per query frame)."""
    track, frame = tapvid_queries(gt.visible, query_mode, stride)
    out = gt.select(track)
    out.queries = np.concatenate(
        [frame[:, None].astype(np.float32), gt.xy[frame, track]], axis=1
    ).astype(np.float32)
    return out


def evaluate_tracker(
    tracker, video, gt: Tracks, query_mode: str = "first", stride: int = 5
) -> tuple[Tracks, Tracks, dict[str, float]]:
    """Query ``tracker`` the TAP-Vid way from ground truth and score it.

    Queries come from `with_queries` (first visible frame, or every ``stride``-th visible
    frame with backward tracking in ``"strided"`` mode), nudged inside the frame where a
    ground-truth point sits on its border.

    Args:
        tracker: a `pointtrack.trackers.Tracker`.
        video: frames ``(T, H, W, 3)`` uint8, a `Clip` or a path, matching ``gt``'s rows.
        gt: ground truth whose positions are in the video's pixels.

    Returns:
        (predicted tracks, ground truth re-queried, metrics of `compute_tapvid_metrics`).
    """
    queried = with_queries(gt, query_mode, stride)
    if queried.num_tracks == 0:
        raise ValueError("the ground truth has no visible point to query")
    W, H = gt.frame_size
    queries = queried.queries.copy()
    queries[:, 1] = np.clip(queries[:, 1], 0, W - 1)
    queries[:, 2] = np.clip(queries[:, 2], 0, H - 1)
    pred = tracker.track(video, queries=queries, backward_tracking=query_mode == "strided")
    return pred, queried, compute_tapvid_metrics(pred, queried, query_mode)


__all__ = [
    "EVAL_SIZE",
    "eval_frames",
    "evaluate_tracker",
    "METRIC_KEYS",
    "QUERY_MODES",
    "THRESHOLDS",
    "average_metrics",
    "compute_tapvid_metrics",
    "tapvid_metrics",
    "tapvid_queries",
    "with_queries",
]
