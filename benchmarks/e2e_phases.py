"""Where the time of a file-to-tracks call goes: probe, memory check, decode, track.

    python benchmarks/e2e_phases.py VIDEO [--engine cotracker3-offline] [--grid 50]

Synthetic weights; prints one line per phase (median of ``--repeats`` after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video", nargs="?", help="a video file (default: make a 1080p 150-frame one)")
    p.add_argument("--engine", default="cotracker3-offline")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--grid", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from pointtrack.models.cotracker3 import CoTracker3Offline, CoTracker3Online
    from pointtrack.models.weights import model_shapes, synthetic_state_dict
    from pointtrack.trackers import load_tracker
    from pointtrack.video import probe, read_clip

    if not args.video:
        import tempfile

        sys.path.insert(0, str(ROOT / "benchmarks"))
        from gpu import encode_video, moving_texture

        args.video = encode_video(moving_texture(150, (1920, 1080)),
                                  Path(tempfile.mkdtemp()) / "clip.mp4")
    model = CoTracker3Online() if args.engine.endswith("online") else CoTracker3Offline()
    tracker = load_tracker(args.engine, checkpoint=synthetic_state_dict(model_shapes(model)),
                           device=args.device, precision=args.precision)
    phases = {
        "probe": lambda: probe(args.video),
        "memory check": lambda: tracker._check_memory_of(args.video, args.grid, None, None),
        "decode to model size": lambda: read_clip(args.video, size=tracker.input_size),
    }
    clip = read_clip(args.video, size=tracker.input_size)
    phases["track decoded clip"] = lambda: tracker.track(clip, grid_size=args.grid)
    phases["track(path)"] = lambda: tracker.track(str(args.video), grid_size=args.grid)
    rows = {}
    for name, fn in phases.items():
        fn()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            if args.device == "cuda":
                import torch

                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        rows[name] = float(np.median(times))
        print(f"{name:22s} {rows[name]:8.3f} s", flush=True)
    print(json.dumps({"video": str(args.video), "engine": args.engine, "seconds": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
