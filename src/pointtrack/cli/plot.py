"""``pointtrack plot``: x and y of each track against the frame number, as an image.

Tracks come from a ``.npz`` written by ``pointtrack track`` / `Tracks.save`, from a video
(tracked here with the engine options), or from a FiftyOne sample
(``--dataset NAME --sample-id ID --field F``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError
from .track import add_engine_arguments, add_sampling_arguments, load_engine


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot track trajectories (x, y against frame) to an image")
    p.add_argument("input", nargs="?", metavar="VIDEO_OR_TRACKS",
                   help="a tracks file (.npz) or a video to track")
    p.add_argument("--out", required=True, help="image to write (.png, .pdf, .svg)")
    p.add_argument("--dataset", help="read the tracks of a FiftyOne sample instead")
    p.add_argument("--sample-id", help="the sample (with --dataset)")
    p.add_argument("--field", default="tracks", help="its tracks field (default tracks)")
    p.add_argument("--tracks", metavar="IDS", help="only these track ids, e.g. 0,3,7")
    add_engine_arguments(p)
    p.add_argument("--grid-size", type=int, default=10,
                   help="a video is tracked from an N x N grid (default 10)")
    add_sampling_arguments(p)
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from ..plot import plot_tracks, save_plot

    tracks = _read_tracks(args)
    ids = None
    if args.tracks:
        try:
            ids = [int(v) for v in args.tracks.split(",")]
        except ValueError:
            raise CLIError(f"--tracks must be comma-separated ids, got {args.tracks!r}") from None
    try:
        fig = plot_tracks(tracks, track_ids=ids)
        out = save_plot(fig, args.out)
    except ValueError as e:
        raise CLIError(str(e)) from e
    print(f"wrote {out}")
    return 0


def _read_tracks(args: argparse.Namespace):
    from ..tracks import Tracks

    if args.dataset:
        if args.input or not args.sample_id:
            raise CLIError("--dataset takes --sample-id ID (and --field F) instead of a file")
        return _sample_tracks(args.dataset, args.sample_id, args.field)
    if not args.input:
        raise CLIError("give a tracks file (.npz), a video, or --dataset NAME --sample-id ID")
    if Path(args.input).suffix == ".npz":
        return Tracks.load(args.input)
    from ..video import read_clip

    if args.grid_size < 1:
        raise CLIError(f"grid size must be >= 1, got {args.grid_size}")
    tracker = load_engine(args)
    clip = read_clip(args.input, size=tracker.input_size, every=args.every, fps=args.fps,
                     max_frames=args.max_frames, start=args.start, end=args.end)
    return tracker.track(clip, grid_size=args.grid_size)


def _sample_tracks(name: str, sample_id: str, field: str):
    from ..fiftyone import DatasetError, load_dataset, result_field, tracks_from_sample

    try:
        dataset = load_dataset(name)
    except DatasetError as e:
        raise CLIError(str(e)) from e
    if not dataset.has_sample_field(result_field(field)):
        raise CLIError(f"dataset '{name}' has no tracks field '{field}'")
    try:
        sample = dataset[sample_id]
    except (KeyError, ValueError):
        raise CLIError(f"dataset '{name}' has no sample with id '{sample_id}'") from None
    if sample[result_field(field)] is None:
        raise CLIError(f"sample '{sample_id}' of '{name}' has no '{field}' tracks")
    return tracks_from_sample(sample, field)
