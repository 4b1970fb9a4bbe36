"""``pointtrack preprocess IN... --out DIR``: re-encode videos to save memory and time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "preprocess",
        help="re-encode videos with fewer frames/pixels (originals untouched)",
        description=(
            "Re-encode videos to H.264 mp4 in DIR. Default (the seed's rule): videos longer than "
            "10 s keep every 3rd frame and are written at 7 fps, shorter ones are sampled to "
            "10 fps. --every K alone keeps every K-th frame at the same speed; --fps F alone "
            "samples to F fps; both keep every K-th frame written at F fps."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="video files or directories of videos")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--fps", type=float, help="output frame rate (samples to it without --every)")
    p.add_argument("--every", type=int, help="keep every K-th source frame")
    p.add_argument("--max-side", type=int, metavar="N",
                   help="resize so the longer side is at most N pixels")
    p.add_argument("--crf", type=int, default=20, help="H.264 quality, lower is better (20)")
    p.add_argument("--dataset", metavar="NAME",
                   help="add the outputs to this FiftyOne dataset (created if missing)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..preprocess import add_to_dataset, find_videos, preprocess_video
    from ..video import VideoError

    if args.fps is not None and not args.fps > 0:
        raise CLIError(f"--fps must be > 0, got {args.fps}")
    if args.every is not None and args.every < 1:
        raise CLIError(f"--every must be >= 1, got {args.every}")
    if args.max_side is not None and args.max_side < 2:
        raise CLIError(f"--max-side must be >= 2, got {args.max_side}")
    if not 0 <= args.crf <= 51:
        raise CLIError(f"--crf must be in 0..51, got {args.crf}")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {out_dir}: exists and is not a directory")

    pairs, failures = find_videos(args.inputs, exclude=out_dir)
    results, taken = [], {}
    bar = tqdm(pairs, desc="preprocess", unit="video", disable=None if len(pairs) > 1 else True)
    for source, rel in bar:
        output = out_dir / rel
        if rel in taken:  # two inputs with the same name would overwrite each other
            failures.append(f"{source}: same output name {output} as {taken[rel]}")
            continue
        taken[rel] = source
        try:
            r = preprocess_video(source, output, fps=args.fps, every=args.every,
                                 max_side=args.max_side, crf=args.crf, progress=True)
        except VideoError as e:
            failures.append(str(e))
            continue
        except Exception as e:  # keep going with the other videos; reported at the end
            failures.append(f"{source}: {type(e).__name__}: {e}")
            continue
        results.append(r)
        (w, h), fps = r.size, r.fps
        tqdm.write(f"{source} -> {output}: {r.num_frames} frames, {w}x{h} at {fps:g} fps")

    if args.dataset and results:
        dataset = add_to_dataset(args.dataset, results)
        print(f"dataset {dataset.name!r}: {len(dataset)} videos")
    for msg in failures:
        print(f"pointtrack: error: {msg}", file=sys.stderr)
    return 1 if failures else 0
