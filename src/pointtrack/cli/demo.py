"""``pointtrack demo``: the first five minutes.

Builds a FiftyOne dataset of generated clips with exact ground truth (or of your own videos),
tracks them with the best engine available here, stores per-frame keypoints, renders overlay
videos next to the dataset, scores the tracks against the ground truth, and says how to open
the App.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from . import CLIError
from .track import add_engine_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build, track, render and score a small demo dataset")
    p.add_argument("videos", nargs="*",
                   help="your own video file, folder or glob (default: generated clips)")
    p.add_argument("--name", default="pointtrack-demo", help="dataset name")
    add_engine_arguments(p)
    p.set_defaults(engine="auto")
    p.add_argument("--clips", type=int, default=3, help="generated clips (default 3)")
    p.add_argument("--frames", type=int, default=48, help="frames per generated clip")
    p.add_argument("--grid-size", type=int, default=12,
                   help="grid size for your own videos (default 12)")
    p.add_argument("--max-frames", type=int, default=150,
                   help="frames tracked per video of your own (default 150)")
    p.set_defaults(func=run_demo)


def pick_engine(args: argparse.Namespace) -> tuple[str, str]:
    """(engine, why): CoTracker3 when its weights are given or already on this machine."""
    if args.engine != "auto":
        return args.engine, "as asked"
    if args.checkpoint:
        return "cotracker3-offline", f"checkpoint {args.checkpoint}"
    from ..models.weights import CHECKPOINT_DIR_ENV, CHECKPOINTS, cache_path

    directory = os.environ.get(CHECKPOINT_DIR_ENV)
    candidates = [cache_path(CHECKPOINTS["scaled_offline"])]
    if directory:
        candidates.insert(0, Path(directory) / "scaled_offline.pth")
    for path in candidates:
        if path.is_file():
            args.checkpoint = str(path)
            return "cotracker3-offline", f"weights found at {path}"
    return "lk", (
        "CoTracker3 weights are not on this machine (looked for "
        f"{', '.join(str(c) for c in candidates)}), so this demo uses the weight-free "
        "Lucas-Kanade tracker. Pass --checkpoint scaled_offline.pth (or set "
        f"{CHECKPOINT_DIR_ENV}) to use CoTracker3"
    )


def run_demo(args: argparse.Namespace) -> int:
    import fiftyone as fo

    from ..fiftyone import color_scheme
    from .track import load_engine

    args.engine, why = pick_engine(args)
    print(f"engine: {args.engine} ({why})")
    tracker = load_engine(args)
    root = Path(fo.config.default_dataset_dir) / args.name
    started = time.perf_counter()
    if args.videos:
        dataset = _own_videos(args, tracker, root)
    else:
        dataset = _generated(args, tracker, root)
    color_scheme("tracks", dataset)
    print(f"\ndone in {time.perf_counter() - started:.0f} s. Dataset '{dataset.name}': "
          f"{len(dataset)} videos, keypoints in frames.tracks, overlays in {root / 'overlays'}")
    print(f"open it in the App:  pointtrack app {dataset.name}")
    return 0


def _generated(args, tracker, root: Path):
    import fiftyone as fo
    import numpy as np

    from ..fiftyone import add_tracks, video_metadata
    from ..metrics import average_metrics, evaluate_tracker
    from ..render import render_video
    from ..synthetic import write_synthetic

    if args.clips < 1:
        raise CLIError(f"--clips must be >= 1, got {args.clips}")
    dataset = fo.Dataset(args.name, overwrite=True, persistent=True)
    rows = []
    for seed in range(args.clips):
        path = root / "clips" / f"synthetic_{seed:03d}.mp4"
        video = write_synthetic(path, seed=seed, num_frames=args.frames, size=(320, 240))
        # Metadata through PyAV: FiftyOne's own needs ffprobe, which the App then lacks too.
        sample = fo.Sample(filepath=str(path), metadata=video_metadata(str(path)),
                           tags=["synthetic"])
        dataset.add_sample(sample)
        pred, gt, metrics = evaluate_tracker(tracker, path, video.tracks)
        add_tracks(sample, gt, "ground_truth")
        add_tracks(sample, pred, "tracks")
        overlay = render_video(path, pred, root / "overlays" / path.name)
        sample["overlay_filepath"] = str(overlay)
        for key in ("average_pts_within_thresh", "occlusion_accuracy", "average_jaccard"):
            sample[f"tracks_{key}"] = metrics[key]
        sample.save()
        rows.append(metrics)
        print(f"  {path.name}: {pred.num_tracks} tracks x {pred.num_frames} frames, "
              f"delta_avg {metrics['average_pts_within_thresh']:.3f}, "
              f"OA {metrics['occlusion_accuracy']:.3f}, "
              f"AJ {metrics['average_jaccard']:.3f}")
    mean = average_metrics(rows)
    print(f"\naccuracy of {args.engine} against the ground truth (TAP-Vid, query first, "
          f"{len(rows)} clips):")
    for key, value in mean.items():
        print(f"  {key:24} {value:.3f}" if np.isfinite(value) else f"  {key:24} -")
    return dataset


def _own_videos(args, tracker, root: Path):
    from ..fiftyone import create_dataset, track_dataset, tracks_from_sample
    from ..render import render_video

    if len(args.videos) > 1:
        raise CLIError("give one video file, folder or glob (quoted) for your own videos")
    dataset = create_dataset(args.videos[0], args.name, overwrite=True)
    summary = track_dataset(dataset, tracker, "tracks", grid_size=args.grid_size,
                            max_frames=args.max_frames)
    print(summary)
    for sample in dataset.exists("tracks_result"):
        tracks = tracks_from_sample(sample, "tracks")
        overlay = render_video(sample.filepath, tracks,
                               root / "overlays" / (Path(sample.filepath).stem + ".mp4"),
                               max_side=960)
        sample["overlay_filepath"] = str(overlay)
        sample.save()
    return dataset
