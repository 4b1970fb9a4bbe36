"""CPU time and peak memory (RSS) of the CoTracker3 engines: 24 frames x 100 points.

Synthetic weights (speed does not depend on their values), a synthetic moving texture at model
resolution (512x384, as the decoder hands it over), 100 random queries on random frames (the
engines add their 36 support points). Each engine and precision runs in a fresh process so
that its peak RSS is its own; time is the `track()` call (frames in memory to tracks in
memory), weights loaded. Reduced-precision rows also report how far their tracks are from the
fp32 ones (median and 95th percentile px, visibility agreement): the accuracy guard.

    python benchmarks/cpu.py --out benchmarks/results/cpu.json
    python benchmarks/cpu.py --reference .ref/co-tracker  # + the official offline predictor

With ``--reference`` (a local copy of the official repo, never committed) the official offline
predictor runs first, in fp32 on the same frames and queries, and each offline row reports
its speed-up over it (``vs_official``); the fp32 row also reports its distance from the
official tracks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from gpu import agreement  # beside this script: the same drift figures as the GPU rows

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ENGINES = ["cotracker3-offline", "cotracker3-online"]


def rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class OfficialOffline:
    """The official offline predictor from a local checkout (``--reference``), weights loaded
    strictly, called as its demo does: a float video tensor and (t, x, y) queries. It adds
    the same 6x6 support grid to queries as pointtrack does."""

    def __init__(self, weights: dict, reference: str) -> None:
        sys.path.insert(0, str(reference))
        from cotracker.predictor import CoTrackerPredictor

        self.predictor = CoTrackerPredictor(checkpoint=None, offline=True, window_len=60)
        self.predictor.model.load_state_dict(weights, strict=True)

    def track(self, video: np.ndarray, queries: np.ndarray) -> SimpleNamespace:
        import torch

        frames = torch.from_numpy(video).permute(0, 3, 1, 2)[None].float()
        with torch.inference_mode():
            xy, visible = self.predictor(frames, queries=torch.from_numpy(queries)[None].float())
        return SimpleNamespace(xy=xy[0].numpy(), visible=visible[0].numpy())


def child(engine: str, frames: int, points: int, repeats: int, precision: str,
          save: str | None, reference: str | None = None) -> dict:
    """Runs in its own process: load, warm up on two frames, then time `track()`."""
    import torch

    from pointtrack.trackers import load_tracker

    weights = synthetic_weights(engine)
    video, queries = workload(frames, points)
    if engine == "official-offline":
        tracker = OfficialOffline(weights, reference)
    else:
        tracker = load_tracker(engine, checkpoint=weights, device="cpu", precision=precision)
    del weights
    tracker.track(video[:2], queries=queries[:1] * [0, 1, 1])  # loads the weights, warms up
    before = current_rss_mib()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tracks = tracker.track(video, queries=queries)
        times.append(time.perf_counter() - start)
    assert tracks.xy.shape == (frames, points, 2)
    if save:
        np.savez(save, xy=tracks.xy, visible=tracks.visible)
    return {
        "engine": engine,
        "precision": precision,
        "frames": frames,
        "points": points,
        "seconds": min(times),
        "runs": times,
        "fps": frames / min(times),
        "rss_before_mib": before,
        "peak_rss_mib": rss_mib(),
        "threads": torch.get_num_threads(),
    }


def synthetic_weights(engine: str) -> dict:
    """The synthetic state dict of ``engine``'s model (offline for "official-offline")."""
    from pointtrack.models.cotracker3 import CoTracker3Offline, CoTracker3Online
    from pointtrack.models.weights import model_shapes, synthetic_state_dict

    model = CoTracker3Offline() if engine.endswith("offline") else CoTracker3Online()
    return synthetic_state_dict(model_shapes(model))


