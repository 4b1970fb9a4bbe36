"""``pointtrack eval dataset NAME --pred FIELD --gt FIELD [--eval-key K]``: score stored tracks
in FiftyOne as a FiftyOne evaluation run (`pointtrack.fiftyone.evaluate_tracks`).

Each sample gets ``<K>_aj``, ``<K>_delta_avg`` and ``<K>_oa``; the run shows in
``dataset.list_evaluations()`` and ``dataset.delete_evaluation(K)`` removes it.
"""

from __future__ import annotations

import argparse

from . import CLIError
from .eval import Row, add_common_arguments, report


def register_source(sources: argparse._SubParsersAction) -> None:
    p = sources.add_parser("dataset", help="a FiftyOne dataset: a predicted tracks field "
                           "against a ground-truth tracks field")
    p.add_argument("name", help="dataset name")
    p.add_argument("--pred", default="tracks", help="predicted tracks field (default tracks)")
    p.add_argument("--gt", default="ground_truth",
                   help="ground-truth tracks field (default ground_truth)")
    p.add_argument("--eval-key", default="eval",
                   help="FiftyOne evaluation key: per-sample fields KEY_aj, KEY_delta_avg, "
                   "KEY_oa (default eval)")
    add_common_arguments(p)
    p.set_defaults(func=run_dataset)


def run_dataset(args: argparse.Namespace) -> int:
    from ..fiftyone import DatasetError, evaluate_tracks, load_dataset

    try:
        dataset = load_dataset(args.name)
        results = evaluate_tracks(dataset, args.pred, args.gt, eval_key=args.eval_key,
                                  query_mode=args.query_mode)
    except DatasetError as e:
        raise CLIError(str(e)) from e
    for s in results.skipped:
        print(f"skipped {s['name']}: {s['reason']}")
    rows = [Row(s["name"], s["metrics"], 0.0, s["num_points"], s["num_frames"])
            for s in results.scored]
    report(rows, args, {"source": "dataset", "dataset": args.name, "pred": args.pred,
                        "gt": args.gt, "eval_key": args.eval_key})
    print(f"evaluation '{args.eval_key}' stored: per-sample fields {args.eval_key}_aj, "
          f"{args.eval_key}_delta_avg, {args.eval_key}_oa")
    return 0
