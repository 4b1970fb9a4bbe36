"""Where pointtrack's CoTracker3 spends GPU time.

Run on a GPU machine; prints (1) a phase breakdown (encoder, correlation, transformer) of a
case with synchronised timers, per variant (PyTorch or fused correlation, with or without the
online CUDA graph, config overrides), (2) with --profile the top kernels of one call, (3) with
--tune the correlation kernels (Triton and CUDA) per launch shape, with their errors, (4) with
--timeline when the CPU queued and the GPU ran each phase of one call (plus a cProfile and a
Chrome trace), (5) with --encoder the CNN alone, eager, with fused norms and compiled, (6) with
--alternate config overrides compared in one process, call by call, (7) with --phases the
CPU and GPU time of each phase of many calls in one process. The
correctness of the GPU paths is checked by tests/test_gpu.py. Notes on each run go in
benchmarks/NOTES.md.

    python benchmarks/gpu_explore.py --case offline-480p-82f-grid50 --precision bf16
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu import CASES, MODEL_SIZE, moving_texture, resize_uint8  # noqa: E402


def tune_correlation(n: int = 336, T: int = 82) -> list[dict]:
    """Correlation kernel time (ms, bf16) per kernel and launch configuration on one chunk of
    points (336 x 82: an offline chunk on GPU; 1724 x 16: an online one), and each kernel's
    mean absolute error against the volumes computed in fp32 from the same bf16 inputs (the
    PyTorch path's order: window products, then the blend)."""
    from triton.testing import do_bench

    from pointtrack.models import _corr_cuda, corr_triton
    from pointtrack.models.cotracker3 import blend, gather_windows

    g = torch.Generator(device="cuda").manual_seed(0)
    pyramid = [torch.randn(T, 96 // 2**lv, 128 // 2**lv, 128, device="cuda",
                           generator=g).bfloat16() for lv in range(4)]
    support = [torch.randn(n, 49, 128, device="cuda", generator=g).bfloat16() for _ in range(4)]
    # Some positions off the map: the border handling is timed too.
    xy = torch.rand(n, T, 2, device="cuda", generator=g) * torch.tensor(
        [140.0, 108.0], device="cuda") - 6
    check = min(n, 64)
    frames = torch.arange(T, device="cuda").expand(1, check, T)
    reference = []
    for lv in range(4):
        at = xy[None, :check] / 2**lv
        window = gather_windows(pyramid[lv].float()[None], at, frames, 3)
        products = torch.bmm(window.reshape(check, -1, 128),
                             support[lv][:check].float().transpose(1, 2))
        reference.append(blend(products.reshape(*window.shape[:-1], 49), at).reshape(check, T, -1))
    reference = torch.stack(reference, 2)

    def triton_kernel(block_t, warps):
        corr_triton.CUDA_KERNEL = False
        try:
            return corr_triton.correlate_volumes(pyramid, xy, support, block_t=block_t,
                                                 num_warps=warps)
        finally:
            corr_triton.CUDA_KERNEL = True

    def cuda_kernel(frames_per_block, warps, paired=False):
        out = torch.empty(n, T, 4, corr_triton.ROW, device="cuda", dtype=torch.bfloat16)
        if not _corr_cuda.correlate_volumes(pyramid, xy.contiguous(), support, out, warps,
                                            frames_per_block, paired):
            raise RuntimeError("the CUDA correlation kernel cannot run here")
        return out

    def paired_kernel(frames_per_block, warps):
        return cuda_kernel(frames_per_block, warps, True)

    configs = [("triton", triton_kernel, b, w) for b, w in ((1, 4), (2, 4), (4, 4), (2, 8))]
    configs += [("cuda", cuda_kernel, f, w) for f, w in ((16, 4), (32, 4), (32, 2), (32, 8))]
    configs += [("cuda-paired", paired_kernel, f, w) for f, w in ((16, 4), (32, 4), (32, 8))]
    rows, first_cuda = [], None
    for kernel, fn, block, warps in configs:
        full = fn(block, warps)
        volume = full[:check, :, :, :2401].float()
        if kernel.startswith("cuda") and first_cuda is None:
            first_cuda = full
        ms = do_bench(lambda fn=fn, block=block, warps=warps: fn(block, warps),
                      return_mode="median")
        rows.append({"n": n, "T": T, "kernel": kernel, "frames_per_program": block,
                     "num_warps": warps, "ms": ms, "ns_per_row": ms * 1e6 / (n * T * 4),
                     "mean_abs_error_vs_fp32": float((volume - reference).abs().mean()),
                     "equal_to_first_cuda": (bool(torch.equal(full, first_cuda))
                                             if kernel.startswith("cuda") else None)})
        print(rows[-1], flush=True)
    return rows


def time_encoder(frames: int = 16) -> list[dict]:
    """The CNN alone on one chunk of ``frames`` frames at model resolution, bf16, synthetic
    weights (ms, do_bench medians): eager PyTorch ops, eager with `norm_act`'s fused norms
    (POINTTRACK_FUSED_ENCODER), and compiled; each one's mean difference from fp32."""
    import copy

    from triton.testing import do_bench

    from pointtrack.models import norm_act
    from pointtrack.models.cotracker3 import CoTracker3Offline
    from pointtrack.models.weights import synthetic_state_dict

    model = CoTracker3Offline()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(synthetic_state_dict(shapes))
    fnet = model.fnet.cuda().eval()
    g = torch.Generator(device="cuda").manual_seed(0)
    H, W = MODEL_SIZE[1], MODEL_SIZE[0]
    x = torch.rand(frames, 3, H, W, device="cuda", generator=g) * 2 - 1
    rows = []
    with torch.no_grad():
        reference = fnet(x)
        fnet16, x16 = copy.deepcopy(fnet).bfloat16(), x.bfloat16()
        compiled = torch.compile(fnet16, dynamic=False)
        default = norm_act.ENABLED
        for name, fused, net in (("eager", False, fnet16), ("fused norms", True, fnet16),
                                 ("compiled", False, compiled)):
            norm_act.ENABLED = fused
            try:
                error = float((net(x16).float() - reference).abs().mean())
                ms = do_bench(lambda net=net: net(x16), return_mode="median")
            finally:
                norm_act.ENABLED = default
            rows.append({"encoder": name, "frames": frames, "ms": ms,
                         "ms_per_frame": ms / frames, "mean_abs_error_vs_fp32": error})
            print(rows[-1], flush=True)
    return rows


def breakdown(case: dict, precision: str, graphs: bool, fused: bool = True,
              options: dict | None = None) -> dict:
    """Synchronised time per phase of one tracker call (timers add syncs: a rough split)."""
    from pointtrack.models import corr_triton

    corr_triton.ENABLED = fused
    tracker, run = _tracker(case, precision)
    model = tracker.model
    model.cfg.cuda_graphs = graphs
    for key, value in (options or {}).items():
        setattr(model.cfg, key, value)
    totals: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn(*a, **k)
            torch.cuda.synchronize()
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - t
            return out
        return wrapper

    run()  # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(3):
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    result = {"seconds": float(np.median(times)),
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    if not graphs:
        originals = (model.encode, model.correlate, model.updateformer.run)
        model.encode = timed("encode", model.encode)
        model.correlate = timed("correlate", model.correlate)
        model.updateformer.run = timed("transformer", model.updateformer.run)
        totals.clear()
        t = time.perf_counter()
        run()
        torch.cuda.synchronize()
        totals["total(synced)"] = time.perf_counter() - t
        model.encode, model.correlate, model.updateformer.run = originals
        result["phases"] = totals
    return result


def alternate(case: dict, precision: str, arms: list[dict], rounds: int,
              compile: bool = False) -> dict:
    """Config overrides compared in one process, through one tracker, the arms taking turns
    call by call: between processes a call's time moves by ~10-20% on the same machine (the
    host's speed: the eager refinement's CPU time is close to its GPU time), within one the
    arms meet the same conditions. Per arm: medians of the call, of the refinement's GPU time
    (CUDA events) and of the CPU time to queue it, the peak allocations, and whether its
    tracks equal the first arm's."""
    import importlib

    from pointtrack.models import cotracker3

    tracker, run = _tracker(case, precision, compile)
    cfg = tracker.model.cfg

    def owner(key: str) -> tuple[object, str]:
        """'token_budget' is the model's config; 'attention.ENABLED' a switch of the module
        `pointtrack.models.attention`."""
        if "." not in key:
            return cfg, key
        module, name = key.rsplit(".", 1)
        return importlib.import_module(f"pointtrack.models.{module}"), name

    defaults = {key: getattr(*owner(key)) for arm in arms for key in arm}
    spans: list[tuple] = []
    refine = cotracker3.CoTracker3.refine

    def timed_refine(self, *args, **kwargs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        t = time.perf_counter()
        out = refine(self, *args, **kwargs)
        spans.append((start, end, time.perf_counter() - t))
        end.record()
        return out

    # The online model keeps its captured refinement between calls (`_attach_buffers`), made
    # under the options of its first call: each arm keeps its own captures, or every arm
    # after the first would replay the first arm's graph.
    captures: list[list] = [[] for _ in arms]

    def configure(i: int) -> None:
        for key, value in {**defaults, **arms[i]}.items():
            setattr(*owner(key), value)
        tracker.model.__dict__["_captures"] = captures[i]

    cotracker3.CoTracker3.refine = timed_refine
    try:
        first = []
        for i in range(len(arms)):  # warm-up: each arm's shapes, kernels, autotuning, graphs
            configure(i)
            first.append(run())
        rows = [{"s": [], "refine_gpu_ms": [], "refine_cpu_ms": [], "peak_gib": []} for _ in arms]
        for _ in range(rounds):
            for i, row in enumerate(rows):
                configure(i)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                spans.clear()
                t = time.perf_counter()
                run()
                torch.cuda.synchronize()
                row["s"].append(time.perf_counter() - t)
                row["refine_gpu_ms"].append(sum(a.elapsed_time(b) for a, b, _ in spans))
                row["refine_cpu_ms"].append(1e3 * sum(c for *_, c in spans))
                row["peak_gib"].append((torch.cuda.max_memory_allocated() - base) / 2**30)
    finally:
        cotracker3.CoTracker3.refine = refine
        for key, value in defaults.items():
            setattr(*owner(key), value)
    return {str(arm): {**{k: float(np.median(v)) for k, v in row.items()}, "runs": row["s"],
                       "same_tracks_as_first_arm": bool(out.equals(first[0]))}
            for arm, row, out in zip(arms, rows, first, strict=True)}


def top_kernels(case: dict, precision: str, rows: int = 25, compile: bool = False) -> str:
    from torch.profiler import ProfilerActivity, profile

    tracker, run = _tracker(case, precision, compile)
    tracker.model.cfg.cuda_graphs = False
    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    averages = prof.key_averages()
    return "\n".join([
        gpu_busy(prof),
        averages.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70),
        averages.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=70),
    ])


def _tracker(case: dict, precision: str, compile: bool = False):
    from pointtrack.models.weights import synthetic_state_dict
    from pointtrack.trackers import load_tracker
    from pointtrack.video import Clip

    shapes = json.loads((ROOT / f"tests/data/parity/{case['mode']}_shapes.json").read_text())
    tracker = load_tracker(f"cotracker3-{case['mode']}", checkpoint=synthetic_state_dict(shapes),
                           device="cuda", precision=precision, compile=compile)
    frames = resize_uint8(moving_texture(case["frames"], case["size"]), MODEL_SIZE)
    clip = Clip(frames, np.arange(len(frames)), 30.0, case["size"])
    return tracker, lambda: tracker.track(clip, grid_size=case["grid"])


def timeline(case: dict, precision: str, out: Path | None = None, compile: bool = False) -> str:
    """When the CPU queued each phase of one warm call and when the GPU ran it (CUDA events,
    no syncs added): a phase whose GPU start follows its CPU start closely waited on the CPU.
    With ``out``, also a cProfile of the call (``out``.cprofile.txt) and a Chrome trace of
    it (``out``.trace.json.gz)."""
    tracker, run = _tracker(case, precision, compile)
    run()
    torch.cuda.synchronize()
    total, marks, start, t0 = _marked_call(tracker, run)
    lines = [f"{case['mode']} {case}: call {total * 1e3:.1f} ms",
             f"{'phase':18s} {'cpu start':>9s} {'cpu end':>9s} {'gpu start':>9s} {'gpu end':>9s}"]
    for name, c0, c1, e0, e1 in sorted(marks, key=lambda m: m[1]):
        try:
            gpu = f"{start.elapsed_time(e0):9.2f} {start.elapsed_time(e1):9.2f}"
        except RuntimeError:  # recorded while a CUDA graph was being captured
            gpu = "(captured)"
        lines.append(f"{name:18s} {(c0 - t0) * 1e3:9.2f} {(c1 - t0) * 1e3:9.2f} {gpu}")
    if out is not None:
        import cProfile
        import gzip
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        run()
        torch.cuda.synchronize()
        profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(45)
        stats.sort_stats("cumulative").print_stats(45)
        Path(f"{out}.cprofile.txt").write_text(text.getvalue())
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run()
            torch.cuda.synchronize()
        trace = Path(f"{out}.trace.json")
        prof.export_chrome_trace(str(trace))
        with open(trace, "rb") as f, gzip.open(f"{trace}.gz", "wb") as g:
            g.write(f.read())
        trace.unlink()
        lines.append(gpu_busy(prof))
    return "\n".join(lines)


PHASES = ("_encode", "_pyramid", "query_features", "refine", "_numpy", "_to_tracks")


def phases(case: dict, precision: str, calls: int, compile: bool = False) -> list[dict]:
    """``calls`` warm calls in one process, each split into phases: the CPU time each phase
    took to queue (``cpu``) and the GPU time between its first and last queued work
    (``gpu``, CUDA events), plus where the GPU started it, in ms from the call's start. A
    phase whose time moves between calls while its GPU time stays shows the host moving."""
    tracker, run = _tracker(case, precision, compile)
    run()
    torch.cuda.synchronize()
    rows = []
    for _ in range(calls):
        gc.collect()  # as gpu.py's timed calls
        torch.cuda.empty_cache()
        total, marks, start, _ = _marked_call(tracker, run)
        row = {"call_ms": total * 1e3}
        for name, c0, c1, e0, e1 in marks:
            if name not in PHASES:
                continue
            try:
                cpu, gpu = (c1 - c0) * 1e3, e0.elapsed_time(e1)
                at = start.elapsed_time(e0)
            except RuntimeError:  # recorded while a CUDA graph was being captured
                continue
            entry = row.setdefault(name, {"cpu": 0.0, "gpu": 0.0, "gpu_at": at})
            entry["cpu"] += cpu
            entry["gpu"] += gpu
        rows.append(row)
        print(f"call {row['call_ms']:7.1f} ms  " + "  ".join(
            f"{n.strip('_')} {row[n]['cpu']:.1f}/{row[n]['gpu']:.1f}@{row[n]['gpu_at']:.1f}"
            for n in PHASES if n in row), flush=True)
    return rows


def _marked_call(tracker, run) -> tuple[float, list, torch.cuda.Event, float]:
    """One call of ``run`` with the tracker's and model's phases marked: the call's seconds,
    ``(name, cpu start, cpu end, gpu start event, gpu end event)`` per phase call, the
    call's start event and its `perf_counter` start."""
    model = tracker.model
    marks = []

    def wrap(obj, name):
        fn = getattr(obj, name)

        def wrapper(*a, **k):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            c0 = time.perf_counter()
            result = fn(*a, **k)
            e1.record()
            marks.append((name, c0, time.perf_counter(), e0, e1))
            return result
        setattr(obj, name, wrapper)

    names = [(tracker, "_frames_to_model"), (model, "encode"), (model, "query_features"),
             (model, "iteration"), (model, "correlate"), (model.updateformer, "run"),
             (tracker, "_numpy"), (tracker, "_to_tracks"), (model, "refine"), (model, "track")]
    names += [(tracker, n) for n in ("_encode", "_pyramid") if hasattr(tracker, n)]
    for o, n in names:
        wrap(o, n)
    start = torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    t0 = time.perf_counter()
    try:
        run()
        torch.cuda.synchronize()
    finally:
        for o, n in names:  # the instance attributes go: the class's methods show again
            delattr(o, n)
    return time.perf_counter() - t0, marks, start, t0


def gpu_busy(prof) -> str:
    """How much of the profiled span the GPU was running kernels (the union of their
    intervals): far under 100% means the CPU does not launch work fast enough."""
    spans, first, last = [], float("inf"), 0.0
    for e in prof.events():
        first, last = min(first, e.time_range.start), max(last, e.time_range.end)
        if e.device_type.name == "CUDA":
            spans.append((e.time_range.start, e.time_range.end))
    busy, end = 0.0, -1.0
    for a, b in sorted(spans):
        if b > end:
            busy += b - max(a, end)
            end = b
    return f"profiled span {(last - first) / 1e3:.1f} ms, GPU busy {busy / 1e3:.1f} ms"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--case", default="offline-480p-82f-grid50")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="--profile, --timeline: compile the encoder, as gpu.py's model rows do")
    p.add_argument("--tune", action="store_true", help="correlation kernels and launch shapes")
    p.add_argument("--encoder", action="store_true",
                   help="the CNN alone: eager, eager with fused norms, compiled")
    p.add_argument("--variants", default="fused-eager,fused-graphs",
                   help="comma-separated from torch-eager, fused-eager, fused-graphs")
    p.add_argument("--frames", type=int, help="override the cases' frame count (shorter runs)")
    p.add_argument("--timeline", type=Path,
                   help="CPU and GPU time of each phase of one call; cProfile and trace here")
    p.add_argument("--phases", type=int, metavar="CALLS",
                   help="CALLS calls in one process, each split into phases (CPU and GPU ms)")
    p.add_argument("--alternate", type=int, metavar="ROUNDS",
                   help="compare config overrides in one process, taking turns call by call: "
                        "--variants lists the arms, e.g. 'token_budget=65536,token_budget="
                        "131072' (one arm may set several: 'a=1+b=2'; '' is the defaults; "
                        "'attention.ENABLED=0' sets a switch of a pointtrack.models module)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.frames:
        for case in CASES.values():
            case["frames"] = args.frames
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if args.tune:
        report["tune"] = tune_correlation() + tune_correlation(1724, 16)
    if args.encoder:
        report["encoder"] = time_encoder()
    if args.timeline:
        for case_name in args.case.split(","):
            text = timeline(CASES[case_name], args.precision, args.timeline / case_name,
                            args.compile)
            print(text, flush=True)
            report[f"timeline-{case_name}"] = text
    if args.phases:
        for case_name in args.case.split(","):
            report[f"phases-{case_name}-{args.precision}"] = phases(
                CASES[case_name], args.precision, args.phases, args.compile)
    if args.alternate:
        arms = [{k: int(v) for k, v in (x.split("=") for x in arm.split("+") if x)}
                for arm in args.variants.split(",")]
        for case_name in args.case.split(","):
            r = alternate(CASES[case_name], args.precision, arms, args.alternate, args.compile)
            report[f"alternate-{case_name}-{args.precision}"] = r
            for arm, row in r.items():
                print(case_name, arm, {k: round(v, 4) for k, v in row.items()
                                       if isinstance(v, float)},
                      "same tracks" if row["same_tracks_as_first_arm"] else "other tracks",
                      flush=True)
    breakdowns = args.variants and not (args.alternate or args.phases)
    for case_name in args.case.split(",") if breakdowns else []:
        case = CASES[case_name]
        for variant in args.variants.split(","):
            # e.g. "fused-eager" or "fused-graphs+token_budget=131072" (config overrides)
            variant, *sets = variant.split("+")
            options = {k: int(v) for k, v in (x.split("=") for x in sets)}
            fused, graphs = variant.startswith("fused"), variant.endswith("graphs")
            r = breakdown(case, args.precision, graphs, fused, options)
            key = f"{case_name}-{args.precision}-fused{fused}-graphs{graphs}-{options}"
            report[key] = r
            print(key, r, flush=True)
    if args.profile:
        table = top_kernels(CASES[args.case.split(",")[0]], args.precision,
                            compile=args.compile)
        print(table)
        report["profile"] = table
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
