"""What a user of one video waits for: a fresh process's imports, first and later calls, CLI.

    python benchmarks/first_call.py [VIDEO] --out benchmarks/results/first_call.json
        [--engines offline,online] [--rounds 2] [--cold] [--cli] [--profile]
        [--code NAME=DIR ...] [--reference .ref/co-tracker]
        [--device cuda] [--precision bf16] [--grid 50]

Every measurement is a fresh Python process, so it pays what `gpu.py`'s warm rows do not:
importing torch and pointtrack, CUDA's set-up, loading the weights (a checkpoint file of
synthetic weights), Triton's cache key and cuDNN's first plans. In it, the weights' load is
timed (``tracker.model``: read, build, to the device), then one `track(path)`, then ``--later``
more. Without VIDEO a 1080p 150-frame H.264 file is made (``--size``,
``--frames`` choose another).

- ``--code NAME=DIR`` (repeatable) times the pointtrack of another checkout or worktree
  (``DIR/src``) beside this one, interleaved, for an A/B; default: this checkout as "this".
- Triton's and Inductor's caches are one temporary directory, warmed by one untimed process
  per code and engine; ``--cold`` adds a process per code and engine with empty caches.
- ``--cli`` also times ``python -m pointtrack track VIDEO`` (wall time of the process).
- ``--reference DIR`` times the official predictor the same way, reading the file as its
  demos do (`gpu.py`'s `official_e2e`); ``--reference-engines`` limits it to some engines.
- ``--profile`` writes a cProfile of each code's last warm first call next to ``--out``.
"""

from __future__ import annotations

import time

START = time.perf_counter()  # before anything heavy is imported: the imports are timed

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("offline", "online")


# -- one fresh process ------------------------------------------------------------------------

def child(args) -> dict:
    """One fresh process: import, CUDA set-up, load, first and later calls of ``args.child``
    (pointtrack or the official predictor, whichever PYTHONPATH names)."""
    import torch

    t_torch = time.perf_counter()
    load = _import_ours() if args.child == "ours" else _import_official()
    t_import = time.perf_counter()
    cuda = args.device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if cuda:  # its own phase: every CUDA program pays it, ours or not
        torch.empty(1, device="cuda")
        sync()
    t_cuda = time.perf_counter()
    run = load(args)
    sync()
    t_load = time.perf_counter()

    def call():
        run()
        sync()

    first, profile = _timed_first(call, args.profile)
    later = [_seconds(call) for _ in range(args.later)]
    return dict(import_torch=t_torch - START, import_pointtrack=t_import - t_torch,
                cuda_init=t_cuda - t_import, load=t_load - t_cuda, first_call=first,
                later=later, profile=profile)


def _import_ours():
    from pointtrack.trackers import load_tracker

    def load(args):
        tracker = load_tracker(f"cotracker3-{args.engine}", checkpoint=args.checkpoint,
                               device=args.device, precision=args.precision)
        _ = tracker.model  # loaded on first use: `track(path)` loads it before decoding anyway
        return lambda: tracker.track(args.video, grid_size=args.grid)

    return load


def _import_official():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import cotracker.predictor  # noqa: F401
    from gpu import official_e2e

    def load(args):
        import torch

        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        case = dict(mode=args.engine, grid=args.grid)
        return official_e2e(case, Path(args.video), state, Path(args.reference),
                            device=args.device)

    return load


def _seconds(call) -> float:
    t = time.perf_counter()
    call()
    return time.perf_counter() - t


def _timed_first(call, profile: bool) -> tuple[float, str | None]:
    if not profile:
        return _seconds(call), None
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.runcall(call)
    seconds = time.perf_counter() - t
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("cumulative").print_stats(50)
    stats.sort_stats("tottime").print_stats(30)
    return seconds, text.getvalue()


# -- the driver ----------------------------------------------------------------------------------

def run_child(code_src: str, which: str, engine: str, args, cache: str, profile: bool) -> dict:
    env = _env(code_src, cache)
    command = [sys.executable, __file__, "--child", which, "--engine", engine,
               "--video", str(args.video), "--checkpoint", str(args.checkpoints[engine]),
               "--device", args.device, "--precision", args.precision,
               "--grid", str(args.grid), "--later", str(args.later)]
    if profile:
        command.append("--profile")
    if which == "official":
        command += ["--reference", code_src]
    t = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{which} {engine} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["process_wall"] = wall
    return row


def run_cli(code_src: str, engine: str, args, cache: str, out: Path) -> float:
    command = [sys.executable, "-m", "pointtrack", "track", str(args.video),
               "--engine", f"cotracker3-{engine}", "--checkpoint", str(args.checkpoints[engine]),
               "--device", args.device, "--precision", args.precision,
               "--grid-size", str(args.grid), "--out", str(out)]
    t = time.perf_counter()
    done = subprocess.run(command, env=_env(code_src, cache), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"CLI {engine} failed:\n{done.stderr[-3000:]}")
    return wall


