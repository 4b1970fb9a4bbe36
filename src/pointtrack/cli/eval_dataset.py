"""``pointtrack eval dataset NAME --pred FIELD --gt FIELD``: score stored tracks in FiftyOne.

Both fields hold tracks written by pointtrack (`pointtrack.fiftyone.add_tracks` or
`track_dataset`), with the same tracks in the same order: for example ``tracks`` made from
the queries of ``ground_truth``, as the demo does. Rows are matched by source frame number,
so predictions made on sampled frames are scored on those frames. The query mode only picks
the frames scored ("first": after each query's frame; "strided": all but the query frame):
the tracks were queried when they were made.
"""

from __future__ import annotations

import argparse

import numpy as np

from . import CLIError
from .eval import Row, add_common_arguments, report


def register_source(sources: argparse._SubParsersAction) -> None:
    p = sources.add_parser("dataset", help="a FiftyOne dataset: a predicted tracks field "
                           "against a ground-truth tracks field")
    p.add_argument("name", help="dataset name")
    p.add_argument("--pred", default="tracks", help="predicted tracks field (default tracks)")
    p.add_argument("--gt", default="ground_truth",
                   help="ground-truth tracks field (default ground_truth)")
    add_common_arguments(p)
    p.set_defaults(func=run_dataset)


def aligned(pred, gt):
    """``(pred, gt)`` restricted to the source frames both hold, queries re-indexed; tracks
    whose query frame is not among them are dropped. Raises ValueError when nothing fits."""
    from ..tracks import Tracks

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


def run_dataset(args: argparse.Namespace) -> int:
    from ..fiftyone import DatasetError, load_dataset, result_field, tracks_from_sample
    from ..metrics import compute_tapvid_metrics

    try:
        dataset = load_dataset(args.name)
    except DatasetError as e:
        raise CLIError(str(e)) from e
    for field in (args.pred, args.gt):
        if not dataset.has_sample_field(result_field(field)):
            raise CLIError(f"dataset '{args.name}' has no tracks field '{field}'")
    rows = []
    view = dataset.exists(result_field(args.pred)).exists(result_field(args.gt))
    for sample in view:
        name = sample.filename
        try:
            pred, gt = aligned(tracks_from_sample(sample, args.pred),
                               tracks_from_sample(sample, args.gt))
            metrics = compute_tapvid_metrics(pred, gt, args.query_mode)
        except ValueError as e:
            print(f"skipped {name}: {e}")
            continue
        rows.append(Row(name, metrics, 0.0, gt.num_tracks, gt.num_frames))
    if not rows:
        raise CLIError(f"no sample of '{args.name}' has comparable '{args.pred}' and "
                       f"'{args.gt}' tracks")
    report(rows, args, {"source": "dataset", "dataset": args.name, "pred": args.pred,
                        "gt": args.gt})
    return 0