def workload(frames: int, points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The clip ``(T, 384, 512, 3)`` and the queries ``(N, 3)`` (t, x, y) of one case."""
    rng = np.random.default_rng(seed)
    video = moving_texture(frames, rng)
    queries = np.column_stack(
        [rng.integers(0, frames, points), rng.uniform(0, 511, points), rng.uniform(0, 383, points)]
    )
    return video, queries


def moving_texture(frames: int, rng) -> np.ndarray:
    """``(T, 384, 512, 3)`` uint8: a smooth random texture under a slow translation."""
    import cv2

    base = rng.integers(0, 255, (384 // 8 + 8, 512 // 8 + 8 + frames, 3), dtype=np.uint8)
    base = cv2.resize(base, (base.shape[1] * 8, base.shape[0] * 8), interpolation=cv2.INTER_CUBIC)
    return np.stack([base[:384, 2 * t : 2 * t + 512] for t in range(frames)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cpu.json")
    p.add_argument("--reference", type=Path,
                   help="local copy of the official co-tracker repo: adds its offline predictor "
                        "(fp32) as a row, and each offline row's speed-up over it")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.frames, args.points, args.repeats,
                               args.precision, args.save, args.reference)))
        return 0

    rows = []
    runs = [(e, p) for e in args.engines.split(",") for p in args.precision.split(",")]
    if args.reference:
        runs.insert(0, ("official-offline", "fp32"))
    with tempfile.TemporaryDirectory() as tmp:
        for engine, precision in runs:
            save = f"{tmp}/{engine}-{precision}.npz"
            cmd = [sys.executable, __file__, "--child", engine, "--frames", str(args.frames),
                   "--points", str(args.points), "--repeats", str(args.repeats),
                   "--precision", precision, "--save", save]
            if args.reference:
                cmd += ["--reference", str(args.reference)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            row = json.loads(done.stdout.strip().splitlines()[-1])
            reference = Path(f"{tmp}/{engine}-fp32.npz")
            if precision != "fp32" and reference.exists():
                # Pixels of the 512x384 frames the engines were given.
                row.update(agreement(SimpleNamespace(**np.load(save)),
                                     SimpleNamespace(**np.load(reference))))
            official = next((r for r in rows if r["engine"] == "official-offline"), None)
            if official and engine == "cotracker3-offline":
                row["vs_official"] = official["seconds"] / row["seconds"]
                if precision == "fp32":  # the parity path: how far from the official tracks
                    drift = agreement(SimpleNamespace(**np.load(save)), SimpleNamespace(
                        **np.load(f"{tmp}/official-offline-fp32.npz")))
                    row.update({k.replace("fp32", "official"): v for k, v in drift.items()})
            rows.append(row)
            print(_row(row), flush=True)

    import torch

    meta = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from pointtrack.tracks import atomic_path

    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\n{meta['cores']} cores, torch {meta['torch']}, {meta['date']}, "
          f"load average {meta['load_average'][0]:.1f}")
    print(f"{meta['cpu']}")
    print(f"{'engine':20} {'prec':5} {'frames':>6} {'points':>6} {'s':>8} {'fps':>6} "
          f"{'peak RSS MiB':>12} {'vs offic':>8} {'vs fp32 px (med/p95)':>20} {'vis agree':>9}")
    for row in rows:
        print(_row(row))
    print(f"wrote {args.out}")
    return 0


def cpu_model() -> str:
    """The CPU's model name and the vector extensions that matter for bf16."""
    name, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    extras = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(extras) or 'no AVX2'})"


def _row(row: dict) -> str:
    drift = ""
    if "vs_fp32_median_px" in row:
        drift = (f" {row['vs_fp32_median_px']:9.3f}/{row['vs_fp32_p95_px']:<10.3f}"
                 f" {row['vs_fp32_visible_agree']:9.3f}")
    speedup = f"{row['vs_official']:7.2f}x" if "vs_official" in row else f"{'':8}"
    return (f"{row['engine']:20} {row.get('precision', 'fp32'):5} {row['frames']:6d} "
            f"{row['points']:6d} {row['seconds']:8.2f} {row['fps']:6.2f} "
            f"{row['peak_rss_mib']:12.0f} {speedup}" + drift)


if __name__ == "__main__":
    sys.exit(main())
