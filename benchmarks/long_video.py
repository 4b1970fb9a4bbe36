"""Host memory of streaming a long 1080p video: does RSS stay flat?

Generates an H.264 1080p video (``--minutes``, default the full hour at 30 fps: 108,000
frames; a texture on a 10 s circular pan, one period encoded with x264 and remuxed to the full
length), then streams it in a fresh process per run while a thread samples that process's
RSS from /proc every 0.2 s (and, on a GPU, the device memory held after each window):

- ``decode``: `pointtrack.video.iter_frames` at source resolution, nothing kept;
- ``lk``: `LucasKanadeTracker.stream` on every frame at 1080p (``--lk-grid``);
- ``cotracker3-online``: `CoTracker3OnlineTracker.stream` (synthetic weights, CPU unless
  ``--device``), frames decoded straight to 512x384 and sampled at ``--cotracker-fps``
  (CPU CoTracker3 runs about a frame a second), for ``--cotracker-minutes`` of the video.

Each run reports peak RSS and whether RSS is flat: the mean of the last 10% of the samples
against the first 10% (after the first window / frame, when the working set is built). The
tracks themselves grow by ``T x N x 16`` bytes, which is counted and reported apart.

    python benchmarks/long_video.py                          # the full hour (a fast machine)
    python benchmarks/long_video.py --minutes 4 --cotracker-fps 1 --cotracker-minutes 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

LIMIT_GIB = 2.0  # the peak RSS a run may reach


def make_video(path: Path, minutes: float, fps: int = 30, size=(1920, 1080)) -> Path:
    """1080p H.264: a fixed texture on a slow circular pan with a 10 s period.

    One period is encoded (a single GOP: it starts on a keyframe), then its packets are
    remuxed again and again with shifted timestamps up to ``minutes``: the decoder sees an
    ordinary hour-long stream, made in seconds instead of hours of encoding.
    """
    import av
    import cv2

    W, H = size
    period = 10 * fps
    frames = int(minutes * 60 * fps)
    rng = np.random.default_rng(0)
    tex = cv2.resize((rng.random((H // 8 + 40, W // 8 + 40, 3)) * 255).astype(np.uint8),
                     (W + 320, H + 320), interpolation=cv2.INTER_CUBIC)
    loop = path.with_name(path.stem + ".loop.mp4")
    with av.open(str(loop), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        # No B-frames or scene cuts: packets in presentation order, one keyframe per period.
        stream.options = {"preset": "ultrafast", "crf": "30", "g": str(period),
                          "bf": "0", "x264-params": "scenecut=0"}
        for i in range(min(period, frames)):
            a = 2 * np.pi * i / period
            x, y = int(160 + 120 * np.cos(a)), int(160 + 120 * np.sin(a))
            frame = av.VideoFrame.from_ndarray(tex[y : y + H, x : x + W], format="rgb24")
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(loop)) as src, av.open(str(path), "w") as dst:
        packets = [p for p in src.demux(src.streams.video[0]) if p.size]
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        span = packets[-1].pts - packets[0].pts + packets[1].pts - packets[0].pts
        written = 0
        while written < frames:
            shift = (written // len(packets)) * span
            for p in packets[: frames - written]:
                q = av.Packet(bytes(p))
                q.pts, q.dts = p.pts + shift, p.dts + shift
                q.time_base, q.is_keyframe, q.stream = p.time_base, p.is_keyframe, out_stream
                dst.mux(q)
            written += min(len(packets), frames - written)
    loop.unlink()
    return path


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args: argparse.Namespace) -> None:
    """One streaming run in this process; prints a JSON line with frames and timings."""
    from pointtrack.video import iter_frames, probe

    info = probe(args.video)
    started = time.perf_counter()
    out: dict = {"engine": args.engine, "api": "push" if args.push else "feed"}
    ready = False

    def mark_ready() -> None:  # the working set is built: RSS from now on must stay flat
        nonlocal ready
        if not ready:
            print(json.dumps({"ready": True}), flush=True)
            ready = True

    if args.engine == "decode":
        n = 0
        for _ in iter_frames(args.video):
            n += 1
            if n == 30:
                mark_ready()
        out.update(frames=n, points=0)
    elif args.engine == "lk":
        from pointtrack.trackers import load_tracker

        stream = load_tracker("lk").stream(grid_size=args.lk_grid)
        add = stream.push if args.push else stream.feed
        n = 0
        chunk = []
        for f in iter_frames(args.video):
            chunk.append(f.image)
            if len(chunk) == 8:  # 8 frames of 1080p: 50 MB
                add(np.stack(chunk))
                n += len(chunk)
                chunk = []
                if n == 32:
                    mark_ready()
        if chunk:
            add(np.stack(chunk))
            n += len(chunk)
        tracks = stream.finish()
        out.update(frames=n, points=tracks.num_tracks, visible=float(tracks.visible.mean()))
    else:
        import torch

        from pointtrack.models.cotracker3 import CoTracker3Online
        from pointtrack.models.weights import model_shapes, synthetic_state_dict
        from pointtrack.trackers import load_tracker

        weights = synthetic_state_dict(model_shapes(CoTracker3Online()))
        tracker = load_tracker("cotracker3-online", checkpoint=weights, device=args.device,
                               progress=False)
        stream = tracker.stream(grid_size=args.cotracker_grid)
        add = stream.push if args.push else stream.feed
        frames = iter_frames(args.video, size=tracker.input_size, fps=args.cotracker_fps,
                             end=args.cotracker_minutes * 60)
        cuda = tracker.device.type == "cuda"
        gpu = []  # device memory held after each push (the tracks live on the host)
        n, chunk = 0, []
        for f in frames:
            chunk.append(f.image)
            if len(chunk) == 16:
                add(np.stack(chunk))
                n += len(chunk)
                chunk = []
                if n == 32:  # two windows in
                    mark_ready()
                if cuda and n >= 32:
                    gpu.append(torch.cuda.memory_allocated())
        if chunk:
            add(np.stack(chunk))
            n += len(chunk)
        tracks = stream.finish()
        out.update(frames=n, points=tracks.num_tracks, visible=float(tracks.visible.mean()),
                   fps_sampled=args.cotracker_fps, minutes=args.cotracker_minutes)
        if cuda and gpu:
            k = max(1, len(gpu) // 10)
            first, last = np.mean(gpu[:k]), np.mean(gpu[-k:])
            out.update(device=torch.cuda.get_device_name(),
                       gpu_peak_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                       gpu_first_10pct_mib=round(first / 2**20, 1),
                       gpu_last_10pct_mib=round(last / 2**20, 1),
                       gpu_flat=bool(last <= first * 1.05 + 2**20))
    out.update(seconds=round(time.perf_counter() - started, 1), source_frames=info.num_frames,
               source_size=list(info.size))
    print(json.dumps(out), flush=True)


def measure(args: argparse.Namespace, engine: str) -> dict:
    """Run ``engine`` in a child process and sample its RSS until it exits."""
    cmd = [sys.executable, __file__, "--child", "--engine", engine, "--video", str(args.video),
           "--lk-grid", str(args.lk_grid), "--cotracker-grid", str(args.cotracker_grid),
           "--cotracker-fps", str(args.cotracker_fps),
           "--cotracker-minutes", str(args.cotracker_minutes), "--device", args.device,
           *(["--push"] if args.push else [])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    samples: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    ready_at = [float("inf")]

    def sample() -> None:
        while proc.poll() is None:
            try:
                rss = rss_bytes(proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            if rss:  # 0 once it has exited
                samples.append((time.perf_counter() - t0, rss))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if '"ready"' in line:
            ready_at[0] = time.perf_counter() - t0
    proc.wait()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{engine} run failed with exit code {proc.returncode}")
    result = json.loads(lines[-1])
    rss = np.array([s[1] for s in samples], dtype=np.float64)
    # Flatness is judged from when the working set is built (first frames / windows).
    warm = np.array([s[1] for s in samples if s[0] >= ready_at[0]], dtype=np.float64)
    if len(warm) < 10:
        warm = rss
    k = max(1, len(warm) // 10)
    first, last = warm[:k].mean(), warm[-k:].mean()
    tracks_bytes = result["frames"] * result.get("points", 0) * 16
    growth = last - first
    result.update(
        peak_rss_mib=round(rss.max() / 2**20, 1),
        first_10pct_mib=round(first / 2**20, 1),
        last_10pct_mib=round(last / 2**20, 1),
        growth_mib=round(growth / 2**20, 1),
        tracks_mib=round(tracks_bytes / 2**20, 1),
        # Flat: grows by less than 5% plus the tracks' own size.
        flat=bool(growth <= 0.05 * first + tracks_bytes),
        within_limit=bool(rss.max() <= LIMIT_GIB * 2**30),
        samples=len(rss),
        rss_mib_every_10pct=[round(float(v) / 2**20, 1)
                             for v in rss[np.linspace(0, len(rss) - 1, 11).astype(int)]],
    )
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="lk")
    p.add_argument("--video", help="use this video instead of generating one")
    p.add_argument("--minutes", type=float, default=60.0, help="video length (default 60)")
    p.add_argument("--engines", default="decode,lk,cotracker3-online")
    p.add_argument("--lk-grid", type=int, default=10)
    p.add_argument("--cotracker-grid", type=int, default=5)
    p.add_argument("--cotracker-fps", type=float, default=2.0,
                   help="frames per second of video CoTracker3 sees (default 2)")
    p.add_argument("--cotracker-minutes", type=float, default=60.0,
                   help="minutes of the video CoTracker3 tracks (default 60)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--push", action="store_true",
                   help="stream with push(), which returns the tracks so far on every call "
                        "(a copy of all rows each time), instead of feed(), as the CLI does")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/long_video.json"))
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="pointtrack-long-") as tmp:
        started = time.perf_counter()
        if not args.video:
            args.video = make_video(Path(tmp) / "long.mp4", args.minutes)
        encode_s = time.perf_counter() - started
        size_mib = Path(args.video).stat().st_size / 2**20
        print(f"video: {args.video} ({size_mib:.0f} MiB, made in {encode_s:.0f} s)", flush=True)
        runs = []
        for engine in args.engines.split(","):
            r = measure(args, engine)
            runs.append(r)
            print(f"{engine:18s} {r['frames']:7d} frames in {r['seconds']:7.1f} s  peak "
                  f"{r['peak_rss_mib']:7.1f} MiB  first/last 10% {r['first_10pct_mib']:.1f}/"
                  f"{r['last_10pct_mib']:.1f} MiB  flat={r['flat']}  "
                  f"within {LIMIT_GIB} GiB={r['within_limit']}"
                  + (f"  GPU peak {r['gpu_peak_mib']:.0f} MiB, first/last 10% "
                     f"{r['gpu_first_10pct_mib']:.0f}/{r['gpu_last_10pct_mib']:.0f} MiB "
                     f"flat={r['gpu_flat']}" if "gpu_peak_mib" in r else ""), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "video": {"minutes": args.minutes, "fps": 30, "size": [1920, 1080],
                  "codec": "H.264 ultrafast", "mib": round(size_mib, 1),
                  "encode_seconds": round(encode_s, 1)},
        "limit_gib": LIMIT_GIB,
        "runs": runs,
    }, indent=1))
    print(f"wrote {args.out}")
    return 0 if all(r["flat"] and r["within_limit"] and r.get("gpu_flat", True)
                    for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