def _env(code_src: str, cache: str) -> dict:
    path = [code_src, os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p),
                TRITON_CACHE_DIR=os.path.join(cache, "triton"),
                TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video", nargs="?", type=Path)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--rounds", type=int, default=2, help="warm processes per code and engine")
    p.add_argument("--later", type=int, default=2, help="calls timed after the first")
    p.add_argument("--cold", action="store_true", help="also a process with empty caches")
    p.add_argument("--cli", action="store_true", help="also time `python -m pointtrack track`")
    p.add_argument("--profile", action="store_true", help="cProfile a first call per code")
    p.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                   help="a checkout to compare (its src/ is imported); repeatable")
    p.add_argument("--reference", type=Path, help="local copy of the official co-tracker repo")
    p.add_argument("--reference-engines", default=",".join(ENGINES),
                   help="engines to time the official predictor on")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--grid", type=int, default=50)
    p.add_argument("--size", default="1920x1080", help="WxH of the made video")
    p.add_argument("--frames", type=int, default=150, help="frames of the made video")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/first_call.json")
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from gpu import encode_video, moving_texture

    from pointtrack.models.weights import synthetic_state_dict

    codes = dict(c.split("=", 1) for c in args.code) or {"this": str(ROOT)}
    codes = {name: str(Path(d).resolve() / "src") for name, d in codes.items()}
    engines = args.engines.split(",")
    work = Path(tempfile.mkdtemp(prefix="pointtrack-first-call-"))
    if args.video is None:
        W, H = map(int, args.size.split("x"))
        args.video = encode_video(moving_texture(args.frames, (W, H)), work / "clip.mp4")
    args.checkpoints = {}
    for engine in engines:
        shapes = json.loads((ROOT / f"tests/data/parity/{engine}_shapes.json").read_text())
        args.checkpoints[engine] = work / f"{engine}.pth"
        torch.save(synthetic_state_dict(shapes, seed=0), args.checkpoints[engine])
    impls = {e: [(name, "ours", src) for name, src in codes.items()] for e in engines}
    if args.reference:
        for engine in set(engines) & set(args.reference_engines.split(",")):
            impls[engine].append(("official", "official", str(args.reference.resolve())))

    rows = []

    def record(row):
        rows.append(row)
        print(_line(row), flush=True)

    warm = str(work / "warm-cache")
    if args.cold:
        for engine in engines:
            for name, which, src in impls[engine]:
                row = run_child(src, which, engine, args, str(work / f"cold-{name}-{engine}"),
                                False)
                record(dict(row, code=name, engine=engine, cache="cold", kind="process"))
    for engine in engines:  # untimed: fill the shared caches
        for _name, which, src in impls[engine]:
            run_child(src, which, engine, args, warm, False)
    for round_ in range(args.rounds):
        for engine in engines:
            for name, which, src in impls[engine]:
                profile = args.profile and round_ == args.rounds - 1
                row = run_child(src, which, engine, args, warm, profile)
                text = row.pop("profile", None)
                if text:
                    path = args.out.with_name(f"{args.out.stem}_profile_{name}_{engine}.txt")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
                record(dict(row, code=name, engine=engine, cache="warm", round=round_,
                            kind="process"))
    if args.cli:
        for round_ in range(args.rounds):
            for engine in engines:
                for name, which, src in impls[engine]:
                    if which != "ours":
                        continue
                    wall = run_cli(src, engine, args, warm, work / f"{name}-{engine}.npz")
                    record(dict(code=name, engine=engine, cache="warm", round=round_,
                                kind="cli", cli_wall=wall))

    summary = _summary(rows)
    meta = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else _cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "video": str(args.video),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))
    tmp.replace(args.out)
    print(f"\n{meta['device']}, torch {meta['torch']}, {meta['date']}; medians over processes")
    columns = (("imports", 8), ("cuda_init", 6), ("load", 6), ("first_call", 7), ("later", 7),
               ("process_wall", 8), ("cli_wall", 7))
    print(f"{'code':10} {'engine':8} {'cache':5} {'n':>2} {'imports':>8} {'CUDA':>6} "
          f"{'load':>6} {'first':>7} {'later':>7} {'process':>8} {'CLI':>7}")
    for s in summary:
        print(f"{s['code']:10} {s['engine']:8} {s['cache']:5} {s['n']:2d} "
              + " ".join(_f(s.get(k), w) for k, w in columns))
    return 0


def _summary(rows: list[dict]) -> list[dict]:
    """Medians per code, engine and cache, over processes (``later``: over all later calls)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["code"], row["engine"], row["cache"]), []).append(row)
    out = []
    for (code, engine, cache), group in groups.items():
        s = dict(code=code, engine=engine, cache=cache)
        procs = [r for r in group if r["kind"] == "process"]
        s["n"] = len(procs)
        if procs:
            s["imports"] = statistics.median(r["import_torch"] + r["import_pointtrack"]
                                             for r in procs)
            for key in ("cuda_init", "load", "first_call", "process_wall"):
                s[key] = statistics.median(r[key] for r in procs)
            later = [x for r in procs for x in r["later"]]
            if later:
                s["later"] = statistics.median(later)
        clis = [r["cli_wall"] for r in group if r["kind"] == "cli"]
        if clis:
            s["cli_wall"] = statistics.median(clis)
        out.append(s)
    return out


def _line(row: dict) -> str:
    if row["kind"] == "cli":
        return f"{row['code']} {row['engine']} CLI: {row['cli_wall']:.2f} s"
    later = ", ".join(f"{x:.3f}" for x in row["later"])
    imports = row["import_torch"] + row["import_pointtrack"]
    return (f"{row['code']} {row['engine']} {row['cache']}: imports {imports:.2f} s, CUDA "
            f"{row['cuda_init']:.2f} s, load {row['load']:.3f} s, first {row['first_call']:.3f}"
            f" s, later {later} s, process {row['process_wall']:.2f} s")


def _f(value, width: int) -> str:
    return format(value, f"{width}.3f") if isinstance(value, float) else "-".rjust(width)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def child_main(argv) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--child", choices=["ours", "official"])
    p.add_argument("--engine", choices=ENGINES)
    p.add_argument("--video")
    p.add_argument("--checkpoint")
    p.add_argument("--device")
    p.add_argument("--precision")
    p.add_argument("--grid", type=int)
    p.add_argument("--later", type=int)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--reference")
    args = p.parse_args(argv)
    row = child(args)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]) if "--child" in sys.argv else main())
