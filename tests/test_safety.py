"""Reliability and safety: safe checkpoint loading, write faults, memory checks, the App's
address. Real files, real subprocesses, real MongoDB."""

from __future__ import annotations

import errno
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port

from pointtrack.models.cotracker3 import CoTracker3Offline
from pointtrack.models.weights import (
    CheckpointError,
    load_state_dict,
    load_weights,
    model_shapes,
    synthetic_state_dict,
)


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "pointtrack", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def assert_clean_error(r, *needles):
    """Exit 2, one line on stderr naming the problem, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pointtrack: error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- Safe loading -----------------------------------------------------------------------------


class _Evil:
    """Unpickling this calls ``Path.touch(marker)``: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"fnet.conv1.weight": torch.zeros(1), "payload": _Evil(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    path, marker = evil_checkpoint(tmp_path)
    for checkpoint in (str(path), path.as_uri()):
        with pytest.raises(CheckpointError, match="refused: the checkpoint holds Python objects"):
            load_state_dict(checkpoint, "scaled_offline")
        assert not marker.exists()
    # Sanity of the test itself: a full unpickle would have run the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_malicious_pickle_cli_one_line(make_video, tmp_path):
    video, _ = make_video(num_frames=4, size=(64, 48))
    path, marker = evil_checkpoint(tmp_path)
    out = tmp_path / "t.npz"
    r = run_cli("track", video, "--engine", "cotracker3-offline", "--checkpoint", path,
                "--grid-size", 2, "--out", out)
    assert_clean_error(r, "refused", str(path))
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("url", ["http://example.com/w.pth", "ftp://example.com/w.pth",
                                 "s3://bucket/w.pth", "file://otherhost/tmp/w.pth"])
def test_only_https_and_file_urls(url):
    with pytest.raises(CheckpointError, match="not allowed|must name a local file"):
        load_state_dict(url, "scaled_offline")


def test_file_url_reads_in_place(tmp_path):
    state = synthetic_state_dict(model_shapes(CoTracker3Offline()))
    path = tmp_path / "dir with space" / "w.pth"
    path.parent.mkdir()
    torch.save(state, path)
    model = load_weights(CoTracker3Offline(), path.as_uri(), "scaled_offline")
    assert torch.equal(model.time_emb, state["time_emb"])


def test_truncated_and_wrong_checkpoints_name_the_problem(tmp_path):
    state = synthetic_state_dict(model_shapes(CoTracker3Offline()))
    good = tmp_path / "good.pth"
    torch.save(state, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_state_dict(str(cut), "scaled_offline")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        load_state_dict(str(tmp_path / "list.pth"), "scaled_offline")


# -- Write faults -----------------------------------------------------------------------------


class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes and then fails like a full disk."""

    def __init__(self, path, room: int):
        self.file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.room = room

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, *args) -> int:
        return self.file.seek(*args)

    def tell(self) -> int:
        return self.file.tell()

    def write(self, data) -> int:
        if len(data) > self.room:
            self.file.write(bytes(data)[: self.room])  # the bytes that fit land, as on a disk
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def close(self) -> None:
        self.file.close()
        super().close()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def job(make_video, tmp_path):
    """A video, and outputs of which one (the .npz) exists from an earlier run."""
    video, _ = make_video(num_frames=8, size=(96, 64))
    out = tmp_path / "out"
    out.mkdir()
    (out / "t.npz").write_bytes(b"an earlier run's tracks")
    args = ["track", str(video), "--grid-size", "3", "--out", str(out / "t.npz"),
            "--csv", str(out / "t.csv"), "--render", str(out / "r.mp4")]
    return args, tmp_path


@pytest.mark.parametrize("victim", [".npz", ".csv", ".mp4"])
def test_full_disk_mid_write_leaves_nothing(job, victim, monkeypatch, capsys):
    """Any of the three outputs fails half-way: exit 2, one line naming the file and the
    cause, the earlier .npz untouched, no new file, no temp file."""
    import av

    import pointtrack.tracks
    import pointtrack.video
    from pointtrack.cli import main

    args, root = job
    before = snapshot(root)
    failed = []
    real_av_open = av.open

    def full_open(path, mode="r", *a, **k):
        if Path(path).suffix == victim and "w" in mode:
            failed.append(path)
            return io.TextIOWrapper(FullDisk(path, 300), newline="") if "b" not in mode \
                else FullDisk(path, 300)
        return open(path, mode, *a, **k)

    def full_av_open(path, mode="r", **k):
        if Path(str(path)).suffix == victim and mode == "w":
            failed.append(path)
            return real_av_open(FullDisk(path, 3000), mode="w", **k)
        return real_av_open(path, mode, **k)

    monkeypatch.setattr(pointtrack.tracks, "open", full_open, raising=False)
    monkeypatch.setattr(pointtrack.video.av, "open", full_av_open)
    assert main(args) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert failed, "the writer was not reached"
    target = {".npz": "t.npz", ".csv": "t.csv", ".mp4": "r.mp4"}[victim]
    assert len(err) == 1 and err[0].startswith("pointtrack: error: "), err
    assert "cannot write" in err[0], err
    assert target in err[0] and "No space left on device" in err[0], err
    assert snapshot(root) == before  # nothing new, nothing changed, no temp file


def test_real_full_tmpfs(make_video, tmp_path):
    """The same on a real 64 KiB tmpfs, where the tracks of 3600 points cannot fit (root
    only; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        video, _ = make_video(num_frames=30, size=(320, 240))
        r = run_cli("track", video, "--grid-size", 60, "--out", mnt / "t.npz",
                    "--render", mnt / "r.mp4")
        assert_clean_error(r, "cannot write", "No space left on device")
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# -- The App ----------------------------------------------------------------------------------


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_app_listens_on_loopback_only(make_video, tmp_path, monkeypatch):
    """`pointtrack app` serves 127.0.0.1 only, even where FiftyOne's own default says
    0.0.0.0: loopback connects, the machine's network address is refused."""
    import fiftyone as fo
    import psutil

    import pointtrack.fiftyone as ptf
    from pointtrack.trackers import load_tracker

    make_video("a.mp4", num_frames=4, size=(64, 48))
    name = f"safety-app-{uuid.uuid4().hex[:8]}"
    dataset = ptf.create_dataset(str(tmp_path), name)
    proc = None
    try:
        ptf.track_dataset(dataset, load_tracker("lk"), "tracks", grid_size=2, progress=False)
        port = free_port()
        env = dict(os.environ, FIFTYONE_DEFAULT_APP_ADDRESS="0.0.0.0")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pointtrack", "app", name, "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        deadline = time.time() + 120
        while time.time() < deadline and not _connects("127.0.0.1", port):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        assert _connects("127.0.0.1", port)
        listening = {c.laddr.ip for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listening and listening <= {"127.0.0.1", "::1"}, listening
        others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                  if a.family == socket.AF_INET and not a.address.startswith("127.")]
        for address in others:
            assert not _connects(address, port), address
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        fo.delete_dataset(name)


# -- Memory -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_tiny_video(tmp_path_factory):
    """1500 frames of 32x24: nothing to decode, but 1500 frames at CoTracker3's 512x384."""
    from pointtrack.video import write_video

    frames = np.random.default_rng(0).integers(0, 255, (1, 24, 32, 3), np.uint8)
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    return write_video(path, (frames[0] for _ in range(1500)), fps=30)


def test_offline_clip_too_long_for_memory_errors_before_decoding(long_tiny_video, tmp_path,
                                                                 monkeypatch):
    """With 4 GiB to use, 1500 offline frames (~14 GiB of features) are refused at once with
    advice; sampled down, or online, the same clip passes the check; the process never came
    near the memory it would have needed."""
    ck = tmp_path / "w.pth"
    torch.save(synthetic_state_dict(model_shapes(CoTracker3Offline())), ck)
    env = dict(os.environ, POINTTRACK_MEMORY_LIMIT="4G")
    out = tmp_path / "t.npz"
    r = subprocess.run(
        # VmHWM: this process's peak RSS (ru_maxrss would count pytest's, from the fork).
        [sys.executable, "-c", "import re, sys; from pointtrack.cli import main; "
         "rc = main(sys.argv[1:]); "
         "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); "
         "sys.exit(rc)",
         "track", str(long_tiny_video), "--engine", "cotracker3-offline", "--checkpoint",
         str(ck), "--grid-size", "2", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert_clean_error(r, "1500 frames with cotracker3-offline need about", "4.0 GiB available",
                       "--fps", "--max-frames", "--engine cotracker3-online")
    # Peak RSS in KiB: ~250 MiB; the decoded clip alone would be 885 MiB.
    assert int(r.stdout.split()[-1]) < 600 * 2**10
    assert not out.exists()

    from pointtrack.trackers import PromptError, load_tracker
    from pointtrack.video import count_kept, probe

    info = probe(long_tiny_video)
    offline = load_tracker("cotracker3-offline", checkpoint=str(ck))
    online = load_tracker("cotracker3-online", checkpoint=str(ck))
    monkeypatch.setenv("POINTTRACK_MEMORY_LIMIT", "4G")
    with pytest.raises(PromptError, match="online engine"):
        offline.check_memory(count_kept(info.num_frames, info.fps), info.size, 4)
    offline.check_memory(count_kept(info.num_frames, info.fps, fps=2), info.size, 4)
    offline.check_memory(count_kept(info.num_frames, info.fps, max_frames=100), info.size, 4)
    online.check_memory(count_kept(info.num_frames, info.fps), info.size, 4)
    # The library checks too, before decoding a path.
    with pytest.raises(PromptError, match="1500 frames"):
        offline.track(str(long_tiny_video), grid_size=2)


def test_count_kept_matches_sample_indices():
    from pointtrack.video import count_kept, sample_indices

    rng = np.random.default_rng(0)
    for _ in range(300):
        n, src = int(rng.integers(0, 400)), float(rng.choice([10, 24, 29.97, 30, 60]))
        opts = dict(every=int(rng.integers(1, 5)))
        if rng.random() < 0.4:
            opts = dict(fps=float(rng.uniform(0.5, 70)))
        if rng.random() < 0.3:
            opts["max_frames"] = int(rng.integers(1, 50))
        if rng.random() < 0.3:
            opts["start"] = float(rng.uniform(0, 5))
        if rng.random() < 0.3:
            opts["end"] = opts.get("start", 0) + float(rng.uniform(0.1, 10))
        exact = len(sample_indices(n, src, **opts))
        assert exact <= count_kept(n, src, **opts) <= exact + 2, (n, src, opts)
    # A file that claims 2^40 frames costs nothing to count.
    assert count_kept(2**40, 30.0, fps=2) == pytest.approx(2**40 / 15, rel=1e-6)


# -- Long videos: streaming -------------------------------------------------------------------


def test_lk_stream_equals_track_forward(make_video):
    """The LK stream (one frame held at a time) gives track()'s result for points that start
    on the first frame, whatever the chunks frames come in."""
    from pointtrack.trackers import PromptError, load_tracker
    from pointtrack.video import iter_frames, read_clip

    path, frames = make_video(num_frames=14, size=(96, 64))
    lk = load_tracker("lk")
    ref = lk.track(read_clip(path), grid_size=5)  # decoded whole (track(path) streams)
    stream = lk.stream(grid_size=5)
    decoded = [f.image for f in iter_frames(path)]
    for chunk in (decoded[:1], decoded[1:6], decoded[6:7], decoded[7:]):
        partial = stream.push(np.stack(chunk))
    tracks = stream.finish()
    assert partial.num_frames == 14
    np.testing.assert_array_equal(tracks.xy, ref.xy)
    np.testing.assert_array_equal(tracks.visible, ref.visible)
    assert tracks.visible[1:].mean() > 0.5  # the texture is really tracked
    # A query on a later frame starts there; rows before it are not visible.
    late = lk.stream(queries=[[3, 40.0, 30.0]])
    late.push(np.stack(decoded))
    out = late.finish()
    assert not out.visible[:3, 0].any() and out.visible[3, 0]
    np.testing.assert_allclose(out.xy[10, 0], [40 - 2 * 7, 30 - 7], atol=1.0)  # moved 7 frames
    short = lk.stream(queries=[[20, 1.0, 1.0]])
    short.push(np.stack(decoded))
    with pytest.raises(PromptError, match="frame 20"):
        short.finish()
