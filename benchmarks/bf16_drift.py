"""How far bf16 tracks are from fp32 on CPU, over several synthetic clips (the accuracy guard).

`benchmarks/cpu.py` reports the drift of one clip (seed 0). A refinement of six iterations
amplifies rounding chaotically, so one clip's median moves by +-5% with any change of
rounding; this script averages over several seeds, so that two versions of the model can be
compared on more than one draw. Same setup as `cpu.py`: synthetic weights, 24 frames of a
moving texture at 512x384, 100 random queries per clip (+36 support points), one process.

    python benchmarks/bf16_drift.py --seeds 0,1,2,3,4 --out benchmarks/results/bf16_drift_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from cpu import ENGINES, cpu_model, synthetic_weights, workload
from gpu import agreement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bf16_drift_cpu.json")
    args = p.parse_args(argv)

    import torch

    from pointtrack.trackers import load_tracker
    from pointtrack.tracks import atomic_path

    rows, summary = [], {}
    for engine in args.engines.split(","):
        weights = synthetic_weights(engine)
        fp32 = load_tracker(engine, checkpoint=weights, device="cpu")
        bf16 = load_tracker(engine, checkpoint=weights, device="cpu", precision="bf16")
        for seed in [int(s) for s in args.seeds.split(",")]:
            video, queries = workload(args.frames, args.points, seed)
            row = {"engine": engine, "seed": seed,
                   **agreement(bf16.track(video, queries=queries),
                               fp32.track(video, queries=queries))}
            rows.append(row)
            print(f"{engine:20} seed {seed}  median {row['vs_fp32_median_px']:.3f} px  "
                  f"p95 {row['vs_fp32_p95_px']:.3f} px  "
                  f"visibility agree {row['vs_fp32_visible_agree']:.4f}", flush=True)
        mine = [r for r in rows if r["engine"] == engine]
        keys = ("vs_fp32_median_px", "vs_fp32_p95_px", "vs_fp32_visible_agree")
        summary[engine] = {k: float(np.mean([r[k] for r in mine])) for k in keys}
    meta = {"cpu": cpu_model(), "torch": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps({"meta": meta, "mean": summary, "rows": rows}, indent=1))
    print(f"\nmean over seeds {args.seeds} ({args.frames} frames x {args.points} points):")
    for engine, s in summary.items():
        print(f"{engine:20} median {s['vs_fp32_median_px']:.3f} px  "
              f"p95 {s['vs_fp32_p95_px']:.3f} px  "
              f"visibility agree {s['vs_fp32_visible_agree']:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
