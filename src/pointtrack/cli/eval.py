"""``pointtrack eval``: score a tracker against ground truth with the TAP-Vid metrics.

Sources (``pointtrack eval SOURCE ...``):

- ``synthetic``: N generated clips with exact ground truth (`pointtrack.synthetic`).
- ``tapvid FILE.pkl``: the TAP-Vid DAVIS / Kinetics pickles.
- More sources plug in from their own modules (see `_EXTRA_SOURCES`): a module
  ``pointtrack.cli.<name>`` with ``register_source(subparsers)`` adds its sub-parser, and
  reports through `report` with one `Row` per video, like the sources here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import CLIError
from .track import add_engine_arguments, engine_options, load_engine

# Modules adding more sources, e.g. the FiftyOne-dataset mode ("eval dataset NAME --pred FIELD
# --gt FIELD"): each has register_source(subparsers) and calls `report` with its rows.
_EXTRA_SOURCES = ["eval_dataset"]

# Table columns: (metric key, header, format).
COLUMNS = [
    ("average_jaccard", "AJ", "{:.3f}"),
    ("average_pts_within_thresh", "d_avg", "{:.3f}"),
    ("pts_within_1", "<1", "{:.3f}"),
    ("pts_within_2", "<2", "{:.3f}"),
    ("pts_within_4", "<4", "{:.3f}"),
    ("pts_within_8", "<8", "{:.3f}"),
    ("pts_within_16", "<16", "{:.3f}"),
    ("occlusion_accuracy", "OA", "{:.3f}"),
    ("median_error", "med_px", "{:.2f}"),
]


@dataclass
class Row:
    """One scored video: its name, TAP-Vid metrics, tracking time and size."""

    name: str
    metrics: dict[str, float]
    seconds: float = 0.0
    num_points: int = 0
    num_frames: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score a tracker against ground truth (TAP-Vid metrics)",
        description="Score a tracker with the TAP-Vid metrics (average Jaccard, position "
        "accuracy < 1/2/4/8/16 px and their mean d_avg, occlusion accuracy) at 256x256.",
    )
    sources = p.add_subparsers(dest="source", metavar="SOURCE")

    s = sources.add_parser("synthetic", help="generated clips with exact ground truth")
    add_engine_arguments(s)
    s.add_argument("--clips", type=int, default=3, help="number of clips (default 3)")
    s.add_argument("--seed", type=int, default=0, help="seed of the first clip (default 0)")
    s.add_argument("--frames", type=int, default=24, help="frames per clip (default 24)")
    s.add_argument("--points", type=int, default=128, help="points per clip (default 128)")
    s.add_argument("--size", default="256x192", help="clip size WxH (default 256x192)")
    s.add_argument("--objects", type=int, default=3, help="moving objects per clip (default 3)")
    add_common_arguments(s)
    s.set_defaults(func=run_synthetic)

    t = sources.add_parser(
        "tapvid", help="TAP-Vid DAVIS/Kinetics pickles (only load pickles you trust)"
    )
    t.add_argument("file", help="tapvid_davis.pkl, or a tapvid_kinetics part (.pkl)")
    add_engine_arguments(t)
    t.add_argument("--max-videos", type=int, metavar="K", help="score the first K videos only")
    t.add_argument("--resize", metavar="WxH",
                   help="resize frames before tracking (e.g. 256x256, TAP-Vid's protocol)")
    add_common_arguments(t)
    t.set_defaults(func=run_tapvid)

    for name in _EXTRA_SOURCES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__package__}.{name}":
                continue  # not built yet
            raise
        module.register_source(sources)

    def no_source(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=no_source)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--query-mode", choices=("first", "strided"), default="first",
                   help="TAP-Vid query mode (default first; strided also tracks backward)")
    p.add_argument("--stride", type=int, default=5, help="query stride of strided mode (5)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")


# -- reporting --------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CLIError(f"size must be WxH (e.g. 256x192), got {text!r}") from None
    if w < 16 or h < 16:
        raise CLIError(f"size must be at least 16x16, got {text}")
    return w, h


def format_table(rows: Sequence[Row], mean: dict[str, float] | None = None) -> str:
    """A fixed-width text table: one line per video, then the mean over videos."""
    name_w = max([len("video"), *(len(r.name) for r in rows), len("mean")])
    header = f"{'video':<{name_w}} " + " ".join(f"{h:>6}" for _, h, _ in COLUMNS)
    header += f" {'points':>6} {'s':>6}"
    lines = [header, "-" * len(header)]

    def line(name, metrics, points, seconds):
        cells = []
        for key, _, fmt in COLUMNS:
            v = metrics.get(key, math.nan)
            cells.append(f"{'nan' if not math.isfinite(v) else fmt.format(v):>6}")
        return f"{name:<{name_w}} " + " ".join(cells) + f" {points:>6} {seconds:>6.2f}"

    for r in rows:
        lines.append(line(r.name, r.metrics, r.num_points, r.seconds))
    if mean is not None and len(rows) > 1:
        lines.append("-" * len(header))
        lines.append(line("mean", mean, sum(r.num_points for r in rows),
                          sum(r.seconds for r in rows)))
    return "\n".join(lines)


def report(rows: Sequence[Row], args: argparse.Namespace, info: dict[str, Any]) -> dict:
    """Print the table and the mean; write JSON to ``args.json`` if given. Returns the JSON."""
    from ..metrics import average_metrics
    from ..tracks import atomic_path

    if not rows:
        raise CLIError("nothing was scored")
    mean = average_metrics(r.metrics for r in rows)
    print(format_table(rows, mean))
    print(f"mean over {len(rows)} video(s), query mode {args.query_mode}: "
          f"AJ {mean['average_jaccard']:.3f}, d_avg {mean['average_pts_within_thresh']:.3f}, "
          f"OA {mean['occlusion_accuracy']:.3f}")
    result = {
        **info,
        "query_mode": args.query_mode,
        "mean": mean,
        "videos": [
            {"name": r.name, "metrics": r.metrics, "seconds": r.seconds,
             "num_points": r.num_points, "num_frames": r.num_frames, **r.extra}
            for r in rows
        ],
    }
    if args.json:
        path = Path(args.json)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(_finite(result), indent=2) + "\n")
        print(f"wrote {path}")
    return result


def _finite(value):
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def score(tracker, name: str, frames, gt, args: argparse.Namespace) -> Row:
    """Track one video from ground-truth queries and score it."""
    from ..metrics import evaluate_tracker

    started = time.perf_counter()
    try:
        pred, queried, metrics = evaluate_tracker(tracker, frames, gt, args.query_mode,
                                                  args.stride)
    except ValueError as e:
        raise CLIError(f"{name}: {e}") from e
    return Row(name, metrics, time.perf_counter() - started, queried.num_tracks, gt.num_frames)


# -- synthetic ----------------------------------------------------------------------------------


def run_synthetic(args: argparse.Namespace) -> int:
    from ..synthetic import make_video

    if args.clips < 1:
        raise CLIError(f"--clips must be >= 1, got {args.clips}")
    if args.frames < 2:
        raise CLIError(f"--frames must be >= 2, got {args.frames}")
    if args.points < 1:
        raise CLIError(f"--points must be >= 1, got {args.points}")
    if args.objects < 0:
        raise CLIError(f"--objects must be >= 0, got {args.objects}")
    if args.stride < 1:
        raise CLIError(f"--stride must be >= 1, got {args.stride}")
    size = parse_size(args.size)
    tracker = load_engine(args)
    rows = []
    for seed in range(args.seed, args.seed + args.clips):
        video = make_video(seed=seed, num_frames=args.frames, size=size,
                           num_objects=args.objects, num_points=args.points)
        rows.append(score(tracker, f"seed{seed}", video.frames, video.tracks, args))
    info = {
        "source": "synthetic",
        "engine": args.engine,
        "engine_options": engine_options(args),
        "clips": args.clips,
        "seed": args.seed,
        "frames": args.frames,
        "points": args.points,
        "size": list(size),
        "objects": args.objects,
    }
    report(rows, args, info)
    return 0


# -- TAP-Vid pickles ----------------------------------------------------------------------------


def load_tapvid(path: str | Path) -> list[tuple[str, dict]]:
    """(name, entry) pairs from a TAP-Vid pickle: DAVIS is a dict name -> entry, Kinetics a
    list of entries. Each entry has ``video``, ``points (N, T, 2)`` in [0, 1] and
    ``occluded (N, T)``."""
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except Exception as e:  # unpickling raises many types on a file that is not a pickle
        raise CLIError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
    if isinstance(data, dict) and {"video", "points", "occluded"} <= set(data):
        items = [(path.stem, data)]  # a single video
    elif isinstance(data, dict):
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, list | tuple):
        items = [(f"{i:04d}", v) for i, v in enumerate(data)]
    else:
        raise CLIError(f"{path}: expected a dict or list of TAP-Vid videos, got "
                       f"{type(data).__name__}")
    if not items:
        raise CLIError(f"{path}: holds no videos")
    for name, entry in items:
        missing = {"video", "points", "occluded"} - set(entry if isinstance(entry, dict) else {})
        if missing:
            raise CLIError(f"{path}: video {name!r} lacks {', '.join(sorted(missing))}")
    return items


def tapvid_video(name: str, entry: dict) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 RGB from an entry (an array or a list of JPEG/PNG bytes)."""
    import cv2

    video = entry["video"]
    if isinstance(video, list | tuple) and video and isinstance(video[0], bytes | bytearray):
        frames = []
        for i, data in enumerate(video):
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise CLIError(f"video {name!r}: frame {i} is not a decodable image")
            frames.append(image[..., ::-1])
        video = np.stack(frames)
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] == 0:
        raise CLIError(f"video {name!r}: frames must be (T, H, W, 3), got {video.shape}")
    if video.dtype != np.uint8:
        video = np.clip(video, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(video)


def tapvid_ground_truth(name: str, entry: dict, frames: np.ndarray):
    """Ground-truth `Tracks` in the frames' pixels from normalised ``points`` and ``occluded``."""
    from ..tracks import Tracks

    T, H, W = frames.shape[:3]
    points = np.asarray(entry["points"], dtype=np.float64)
    occluded = np.asarray(entry["occluded"], dtype=bool)
    if points.ndim != 3 or points.shape[1:] != (T, 2):
        raise CLIError(f"video {name!r}: points must be (N, {T}, 2), got {points.shape}")
    if occluded.shape != points.shape[:2]:
        raise CLIError(f"video {name!r}: occluded must be {points.shape[:2]}, got "
                       f"{occluded.shape}")
    xy = points.transpose(1, 0, 2) * np.array([W, H])  # TAP-Vid: pixels = normalised * size
    return Tracks(xy=xy, visible=~occluded.T, queries=np.zeros((len(points), 3)),
                  frame_numbers=np.arange(T), frame_size=(W, H), tracker="ground_truth")


def iter_tapvid(
    items: Sequence[tuple[str, dict]], resize: tuple[int, int] | None = None
) -> Iterator[tuple[str, np.ndarray, Any]]:
    """(name, frames, ground-truth Tracks) per video, frames resized to ``resize`` (W, H)."""
    import cv2

    for name, entry in items:
        frames = tapvid_video(name, entry)
        gt = tapvid_ground_truth(name, entry, frames)
        if resize is not None and resize != gt.frame_size:
            W, H = gt.frame_size
            frames = np.stack([cv2.resize(f, resize, interpolation=cv2.INTER_AREA)
                               for f in frames])
            gt.xy = gt.xy * np.array([resize[0] / W, resize[1] / H], dtype=np.float32)
            gt.frame_size = resize
        yield name, frames, gt


def run_tapvid(args: argparse.Namespace) -> int:
    if args.max_videos is not None and args.max_videos < 1:
        raise CLIError(f"--max-videos must be >= 1, got {args.max_videos}")
    if args.stride < 1:
        raise CLIError(f"--stride must be >= 1, got {args.stride}")
    resize = parse_size(args.resize) if args.resize else None
    items = load_tapvid(args.file)[: args.max_videos]  # a bad file fails before the model loads
    tracker = load_engine(args)
    rows = []
    for name, frames, gt in iter_tapvid(items, resize):
        if not gt.visible.any():
            print(f"{name}: no visible ground-truth point, skipped")
            continue
        rows.append(score(tracker, name, frames, gt, args))
    info = {
        "source": "tapvid",
        "file": str(args.file),
        "engine": args.engine,
        "engine_options": engine_options(args),
        "resize": list(resize) if resize else None,
    }
    report(rows, args, info)
    return 0


__all__ = ["Row", "format_table", "iter_tapvid", "load_tapvid", "register", "report", "score"]
