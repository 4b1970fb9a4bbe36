"""`evaluate_tracks`: TAP-Vid metrics of stored tracks as a FiftyOne evaluation run.

Both fields hold tracks written by pointtrack (`add_tracks` or `track_dataset`) with the same
tracks in the same order, for example ``tracks`` made from the queries of ``ground_truth``.
Rows are matched by source frame number, so predictions made on sampled frames are scored on
those frames. The query mode only picks the frames scored ("first": after each query's frame;
"strided": all but the query frame): the tracks were queried when they were made.

The run is a real FiftyOne evaluation: ``dataset.list_evaluations()``,
``get_evaluation_info(key)``, ``load_evaluation_results(key)`` (aggregate and per-sample
metrics) and ``delete_evaluation(key)`` (which removes the per-sample fields) all work.
"""

from __future__ import annotations

import math
from typing import Any

import fiftyone.utils.eval.base as foeb
import numpy as np

from ..metrics import QUERY_MODES, average_metrics, compute_tapvid_metrics
from ..tracks import Tracks
from .labels import DatasetError, result_field, tracks_from_sample

#: Per-sample field suffix -> metric key: ``<eval_key>_aj`` etc., to sort and filter in the App.
SAMPLE_FIELDS = {
    "aj": "average_jaccard",
    "delta_avg": "average_pts_within_thresh",
    "oa": "occlusion_accuracy",
}


def evaluate_tracks(
    samples,
    pred_field: str = "tracks",
    gt_field: str = "ground_truth",
    eval_key: str | None = "eval",
    query_mode: str = "first",
) -> TrackEvaluationResults:
    """Score ``pred_field`` against ``gt_field`` on every sample that holds both.

    Stores ``<eval_key>_aj``, ``<eval_key>_delta_avg`` and ``<eval_key>_oa`` on each sample
    (None where a sample could not be scored) and registers the run under ``eval_key``
    (None: compute only). Raises `DatasetError` before writing anything when a field is
    missing or no sample can be scored.
    """
    if query_mode not in QUERY_MODES:
        raise DatasetError(f"query_mode must be one of {', '.join(QUERY_MODES)}, "
                           f"got {query_mode!r}")
    if eval_key is not None and not str(eval_key).isidentifier():
        raise DatasetError(f"eval key must be a valid identifier, got {eval_key!r}")
    name = samples._dataset.name
    for field in (pred_field, gt_field):
        if not samples.has_sample_field(result_field(field)):
            raise DatasetError(f"dataset '{name}' has no tracks field '{field}'")

    scored, skipped = [], []
    view = samples.exists(result_field(pred_field)).exists(result_field(gt_field))
    for sample in view.select_fields([result_field(pred_field), result_field(gt_field)]):
        entry = {"id": sample.id, "name": sample.filename}
        try:
            pred, gt = aligned(tracks_from_sample(sample, pred_field),
                               tracks_from_sample(sample, gt_field))
            metrics = compute_tapvid_metrics(pred, gt, query_mode)
        except ValueError as e:
            skipped.append({**entry, "reason": str(e)})
            continue
        scored.append({**entry, "metrics": metrics, "num_points": gt.num_tracks,
                       "num_frames": gt.num_frames})
    if not scored:
        raise DatasetError(f"no sample of '{name}' has comparable '{pred_field}' and "
                           f"'{gt_field}' tracks")

    config = TrackEvaluationConfig(pred_field, gt_field, query_mode=query_mode)
    method = config.build()
    try:
        method.register_run(samples, eval_key)
    except ValueError as e:  # the key holds another kind of run, or other fields
        raise DatasetError(str(e)) from e
    method.register_samples(samples, eval_key)
    results = TrackEvaluationResults(samples, config, eval_key, average_metrics(
        s["metrics"] for s in scored), scored, skipped, backend=method)
    if eval_key is not None:
        by_id = {s["id"]: s["metrics"] for s in scored}
        ids = samples.values("id")
        for suffix, key in SAMPLE_FIELDS.items():
            # Every sample of the collection is written, so a rerun clears stale values.
            values = {i: _finite(by_id[i][key]) if i in by_id else None for i in ids}
            samples.set_values(f"{eval_key}_{suffix}", values, key_field="id")
        method.save_run_results(samples, eval_key, results)
        method.add_fields_to_sidebar_group(samples, eval_key)
    return results


