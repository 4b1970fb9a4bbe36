"""GPU speed and memory of pointtrack's CoTracker3 against the official predictor.

Synthetic weights (speed does not depend on their values), a synthetic moving texture, the same
queries for both. Time runs from frames in host memory to tracks in host memory; peak memory is
`torch.cuda.max_memory_allocated` from the start of the call, the video tensor included.
pointtrack gets uint8 frames at model resolution (what its decoder produces); the official
predictor gets full-resolution float frames, as its demo feeds them.

The model rows compile the encoder (``compile=True``, opt-in in the library): they time a
warm process, where the compilation is paid; ``--no-compile`` times the library's default.
End-to-end rows (``-e2e``) run the library's defaults (no compilation) from an H.264 file
of the same frames to tracks in host memory, decoding included: pointtrack decodes straight
to model resolution; the official side reads full-resolution frames as its demos do
(`demo.py` the whole video, `online_demo.py` frame by frame, a window every ``step`` frames).

    python benchmarks/gpu.py --reference .ref/co-tracker --out benchmarks/results/gpu.json

`--reference DIR` is a local copy of the official `cotracker` package (never committed); without
it only pointtrack is timed.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CASES = {
    "offline-480p-82f-grid50": dict(mode="offline", size=(854, 480), frames=82, grid=50),
    "offline-480p-82f-grid100": dict(mode="offline", size=(854, 480), frames=82, grid=100),
    "offline-1080p-150f-grid50": dict(mode="offline", size=(1920, 1080), frames=150, grid=50),
    "online-1080p-150f-grid50": dict(mode="online", size=(1920, 1080), frames=150, grid=50),
    "online-1080p-150f-grid200": dict(mode="online", size=(1920, 1080), frames=150, grid=200),
}
MODEL_SIZE = (512, 384)  # (W, H)


def moving_texture(num_frames: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 on the CPU: a smooth random texture under a slow translation."""
    W, H = size
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, H // 8 + 8, W // 8 + 8 + num_frames, generator=g)
    base = F.interpolate(base, scale_factor=8, mode="bicubic", align_corners=False)
    frames = torch.stack([base[0, :, :H, t * 2 : t * 2 + W] for t in range(num_frames)])
    return (frames.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def resize_uint8(frames: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Frames at ``size`` (W, H) as uint8 numpy, as the decoder would hand them over."""
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size[1], size[0]), mode="area")
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def measure(fn, repeats: int) -> dict:
    """Median seconds over ``repeats`` runs after a warm-up, and the peak memory of one run:
    ``peak_gib`` the tensors it allocated, ``reserved_gib`` all the device memory PyTorch held
    during it (weights, and what a tracker keeps between calls, such as the online model's
    captured CUDA graph and its pool, included; the allocator's cache emptied first),
    ``graph_pool_gib`` the captured graphs' pools alone (`graph_pools`: ``peak_gib`` plus this
    is what a call needs beyond the weights and what it was given); ``sm_clock_mhz`` the GPU's
    SM clock read after each run (`sm_clock_mhz`), to tell a slow GPU from a slow host;
    ``output`` is the warm-up run's result."""
    output = fn()  # warm-up: kernels, allocator, autotuning
    torch.cuda.synchronize()
    times, clocks = [], []
    peak = reserved = 0
    for _ in range(repeats):
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        clocks.append(sm_clock_mhz())
        peak = max(peak, torch.cuda.max_memory_allocated() - base)
        reserved = max(reserved, torch.cuda.max_memory_reserved())
    return {"seconds": float(np.median(times)), "peak_gib": peak / 2**30,
            "reserved_gib": reserved / 2**30, "graph_pool_gib": graph_pools() / 2**30,
            "runs": times, "sm_clock_mhz": clocks, "output": output}


def sm_clock_mhz() -> int | None:
    """The current GPU's SM clock (nvidia-smi; None where it cannot be read). Sessions 21-23
    saw a process's calls shift by ~25 ms partway through a run, with the GPU time of the
    refinement unchanged: the clock at each run says whether the GPU was the one slowing."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=clocks.sm", "--format=csv,noheader,nounits",
             "-i", str(torch.cuda.current_device())],
            capture_output=True, text=True, timeout=10, check=True).stdout
        return int(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def graph_pools() -> int:
    """Bytes of device memory in CUDA-graph pools (every allocator segment outside the default
    pool): what a tracker keeps between calls for its captured graphs (the online model's
    refinement), which ``peak_gib`` leaves out (a replay allocates nothing) and
    ``reserved_gib`` counts together with the caching allocator's slack."""
    return sum(segment["total_size"] for segment in torch.cuda.memory_snapshot()
               if tuple(segment.get("segment_pool_id", (0, 0))) != (0, 0))


def agreement(tracks, reference) -> dict:
    """How far reduced-precision tracks are from the fp32 ones (source pixels)."""
    dist = np.linalg.norm(tracks.xy - reference.xy, axis=-1)
    return {
        "vs_fp32_median_px": float(np.median(dist)),
        "vs_fp32_p95_px": float(np.percentile(dist, 95)),
        "vs_fp32_visible_agree": float((tracks.visible == reference.visible).mean()),
    }


def ours(case: dict, frames_model: np.ndarray, state_dict: dict, precision: str,
         compile: bool = True):
    from pointtrack.trackers import load_tracker

    name = f"cotracker3-{case['mode']}"
    options = {"compile": compile}
    if precision != "fp32":
        options["precision"] = precision
    tracker = load_tracker(name, checkpoint=state_dict, device="cuda", **options)
    W, H = case["size"]

    def run(frames: np.ndarray = frames_model):
        # Frames at model resolution; queries in source pixels of the (W, H) video.
        from pointtrack.video import Clip

        clip = Clip(frames, np.arange(len(frames)), 30.0, (W, H))
        return tracker.track(clip, grid_size=case["grid"])

    return run


def drift(case: dict, runs: dict, seeds: list[int]) -> dict:
    """Each reduced-precision tracker's distance from the fp32 one (`agreement`) on the
    moving texture of every seed, and the means over them. One clip's figures move with any
    change of rounding (cuDNN picks its convolution algorithms per process: +-5% on a 480p
    clip), so a guard compares means over clips. ``runs``: precision -> `ours`'s run."""
    per_seed: dict = {precision: [] for precision in runs if precision != "fp32"}
    for seed in seeds:
        frames = resize_uint8(moving_texture(case["frames"], case["size"], seed), MODEL_SIZE)
        reference = runs["fp32"](frames)
        for precision in per_seed:
            per_seed[precision].append({"seed": seed,
                                        **agreement(runs[precision](frames), reference)})
    result = {}
    for precision, rows in per_seed.items():
        means = {f"{k}_mean": float(np.mean([r[k] for r in rows]))
                 for k in ("vs_fp32_median_px", "vs_fp32_p95_px", "vs_fp32_visible_agree")}
        result[precision] = {**means, "drift_seeds": rows}
    return result


def official_predictor(case: dict, state_dict: dict, reference: Path, device: str = "cuda"):
    """The official offline or online predictor from the local checkout, weights loaded
    strictly, on ``device``."""
    sys.path.insert(0, str(reference))
    from cotracker.predictor import CoTrackerOnlinePredictor, CoTrackerPredictor

    if case["mode"] == "offline":
        predictor = CoTrackerPredictor(checkpoint=None, offline=True, window_len=60)
    else:
        predictor = CoTrackerOnlinePredictor(checkpoint=None, window_len=16)
    predictor.model.load_state_dict(state_dict, strict=True)
    return predictor.to(device)


def official(case: dict, frames_full: torch.Tensor, state_dict: dict, reference: Path):
    predictor = official_predictor(case, state_dict, reference)

    def run():
        video = frames_full.permute(0, 3, 1, 2)[None].float().cuda()  # as the official demo
        if case["mode"] == "offline":
            tracks, visible = predictor(video, grid_size=case["grid"])
        else:
            predictor(video_chunk=video, is_first_step=True, grid_size=case["grid"])
            step = predictor.step
            for i in range(0, video.shape[1] - step, step):
                tracks, visible = predictor(video_chunk=video[:, i : i + step * 2])
        return tracks.cpu(), visible.cpu()

    return run


def encode_video(frames_full: torch.Tensor, path: Path, fps: int = 30) -> Path:
    """The case's frames as an H.264 file (crf 18): the input of the end-to-end rows."""
    import av

    T, H, W, _ = frames_full.shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "18", "preset": "fast"}
        for image in frames_full.numpy():
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_frames(path: Path):
    """Every frame at full resolution as ``(H, W, 3)`` uint8, as the official demos read them
    (imageio there; PyAV here, the same FFmpeg decoder)."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def ours_e2e(case: dict, path: Path, state_dict: dict, precision: str):
    """File to tracks: pointtrack decodes straight to model resolution, then tracks."""
    from pointtrack.trackers import load_tracker

    options = {} if precision == "fp32" else {"precision": precision}
    tracker = load_tracker(f"cotracker3-{case['mode']}", checkpoint=state_dict, device="cuda",
                           **options)

    def run():
        return tracker.track(str(path), grid_size=case["grid"])

    return run


def official_e2e(case: dict, path: Path, state_dict: dict, reference: Path,
                 device: str = "cuda"):
    """File to tracks as the official demos do it: `demo.py` reads the whole video into a
    full-resolution array and hands the predictor a float tensor; `online_demo.py` reads
    frame by frame and runs a window every ``step`` frames on the last ``2 * step``."""
    predictor = official_predictor(case, state_dict, reference, device)

    def window(frames, first):
        chunk = torch.tensor(np.stack(frames), device=device).float().permute(0, 3, 1, 2)[None]
        return predictor(chunk, is_first_step=first, grid_size=case["grid"])

    def run():
        if case["mode"] == "offline":
            video = torch.from_numpy(np.stack(list(read_frames(path))))
            video = video.permute(0, 3, 1, 2)[None].float().to(device)
            tracks, visible = predictor(video, grid_size=case["grid"])
            return tracks.cpu(), visible.cpu()
        frames, first, step = [], True, predictor.step
        for i, frame in enumerate(read_frames(path)):
            if i % step == 0 and i != 0:
                tracks, visible = window(frames[-step * 2 :], first)
                first = False
            frames.append(frame)
        tracks, visible = window(frames[-(i % step) - step - 1 :], first)
        return tracks.cpu(), visible.cpu()

    return run


def profile(fn) -> None:
    """Top operators by GPU time and by memory, after a warm-up run."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                       profile_memory=True) as prof:
        fn()
        torch.cuda.synchronize()
    averages = prof.key_averages()
    print(averages.table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
    print(averages.table(sort_by="self_cuda_memory_usage", row_limit=12,
                         max_name_column_width=60))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--reference", type=Path, help="local copy of the official co-tracker repo")
    p.add_argument("--skip-reference", default="", help="cases not to run the official code on")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="model rows: compile the encoder (default; the library's default is "
                        "off, which the file-to-tracks rows keep)")
    p.add_argument("--e2e-precision", default="bf16",
                   help="comma-separated precisions of the end-to-end (file to tracks) rows; "
                        "'' for none")
    p.add_argument("--drift-seeds", default="",
                   help="comma-separated seeds of further clips: each reduced-precision model "
                        "row also gets its drift from fp32 on each and the means (needs fp32 "
                        "in --precision)")
    p.add_argument("--profile", action="store_true",
                   help="print where pointtrack's time and memory go on the first case")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu.json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU", file=sys.stderr)
        return 2
    from pointtrack.models.weights import synthetic_state_dict

    shapes = {
        mode: json.loads((ROOT / f"tests/data/parity/{mode}_shapes.json").read_text())
        for mode in ("offline", "online")
    }
    rows = []
    for name in args.cases.split(","):
        case = CASES[name]
        state_dict = synthetic_state_dict(shapes[case["mode"]], seed=0)
        frames_full = moving_texture(case["frames"], case["size"])
        frames_model = resize_uint8(frames_full, MODEL_SIZE)
        results = {}
        if args.reference and name not in args.skip_reference.split(","):
            try:
                results["official-fp32"] = measure(
                    official(case, frames_full, state_dict, args.reference), args.repeats
                )
            except torch.cuda.OutOfMemoryError:
                results["official-fp32"] = {"seconds": None, "peak_gib": None, "oom": True}
            gc.collect()
            torch.cuda.empty_cache()
        if args.profile and not rows:
            profile(ours(case, frames_model, state_dict, args.precision.split(",")[0],
                         args.compile))
        precisions = args.precision.split(",")
        for precision in precisions:
            results[f"pointtrack-{precision}"] = measure(
                ours(case, frames_model, state_dict, precision, args.compile), args.repeats
            )
            gc.collect()
            torch.cuda.empty_cache()
        seeds = [int(x) for x in args.drift_seeds.split(",") if x]
        if seeds and "fp32" in precisions:
            # Trackers made again after the timed rows: one held through another's timing
            # would count in its reserved memory.
            runs = {p: ours(case, frames_model, state_dict, p, args.compile) for p in precisions}
            for precision, extra in drift(case, runs, seeds).items():
                results[f"pointtrack-{precision}"].update(extra)
            del runs
            gc.collect()
            torch.cuda.empty_cache()
        e2e = [x for x in args.e2e_precision.split(",") if x]
        if e2e:
            with tempfile.TemporaryDirectory(prefix="pointtrack-gpu-") as tmp:
                path = encode_video(frames_full, Path(tmp) / f"{name}.mp4")
                if args.reference and name not in args.skip_reference.split(","):
                    try:
                        results["official-fp32-e2e"] = measure(
                            official_e2e(case, path, state_dict, args.reference), args.repeats)
                    except torch.cuda.OutOfMemoryError:
                        results["official-fp32-e2e"] = {"seconds": None, "peak_gib": None,
                                                        "oom": True}
                    gc.collect()
                    torch.cuda.empty_cache()
                for precision in e2e:
                    results[f"pointtrack-{precision}-e2e"] = measure(
                        ours_e2e(case, path, state_dict, precision), args.repeats)
                    gc.collect()
                    torch.cuda.empty_cache()
        fp32 = results.get("pointtrack-fp32", {}).get("output")
        for impl, r in results.items():
            output = r.pop("output", None)
            if fp32 is not None and output is not None and impl.startswith("pointtrack-") \
                    and impl != "pointtrack-fp32" and not impl.endswith("-e2e"):
                r.update(agreement(output, fp32))
            row = {"case": name, "impl": impl, **case, **r}
            if r.get("seconds"):
                row["fps"] = case["frames"] / r["seconds"]
            # Model-only rows compare with the official model-only row, file-to-tracks rows
            # with the official file-to-tracks row.
            ref = results.get("official-fp32-e2e" if impl.endswith("-e2e") else "official-fp32",
                              {})
            if not impl.startswith("official-") and ref.get("seconds"):
                row["speedup"] = ref["seconds"] / r["seconds"]
                row["memory_ratio"] = ref["peak_gib"] / r["peak_gib"]
            rows.append(row)
            print(_row(row), flush=True)

    meta = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\n{meta['device']}, torch {meta['torch']}, {meta['date']}")
    print(f"{'case':28} {'impl':22} {'s':>7} {'fps':>7} {'GiB':>7} {'x faster':>8} {'x leaner':>8}"
          f" {'vs fp32 px (med/p95)':>20} {'vis agree':>9}")
    for row in rows:
        print(_row(row))
    return 0


def _row(row: dict) -> str:
    def f(v, fmt):
        return format(v, fmt) if isinstance(v, int | float) else "-"

    if row.get("oom"):
        return f"{row['case']:28} {row['impl']:22} {'out of memory':>23}"
    return (
        f"{row['case']:28} {row['impl']:22} {f(row.get('seconds'), '7.3f')} "
        f"{f(row.get('fps'), '7.1f')} {f(row.get('peak_gib'), '7.2f')} "
        f"{f(row.get('speedup'), '8.1f')} {f(row.get('memory_ratio'), '8.1f')}"
        + (f" (+{row['graph_pool_gib']:.2f} GiB graph pool)" if row.get("graph_pool_gib") else "")
        + (f" {row['vs_fp32_median_px']:9.3f}/{row['vs_fp32_p95_px']:<10.3f}"
           f" {row['vs_fp32_visible_agree']:9.3f}" if "vs_fp32_median_px" in row else "")
        + (f" (mean of {len(row['drift_seeds'])} clips: {row['vs_fp32_median_px_mean']:.3f}/"
           f"{row['vs_fp32_p95_px_mean']:.3f} {row['vs_fp32_visible_agree_mean']:.4f})"
           if "drift_seeds" in row else "")
    )


if __name__ == "__main__":
    sys.exit(main())
