"""Writing tracks to FiftyOne: the seed's per-object way versus `pointtrack.fiftyone`.

One video sample, 150 frames x 2500 tracks, ~80% visible (~300k keypoints), with confidence.

- naive: build ``fo.Keypoint`` objects per frame, ``sample.frames.merge(...)``, ``sample.save()``
  (what the seed did).
- ours: `pointtrack.fiftyone.add_tracks` (plain Mongo documents, one bulk ``set_values`` for the
  frames and one for the exact result), timed on a fresh sample (field declarations included)
  and again as a rewrite; read-back of the exact `Tracks` and of the frame labels.

Uses the configured FiftyOne database (its datasets are temporary and deleted); for a
throw-away database set FIFTYONE_DATABASE_DIR. Usage::

    FIFTYONE_DATABASE_DIR=$(mktemp -d) .venv/bin/python benchmarks/fiftyone_write.py \
        [--frames 150 --tracks 2500] [--skip-naive]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_tracks(T: int, N: int, seed: int = 0):
    import numpy as np

    from pointtrack.tracks import Tracks

    rng = np.random.default_rng(seed)
    W, H = 1280, 720
    # Smooth random-walk trajectories, like real tracks (they compress like real ones too).
    start = rng.random((N, 2)) * [W, H]
    steps = rng.normal(0, 1.5, (T, N, 2)).cumsum(axis=0)
    xy = np.clip(start + steps, 0, [W - 1, H - 1]).astype(np.float32)
    visible = rng.random((T, N)) < 0.8
    return Tracks(
        xy=xy,
        visible=visible,
        queries=np.c_[np.zeros(N), xy[0]],
        frame_numbers=np.arange(T),
        frame_size=(W, H),
        fps=30.0,
        tracker="synthetic",
        visibility=rng.random((T, N)).astype(np.float32),
        confidence=rng.random((T, N)).astype(np.float32),
        options={"grid_size": int(N**0.5)},
    )


def new_sample(video: Path, name: str):
    import fiftyone as fo

    dataset = fo.Dataset(name, overwrite=True)
    sample = fo.Sample(filepath=str(video))
    dataset.add_sample(sample)
    return dataset, sample


def drop(dataset) -> None:
    """Delete a dataset once its sample objects are gone (callers ``del`` theirs first):
    deleting a dataset while a sample object is alive makes FiftyOne copy that sample with all
    its frame labels into memory (minutes for 300k keypoints)."""
    gc.collect()
    dataset.delete()


def naive_write(sample, tracks, label_field: str = "tracks") -> None:
    """The seed's way: label objects per frame, frames.merge, sample.save()."""
    import fiftyone as fo

    W, H = tracks.frame_size
    frames = {}
    for t, fn in enumerate(tracks.frame_numbers):
        kps = []
        for n in range(tracks.num_tracks):
            if not tracks.visible[t, n]:
                continue
            x, y = tracks.xy[t, n]
            kps.append(
                fo.Keypoint(
                    points=[(float(x) / W, float(y) / H)],
                    index=n,
                    confidence=[float(tracks.confidence[t, n])],
                )
            )
        frames[int(fn) + 1] = {label_field: fo.Keypoints(keypoints=kps)}
    sample.frames.merge(frames)
    sample.save()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--tracks", type=int, default=2500)
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours (median reported)")
    parser.add_argument("--skip-naive", action="store_true", help="skip the slow naive write")
    parser.add_argument("--out", default="benchmarks/results/fiftyone_write.json")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pt-bench-"))  # the video file only
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

    import fiftyone as fo
    import numpy as np

    import pointtrack.fiftyone as ptf
    from pointtrack.video import write_video

    try:
        video = write_video(tmp / "v.mp4", [np.zeros((72, 128, 3), np.uint8)] * 2, fps=30)
        tracks = make_tracks(args.frames, args.tracks)
        n_kp = int(tracks.visible.sum())
        rows = []

        def record(method, step, seconds, note=""):
            rows.append({"method": method, "step": step, "seconds": seconds, "note": note})

        # Warm up the database connection (not timed).
        fo.Dataset("pt-bench-warmup", overwrite=True).delete()

        ours_first, ours_again, builds, reads, label_reads = [], [], [], [], []
        for i in range(args.repeat):
            dataset, sample = new_sample(video, f"pt-bench-ours-{i}")
            t0 = time.perf_counter()
            ptf.add_tracks(sample, tracks)
            ours_first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ptf.add_tracks(sample, tracks)
            ours_again.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ptf.tracks_to_frames(tracks, raw=True)
            builds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = ptf.tracks_from_sample(dataset.first())
            reads.append(time.perf_counter() - t0)
            assert back.equals(tracks), "read-back is not exact"
            t0 = time.perf_counter()
            points = dataset.values("frames.tracks.keypoints.points")
            label_reads.append(time.perf_counter() - t0)
            assert sum(len(p) for p in points[0]) == n_kp
            del sample
            drop(dataset)

        med = statistics.median
        record("ours", "write (fresh sample, fields declared)", med(ours_first),
               f"min {min(ours_first):.2f}")
        record("ours", "rewrite (same sample)", med(ours_again), f"min {min(ours_again):.2f}")
        record("ours", "  of which: build frame documents", med(builds))
        record("ours", "read back exact Tracks", med(reads))
        record("ours", "read back all keypoint points", med(label_reads))

        naive = None
        if not args.skip_naive:
            dataset, sample = new_sample(video, "pt-bench-naive")
            t0 = time.perf_counter()
            naive_write(sample, tracks)
            naive = time.perf_counter() - t0
            assert dataset.count("frames.tracks.keypoints") == n_kp
            del sample
            drop(dataset)
            record("naive", "write (Keypoint objects, frames.merge, save)", naive)

        print(f"{args.frames} frames x {args.tracks} tracks, {n_kp} visible keypoints; "
              f"{os.cpu_count()} CPUs, fiftyone {fo.__version__}")
        print(f"{'method':<7} {'step':<46} {'seconds':>8}  note")
        for r in rows:
            print(f"{r['method']:<7} {r['step']:<46} {r['seconds']:8.2f}  {r['note']}")
        if naive is not None:
            print(f"speed-up of the write: {naive / med(ours_first):.0f}x")

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "benchmark": "fiftyone_write",
            "frames": args.frames,
            "tracks": args.tracks,
            "keypoints": n_kp,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "fiftyone": fo.__version__,
            "rows": rows,
            "naive_write_s": naive,
            "ours_write_s": med(ours_first),
            "ours_rewrite_s": med(ours_again),
            "ours_read_exact_s": med(reads),
            "ours_read_labels_s": med(label_reads),
        }, indent=2) + "\n")
        print(f"wrote {out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
