"""Accuracy of every tracker engine on the synthetic benchmark (TAP-Vid metrics at 256x256).

Each engine tracks the same N generated clips (`pointtrack.synthetic`, exact ground truth) from
TAP-Vid-style queries; metrics are averaged over clips as TAP-Vid does, the median error is
pooled over every evaluated GT-visible point-frame, time is tracking time only (frames in
memory to tracks in memory).

    python benchmarks/accuracy.py --clips 8 --out benchmarks/results/accuracy.json
    python benchmarks/accuracy.py --checkpoint cotracker3-offline=scaled_offline \
        --checkpoint cotracker3-online=scaled_online          # adds the CoTracker3 engines

CoTracker engines run only with ``--checkpoint`` (no weights are downloaded here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pointtrack.metrics import (  # noqa: E402
    EVAL_SIZE,
    average_metrics,
    eval_frames,
    evaluate_tracker,
)
from pointtrack.synthetic import make_video  # noqa: E402
from pointtrack.trackers import list_trackers, load_tracker  # noqa: E402
from pointtrack.tracks import atomic_path  # noqa: E402

COLUMNS = [
    ("average_pts_within_thresh", "d_avg"),
    ("pts_within_1", "<1"),
    ("pts_within_2", "<2"),
    ("pts_within_4", "<4"),
    ("pts_within_8", "<8"),
    ("pts_within_16", "<16"),
    ("occlusion_accuracy", "OA"),
    ("average_jaccard", "AJ"),
]


def errors(pred, gt, query_mode: str) -> np.ndarray:
    """Distances (256x256 pixels) on evaluated frames where the ground truth is visible."""
    W, H = gt.frame_size
    scale = np.array([EVAL_SIZE / W, EVAL_SIZE / H])
    dist = np.linalg.norm((pred.xy - gt.xy) * scale, axis=-1)  # (T, N)
    evaluated = eval_frames(gt.queries[:, 0].round().astype(int), gt.num_frames, query_mode).T
    return dist[evaluated & gt.visible]


def run_engine(name: str, options: dict, clips: list, query_mode: str) -> dict:
    tracker = load_tracker(name, **options)
    per_clip, dists, seconds = [], [], 0.0
    for video in clips:
        started = time.perf_counter()
        pred, gt, metrics = evaluate_tracker(tracker, video.frames, video.tracks, query_mode)
        seconds += time.perf_counter() - started
        per_clip.append({"seed": video.seed, **metrics})
        dists.append(errors(pred, gt, query_mode))
    dists = np.concatenate(dists)
    return {
        "engine": name,
        "options": options,
        "mean": average_metrics(per_clip),
        "median_error": float(np.median(dists)) if dists.size else float("nan"),
        "seconds": seconds,
        "clips": per_clip,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8, help="number of clips (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first clip")
    parser.add_argument("--frames", type=int, default=24, help="frames per clip (default 24)")
    parser.add_argument("--points", type=int, default=128, help="points per clip (default 128)")
    parser.add_argument("--size", default="256x192", help="clip size WxH (default 256x192)")
    parser.add_argument("--query-mode", choices=("first", "strided"), default="first")
    parser.add_argument("--engines", nargs="+", help="engines to run (default: all available)")
    parser.add_argument(
        "--checkpoint", action="append", default=[], metavar="[ENGINE=]CKPT",
        help="CoTracker3 checkpoint for every cotracker engine, or ENGINE=CKPT for one "
        "(repeatable); cotracker engines run only with one",
    )
    parser.add_argument("--device", help="device for CoTracker3 engines (cpu, cuda)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/accuracy.json"))
    args = parser.parse_args(argv)

    size = tuple(int(v) for v in args.size.lower().split("x"))
    available = list_trackers()
    engines = args.engines or available
    unknown = [e for e in engines if e not in available]
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; available: {', '.join(available)}")

    checkpoints: dict[str | None, str] = {}
    for item in args.checkpoint:
        name, sep, ckpt = item.partition("=")
        if sep and name in available:
            checkpoints[name] = ckpt
        else:
            checkpoints[None] = item

    clips = [
        make_video(seed=s, num_frames=args.frames, size=size, num_points=args.points)
        for s in range(args.seed, args.seed + args.clips)
    ]
    results, skipped = [], []
    for name in engines:
        options = {}
        if name.startswith("cotracker"):
            checkpoint = checkpoints.get(name, checkpoints.get(None))
            if not checkpoint:
                skipped.append(name)
                continue
            options["checkpoint"] = checkpoint
            if args.device:
                options["device"] = args.device
        print(f"running {name} on {len(clips)} clips...", flush=True)
        results.append(run_engine(name, options, clips, args.query_mode))

    header = f"{'engine':<20}" + "".join(f"{h:>7}" for _, h in COLUMNS) + f"{'med_px':>8}{'s':>8}"
    print(f"\n{len(clips)} clips x {args.frames} frames x {args.points} points, "
          f"{size[0]}x{size[1]}, query mode {args.query_mode}, metrics at {EVAL_SIZE}x{EVAL_SIZE}")
    print(header)
    print("-" * len(header))
    for r in results:
        cells = "".join(f"{r['mean'][k]:>7.3f}" for k, _ in COLUMNS)
        print(f"{r['engine']:<20}{cells}{r['median_error']:>8.2f}{r['seconds']:>8.2f}")
    if skipped:
        print(f"skipped (no --checkpoint): {', '.join(skipped)}")

    out = Path(args.out)
    payload = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "setup": {"clips": args.clips, "seed": args.seed, "frames": args.frames,
                  "points": args.points, "size": list(size), "query_mode": args.query_mode},
        "results": results,
        "skipped": skipped,
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