def aligned(pred: Tracks, gt: Tracks) -> tuple[Tracks, Tracks]:
    """``(pred, gt)`` restricted to the source frames both hold, queries re-indexed; tracks
    whose query frame is not among them are dropped. Raises ValueError when nothing fits."""
    if pred.num_tracks != gt.num_tracks:
        raise ValueError(f"{pred.num_tracks} predicted tracks, {gt.num_tracks} ground truth")
    common, p_rows, g_rows = np.intersect1d(
        pred.frame_numbers, gt.frame_numbers, return_indices=True
    )
    if len(common) == 0:
        raise ValueError("the fields share no frame")
    query_frames = gt.frame_numbers[gt.queries[:, 0].astype(int)]
    keep = np.isin(query_frames, common)
    if not keep.any():
        raise ValueError("no ground-truth query frame was tracked")
    new_t = np.searchsorted(common, query_frames[keep]).astype(np.float32)

    def cut(t: Tracks, rows) -> Tracks:
        t = t.select(np.flatnonzero(keep))
        return Tracks(
            xy=t.xy[rows], visible=t.visible[rows],
            queries=np.c_[new_t, gt.queries[keep, 1:]], frame_numbers=common,
            frame_size=gt.frame_size, fps=t.fps, tracker=t.tracker,
        )

    return cut(pred, p_rows), cut(gt, g_rows)


def _finite(value: float) -> float | None:
    # The App filters numbers; NaN (a metric with nothing to count) is stored as None.
    return float(value) if math.isfinite(value) else None


class TrackEvaluationConfig(foeb.BaseEvaluationMethodConfig):
    """Configuration of a `TrackEvaluation`: the two tracks fields and the query mode."""

    def __init__(self, pred_field: str, gt_field: str, query_mode: str = "first",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pred_field = pred_field
        self.gt_field = gt_field
        self.query_mode = query_mode

    @property
    def method(self) -> str:
        return "tapvid"


class TrackEvaluation(foeb.BaseEvaluationMethod):
    """TAP-Vid evaluation of pointtrack tracks; owns the ``<eval_key>_*`` sample fields."""

    def register_samples(self, samples, eval_key: str | None) -> None:
        import fiftyone.core.fields as fof

        if eval_key is None:
            return
        for field in self.get_fields(samples, eval_key):
            samples._dataset.add_sample_field(field, fof.FloatField)

    def get_fields(self, samples, eval_key: str, include_custom_metrics: bool = True
                   ) -> list[str]:
        return [f"{eval_key}_{suffix}" for suffix in SAMPLE_FIELDS]

    def rename(self, samples, eval_key: str, new_eval_key: str) -> None:
        old = self.get_fields(samples, eval_key)
        new = self.get_fields(samples, new_eval_key)
        samples._dataset.rename_sample_fields(dict(zip(old, new, strict=True)))
        samples._rename_sidebar_group(eval_key, new_eval_key)

    def cleanup(self, samples, eval_key: str) -> None:
        samples._dataset.delete_sample_fields(self.get_fields(samples, eval_key),
                                              error_level=1)
        samples._delete_empty_sidebar_group(eval_key)

    def _validate_run(self, samples, eval_key: str, existing_info) -> None:
        self._validate_fields_match(eval_key, "pred_field", existing_info)
        self._validate_fields_match(eval_key, "gt_field", existing_info)


class TrackEvaluationResults(foeb.BaseEvaluationResults):
    """Results of `evaluate_tracks`.

    Attributes:
        mean: metric -> mean over the scored samples (TAP-Vid's aggregation).
        scored: per scored sample ``{"id", "name", "metrics", "num_points", "num_frames"}``.
        skipped: per sample that holds both fields but could not be scored
            ``{"id", "name", "reason"}``.
    """

    def __init__(self, samples, config, eval_key, mean: dict[str, float],
                 scored: list[dict], skipped: list[dict], custom_metrics=None,
                 backend=None) -> None:
        super().__init__(samples, config, eval_key, custom_metrics=custom_metrics,
                         backend=backend)
        self.mean = dict(mean)
        self.scored = list(scored)
        self.skipped = list(skipped)

    def metrics(self) -> dict[str, float]:
        """The aggregate metrics (a copy of ``mean``)."""
        return dict(self.mean)

    def print_metrics(self, digits: int = 3) -> None:
        for key, value in self.mean.items():
            print(f"{key:26} {value:.{digits}f}")

    @classmethod
    def _from_dict(cls, d, samples, config, eval_key, **kwargs):
        return cls(samples, config, eval_key, d["mean"], d["scored"], d["skipped"],
                   custom_metrics=d.get("custom_metrics"), **kwargs)
