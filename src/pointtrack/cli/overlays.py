"""``pointtrack dataset overlays NAME --field F --out DIR``: overlay videos beside the
originals, in the grouped dataset ``NAME-overlays`` (`pointtrack.fiftyone.add_overlays`)."""

from __future__ import annotations

import argparse

from . import CLIError


def register_action(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "overlays", help="render tracked samples and group them with the originals "
        "(a grouped dataset NAME-overlays the App shows side by side)")
    p.add_argument("name", metavar="NAME", help="dataset name")
    p.add_argument("--field", default="tracks", help="tracks field to draw (default tracks)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the mp4s")
    p.add_argument("--group-name", help="grouped dataset to fill (default NAME-overlays)")
    p.add_argument("--max-side", type=int, help="downscale overlays to this longest side")
    p.add_argument("--trail", type=int, default=10, help="trail length in frames (default 10)")
    p.add_argument("--overwrite", action="store_true", help="re-render samples already done")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_overlays)


def run_overlays(args: argparse.Namespace) -> int:
    from ..fiftyone import DatasetError, add_overlays, load_dataset

    if args.max_side is not None and args.max_side < 2:
        raise CLIError(f"--max-side must be >= 2, got {args.max_side}")
    if args.trail < 0:
        raise CLIError(f"--trail must be >= 0, got {args.trail}")
    try:
        dataset = load_dataset(args.name)
        summary = add_overlays(dataset, args.field, args.out, name=args.group_name,
                               overwrite=args.overwrite, max_side=args.max_side,
                               trail=args.trail, progress=not args.no_progress)
    except DatasetError as e:
        raise CLIError(str(e)) from e
    print(summary)
    print(f"open it in the App:  pointtrack app {summary.dataset.name} --field {args.field}")
    return 0
