"""``pointtrack info`` and ``pointtrack track``."""

from __future__ import annotations

import argparse
import os
import time
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..tracks import atomic_path
from . import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a video's metadata")
    p.add_argument("video")
    p.set_defaults(func=run_info)

    p = sub.add_parser("track", help="track points through one video")
    p.add_argument("video")
    add_engine_arguments(p)
    add_prompt_arguments(p)
    add_sampling_arguments(p)
    p.add_argument("--out", help="tracks file (.npz); default: VIDEO's name + .tracks.npz")
    p.add_argument("--render", metavar="MP4", help="also write an overlay video")
    p.add_argument("--csv", metavar="CSV", help="also write one row per point per frame")
    p.set_defaults(func=run_track)


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="lk", help="tracker engine (default: lk)")
    p.add_argument("--checkpoint", help="CoTracker3 checkpoint: a path, URL or registry name")
    p.add_argument("--device", help="cpu, cuda or auto (CoTracker3 engines)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                   help="CoTracker3 engines: fp32 (default, parity) or bf16 (fast on GPU, and "
                        "2-4x fp32 on CPUs with AVX-512 BF16 or AMX)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="CoTracker3 on GPU in bf16/fp16: torch.compile the encoder (off by "
                        "default: 12-35 s once per process for ~0.4 ms less per frame, so it "
                        "pays only past tens of thousands of frames in one process)")


def add_prompt_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid-size", type=int, default=0, help="track an N x N grid")
    p.add_argument("--grid-query-frame", type=int, default=0,
                   help="source frame number the grid starts on (default 0)")
    p.add_argument("--queries", metavar="FILE",
                   help="query points: .npy or text/CSV rows of (frame, x, y) in source pixels")
    p.add_argument("--mask", metavar="PNG", help="track grid points inside this mask only")
    p.add_argument("--backward", action="store_true", help="also track backward in time")


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--every", type=int, default=1, metavar="K", help="keep every K-th frame")
    g.add_argument("--fps", type=float, help="keep frames at about this rate")
    p.add_argument("--max-frames", type=int, metavar="M", help="keep at most M frames")
    p.add_argument("--start", type=float, metavar="SEC", help="start time in seconds")
    p.add_argument("--end", type=float, metavar="SEC", help="end time in seconds (exclusive)")


def engine_options(args: argparse.Namespace) -> dict:
    options = {}
    if args.checkpoint:
        options["checkpoint"] = args.checkpoint
    if args.device:
        options["device"] = args.device
    if args.precision:
        options["precision"] = args.precision
    if args.compile is not None:
        options["compile"] = args.compile
    return options


def load_engine(args: argparse.Namespace):
    from ..trackers import list_trackers, load_tracker

    if args.engine not in list_trackers():
        raise CLIError(f"unknown engine {args.engine!r}; available: {', '.join(list_trackers())}")
    try:
        return load_tracker(args.engine, **engine_options(args))
    except TypeError as e:
        raise CLIError(f"engine {args.engine!r} does not take these options ({e})") from e
    except ValueError as e:  # a bad device, precision or iteration count
        raise CLIError(f"engine {args.engine!r}: {e}") from e


def read_queries(path: str) -> np.ndarray:
    """``(N, 3)`` rows of (frame, x, y) from a .npy file or a text/CSV file (header allowed)."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"queries file {path}: {'is a directory' if p.is_dir() else 'no such file'}")
    try:
        if p.suffix == ".npy":
            q = np.load(p, allow_pickle=False)
        else:
            text = p.read_text()
            if not text.strip():
                raise CLIError(f"queries file {path}: is empty")
            delimiter = "," if "," in text else None
            with warnings.catch_warnings():  # numpy warns before it raises: one line only
                warnings.simplefilter("ignore")
                q = np.genfromtxt(p, delimiter=delimiter, dtype=np.float64, comments="#",
                                  invalid_raise=True)
            if q.ndim >= 1 and q.size and np.isnan(q.reshape(-1, q.shape[-1])[0]).all():
                q = q[1:] if q.ndim == 2 else q[:0]  # drop a header row
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise CLIError(f"queries file {path}: cannot read ({e})") from e
    q = np.atleast_2d(np.asarray(q, dtype=np.float64))
    if q.ndim != 2 or q.shape[1] != 3:
        raise CLIError(f"queries file {path}: expected rows of (frame, x, y), got shape {q.shape}")
    return q


def read_mask(path: str) -> np.ndarray:
    import cv2

    if not Path(path).is_file():
        raise CLIError(f"mask {path}: no such file")
    mask = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise CLIError(f"mask {path}: not a readable image")
    return mask


def frame_rows(frame_numbers: np.ndarray, source_frames: np.ndarray, what: str) -> np.ndarray:
    """Map source frame numbers to rows of the sampled clip; an error names any not sampled."""
    lookup = {int(f): i for i, f in enumerate(frame_numbers)}
    sampled = len(frame_numbers) > 1 and np.diff(frame_numbers).max() > 1
    rows = []
    for f in source_frames:
        if f != np.round(f) or int(f) not in lookup:
            raise CLIError(
                f"{what} frame {f:g} is not among the tracked frames "
                f"({int(frame_numbers[0])}..{int(frame_numbers[-1])}"
                f"{', sampled' if sampled else ''})"
            )
        rows.append(lookup[int(f)])
    return np.asarray(rows, dtype=np.float64)


def sampling(args: argparse.Namespace) -> dict:
    """The sampling options as `pointtrack.video`'s functions take them."""
    return dict(every=args.every, fps=args.fps, max_frames=args.max_frames, start=args.start,
                end=args.end)


def use_stream(args, queries, tracker, info) -> bool:
    """Whether to decode the clip a batch at a time into the engine's stream rather than
    whole into memory: where the engine's stream gives what `track` would for this prompt
    (`Tracker.streams_prompt`, the rule `track` of a path follows)."""
    from ..video import sample_indices

    first = sample_indices(info.num_frames, info.fps, **dict(sampling(args), max_frames=1))
    starts = queries[:, 0] if queries is not None else [args.grid_query_frame]
    first_only = len(first) == 1 and all(f == first[0] for f in starts)
    return tracker.streams_prompt(first_only, args.backward)


def check_before_decoding(args, queries, mask, tracker, info, held_frames=None) -> np.ndarray:
    """Fail on a bad video or prompt before spending time decoding: the same checks the
    tracker makes, run on a clip of the right shape that holds no pixels, and the memory
    the clip would need (a file may claim more frames than any machine holds); a streamed
    run holds ``held_frames`` at a time. Returns the source frame numbers sampled."""
    from ..trackers import check_prompt
    from ..trackers.base import blank_clip
    from ..video import count_kept, sample_indices

    # A grid finer than the pixels is refused below, with its own message.
    points = len(queries) if queries is not None else max(min(args.grid_size, *info.size), 1) ** 2
    # Counted before the frame numbers are listed: a file may claim billions of frames.
    tracker.check_memory(count_kept(info.num_frames, info.fps, **sampling(args)), info.size,
                         points, what=str(args.video), held_frames=held_frames)
    rows = sample_indices(info.num_frames, info.fps, **sampling(args))
    if len(rows) == 0:
        raise CLIError(f"{args.video}: no frames in the requested range")
    queries, grid_row = prompt_rows(args, queries, mask, rows)
    check_prompt(blank_clip(len(rows), info.size, frame_numbers=rows, fps=info.fps),
                 grid_size=args.grid_size, queries=queries, segm_mask=mask,
                 grid_query_frame=grid_row)
    return rows


def run_info(args: argparse.Namespace) -> int:
    from ..video import probe

    info = probe(args.video)
    print(f"{info.path}")
    rotated = f" (rotated {info.rotation})" if info.rotation else ""
    print(f"  size      {info.width}x{info.height}{rotated}")
    print(f"  fps       {info.fps:.3f}")
    print(f"  frames    {info.num_frames}")
    print(f"  duration  {info.duration:.2f} s")
    print(f"  codec     {info.codec}")
    return 0


def run_track(args: argparse.Namespace) -> int:
    from ..video import VideoReader

    if args.grid_size < 0:
        raise CLIError(f"grid size must be >= 0, got {args.grid_size}")
    queries = read_queries(args.queries) if args.queries else None
    mask = read_mask(args.mask) if args.mask else None
    tracker = load_engine(args)
    with VideoReader(args.video) as reader:  # one open of the file for its info and frames
        info = reader.info
        batch = None
        if use_stream(args, queries, tracker, info):
            from ..trackers.base import stream_batch, stream_held_frames

            size = tracker.input_size or info.size
            batch, held = stream_batch(size), stream_held_frames(size)
        sampled = check_before_decoding(args, queries, mask, tracker, info,
                                        held_frames=held if batch else None)
        out = Path(args.out) if args.out else Path(Path(args.video).stem + ".tracks.npz")
        output_paths(args, out)

        if batch:
            tracks = track_streamed(args, tracker, reader, queries, mask, info, sampled, batch)
        else:
            tracks = track_decoded(args, tracker, reader, queries, mask)
    tracks.options.setdefault("source", str(args.video))
    write_outputs(args, tracks, out)
    return 0


def prompt_rows(args, queries, mask, frame_numbers: np.ndarray) -> tuple[np.ndarray | None, int]:
    """Queries with their source frame numbers made rows of the sampled clip, and the grid's
    row (0 when there is no grid)."""
    grid_row = 0
    if queries is not None:
        queries = queries.copy()
        queries[:, 0] = frame_rows(frame_numbers, queries[:, 0], "query")
    if args.grid_size or mask is not None:
        grid_row = int(frame_rows(frame_numbers, np.array([args.grid_query_frame]), "grid")[0])
    return queries, grid_row


def track_decoded(args, tracker, reader, queries, mask):
    """Decode the whole clip (from the open `VideoReader`), then track it."""
    from ..video import read_clip

    started = time.perf_counter()
    clip = read_clip(reader, size=tracker.input_size, progress=True, **sampling(args))
    queries, grid_row = prompt_rows(args, queries, mask, clip.frame_numbers)
    decoded = time.perf_counter()
    print(f"decoded {clip.num_frames} frames at {clip.size[0]}x{clip.size[1]} "
          f"in {decoded - started:.1f} s; tracking with {args.engine}...")
    tracks = tracker.track(
        clip, grid_size=args.grid_size, queries=queries, segm_mask=mask,
        grid_query_frame=grid_row, backward_tracking=args.backward,
    )
    report(tracks, time.perf_counter() - decoded)
    return tracks


def track_streamed(args, tracker, reader, queries, mask, info, sampled: np.ndarray,
                   batch: int):
    """Decode ``batch`` frames at a time into the engine's stream: memory holds a batch and
    the engine's window, whatever the clip's length. ``sampled``: the source frame numbers
    the sampling keeps (the prompt's frames become rows of them before any is decoded); the
    tracks come out as `track_decoded`'s."""
    from tqdm.auto import tqdm

    from ..trackers.base import feed_and_finish
    from ..video import sampled_fps

    started = time.perf_counter()
    queries, grid_row = prompt_rows(args, queries, mask, sampled)
    size = tracker.input_size or info.size
    print(f"tracking with {args.engine} while decoding at {size[0]}x{size[1]}, "
          f"{batch} frames at a time...")
    stream = tracker.stream(grid_size=args.grid_size, queries=queries, segm_mask=mask,
                            grid_query_frame=grid_row, source_size=info.size,
                            **({"backward_tracking": True} if args.backward else {}))
    frames = reader.frames(size=tracker.input_size, **sampling(args))
    # disable=None: no bar when stderr is not a terminal (logs, CI, pipes).
    bar = tqdm(frames, desc="track", unit="frame", leave=False, disable=None, total=len(sampled))
    tracks = feed_and_finish(tracker, stream, bar, batch, what=str(args.video),
                             fps=sampled_fps(info.fps, every=args.every, fps=args.fps))
    report(tracks, time.perf_counter() - started, "decoding included")
    return tracks


def report(tracks, seconds: float, note: str = "") -> None:
    print(f"tracked {tracks.num_tracks} points through {tracks.num_frames} frames in "
          f"{seconds:.1f} s ({f'{note}, ' if note else ''}{tracks.visible.mean():.0%} visible)")


def output_paths(args: argparse.Namespace, out: Path) -> list[Path]:
    """The files `track` writes; an error if two are the same file or one is the input."""
    paths = [out] + [Path(p) for p in (args.csv, args.render) if p]
    seen = {_identity(Path(args.video)): "the input video"}
    for path in paths:
        key = _identity(path)
        if key in seen:
            raise CLIError(f"output {path} is the same file as {seen[key]}")
        if path.is_dir():
            raise CLIError(f"output {path} is a directory")
        seen[key] = f"output {path}"
    return paths


def _identity(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def write_outputs(args: argparse.Namespace, tracks, out: Path) -> None:
    """Write the tracks file, CSV and overlay all or nothing: each goes to a temp file beside
    its target, and the temps are renamed into place only once all of them are written, so
    a failure (a full disk, a bad frame while rendering) leaves no output and no temp file."""
    from ..video import VideoError

    def render(tmp: Path) -> None:
        from ..render import render_video

        render_video(args.video, tracks, tmp, progress=True)

    steps = [(out, tracks.save)]
    if args.csv:
        steps.append((Path(args.csv), tracks.to_csv))
    if args.render:
        steps.append((Path(args.render), render))
    with ExitStack() as stack:
        for target, write in steps:
            tmp = stack.enter_context(atomic_path(target))
            try:
                write(tmp)
            except OSError as e:
                raise CLIError(f"cannot write {target}: {e.strerror or e}") from e
            except VideoError as e:  # from the overlay: name the target, not the temp file
                raise CLIError(str(e).replace(str(tmp), str(target))) from e
    for target, _ in steps:
        print(f"wrote {target}")
