import subprocess
import sys

import cv2
import numpy as np
import pytest

from pointtrack import Tracks, probe


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "pointtrack", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )


def test_track_happy_path_writes_all_outputs(make_video, tmp_path):
    path, _ = make_video(num_frames=12, size=(160, 120), fps=10)
    out, csv_path, mp4 = tmp_path / "t.npz", tmp_path / "t.csv", tmp_path / "r.mp4"
    r = run_cli("track", path, "--grid-size", 5, "--every", 2, "--out", out,
                "--csv", csv_path, "--render", mp4)
    assert r.returncode == 0, r.stderr
    tracks = Tracks.load(out)
    assert tracks.xy.shape == (6, 25, 2)
    assert tracks.frame_numbers.tolist() == [0, 2, 4, 6, 8, 10]
    assert tracks.fps == pytest.approx(5.0)
    assert len(csv_path.read_text().splitlines()) == 1 + 6 * 25
    info = probe(mp4)
    assert (info.width, info.height, info.num_frames) == (160, 120, 6)


def test_outputs_get_the_usual_file_mode_and_an_overwritten_file_keeps_its_own(make_video,
                                                                              tmp_path):
    """Outputs are written to a private temp file (mkstemp: 0600) and renamed: without a
    chmod every tracks file, CSV and render came out readable by their owner only."""
    import os
    import stat

    path, _ = make_video(num_frames=6, size=(96, 64), fps=10)
    out, csv_path, mp4 = tmp_path / "t.npz", tmp_path / "t.csv", tmp_path / "r.mp4"
    mask = os.umask(0o022)
    os.umask(mask)
    r = run_cli("track", path, "--grid-size", 2, "--out", out, "--csv", csv_path,
                "--render", mp4)
    assert r.returncode == 0, r.stderr
    for written in (out, csv_path, mp4):
        assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~mask, written
    os.chmod(out, 0o640)
    r = run_cli("track", path, "--grid-size", 3, "--out", out)
    assert r.returncode == 0, r.stderr
    assert Tracks.load(out).xy.shape[1] == 9  # replaced ...
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # ... with its mode kept


def test_queries_file_uses_source_frame_numbers(make_video, tmp_path):
    path, _ = make_video(num_frames=12, size=(160, 120), step=(2, 1))
    qfile = tmp_path / "q.csv"
    qfile.write_text("frame,x,y\n4,80,60\n8,70,50\n")
    out = tmp_path / "t.npz"
    r = run_cli("track", path, "--queries", qfile, "--every", 2, "--out", out)
    assert r.returncode == 0, r.stderr
    tracks = Tracks.load(out)
    assert tracks.queries[:, 0].tolist() == [2, 4]  # rows of the sampled clip
    # Frame 4 -> row 2; source frame 10 (row 5) is 6 frames later: moved by (-12, -6).
    np.testing.assert_allclose(tracks.xy[5, 0], [68, 54], atol=1.0)
    r = run_cli("track", path, "--queries", qfile, "--every", 3, "--out", tmp_path / "x.npz")
    assert r.returncode == 2 and "query frame 4 is not among the tracked frames" in r.stderr
    assert not (tmp_path / "x.npz").exists()


def write(tmp_path, name, content):
    p = tmp_path / name
    if isinstance(content, np.ndarray):
        cv2.imwrite(str(p), content)
    else:
        p.write_text(content)
    return p


@pytest.mark.parametrize(
    "case, message",
    [
        ("unreadable", "not a readable video"),
        ("missing", "no such file"),
        ("grid", "grid size must be >= 0"),
        ("shape", "expected rows of (frame, x, y)"),
        ("nan", "NaN"),
        ("outside", "outside the 160x120 frame"),
        ("range", "query frame 40 is not among the tracked frames"),
        ("mask_size", "mask is 20x10, the video is 160x120"),
        ("mask_empty", "mask is empty"),
        ("engine", "unknown engine"),
    ],
)
def test_bad_input_one_line_exit_2_no_output(make_video, tmp_path, case, message):
    path, _ = make_video(num_frames=6, size=(160, 120))
    args = ["--grid-size", "4"]
    if case == "unreadable":
        path = write(tmp_path, "bad.mp4", "not a video")
    elif case == "missing":
        path = tmp_path / "missing.mp4"
    elif case == "grid":
        args = ["--grid-size", "-2"]
    elif case == "shape":
        args = ["--queries", write(tmp_path, "q.txt", "1 2\n3 4\n")]
    elif case == "nan":
        args = ["--queries", write(tmp_path, "q.txt", "0 nan 4\n")]
    elif case == "outside":
        args = ["--queries", write(tmp_path, "q.txt", "0 500 4\n")]
    elif case == "range":
        args = ["--queries", write(tmp_path, "q.txt", "40 5 4\n")]
    elif case == "mask_size":
        args += ["--mask", write(tmp_path, "m.png", np.full((10, 20), 255, np.uint8))]
    elif case == "mask_empty":
        args += ["--mask", write(tmp_path, "m.png", np.zeros((120, 160), np.uint8))]
    elif case == "engine":
        args += ["--engine", "nope"]
    out = tmp_path / "out.npz"
    r = run_cli("track", path, *args, "--out", out, "--render", tmp_path / "r.mp4")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not (tmp_path / "r.mp4").exists()


def test_info(make_video):
    path, _ = make_video(num_frames=7, size=(160, 120), fps=10)
    r = run_cli("info", path)
    assert r.returncode == 0 and "160x120" in r.stdout and "7" in r.stdout


# -- Streaming: decoded a batch at a time into the engine's stream ----------------------------


def track_both_ways(monkeypatch, tmp_path, video, *args) -> tuple[Tracks, Tracks]:
    """`track VIDEO ARGS` streamed (5 frames a push) and from the whole decoded clip."""
    from pointtrack.cli import main
    from pointtrack.cli import track as track_cli

    def refuse(*_):
        raise AssertionError("the clip was decoded whole, not streamed")

    monkeypatch.setattr("pointtrack.trackers.base.STREAM_BATCH_FRAMES", 5)
    with monkeypatch.context() as m:
        m.setattr(track_cli, "track_decoded", refuse)
        assert main(["track", str(video), *map(str, args), "--out", str(tmp_path / "s.npz")]) == 0
    with monkeypatch.context() as m:
        m.setattr(track_cli, "use_stream", lambda *_: False)
        assert main(["track", str(video), *map(str, args), "--out", str(tmp_path / "d.npz")]) == 0
    return Tracks.load(tmp_path / "s.npz"), Tracks.load(tmp_path / "d.npz")


@pytest.mark.parametrize("args, frames", [
    (["--grid-size", 5, "--every", 2], [0, 2, 4, 6, 8, 10]),
    (["--grid-size", 4, "--fps", 4, "--start", 0.3, "--grid-query-frame", 3], [3, 6, 8, 11]),
    (["--queries", "QFILE", "--start", 0.2, "--max-frames", 7], list(range(2, 9))),
])
def test_lk_streamed_equals_decoded(make_video, tmp_path, monkeypatch, args, frames):
    """The CLI streams LK (points on the first tracked frame): the same Tracks as tracking
    the decoded clip, whatever the sampling; pushes of 5 frames cross the clip's middle."""
    path, _ = make_video(num_frames=12, size=(160, 120), fps=10)
    qfile = tmp_path / "q.csv"
    qfile.write_text("frame,x,y\n2,80,60\n2,30.5,20.25\n2,0,119\n")
    args = [qfile if a == "QFILE" else a for a in args]
    streamed, decoded = track_both_ways(monkeypatch, tmp_path, path, *args)
    assert streamed.frame_numbers.tolist() == frames
    assert streamed.equals(decoded)
    assert streamed.visible[1:].mean() > 0.5  # the texture is really tracked


def test_lk_late_queries_are_not_streamed(make_video, tmp_path, monkeypatch):
    """LK's stream tracks forward only: a point that starts after the first frame is tracked
    from the decoded clip, backward too."""
    from pointtrack.cli import main
    from pointtrack.cli import track as track_cli

    path, _ = make_video(num_frames=12, size=(160, 120), fps=10)
    qfile = tmp_path / "q.csv"
    qfile.write_text("0,80,60\n4,70,50\n")
    decoded = []
    track_decoded = track_cli.track_decoded
    monkeypatch.setattr(track_cli, "track_decoded",
                        lambda *a: decoded.append(1) or track_decoded(*a))
    out = tmp_path / "t.npz"
    assert main(["track", str(path), "--queries", str(qfile), "--out", str(out)]) == 0
    tracks = Tracks.load(out)
    assert decoded and tracks.visible[:4, 1].any()  # tracked back from frame 4
    assert "stream" not in tracks.options


def synthetic_checkpoint(tmp_path_factory, model_class, name: str):
    """A checkpoint file of ``model_class``'s synthetic weights (the parity recipe)."""
    import torch

    from pointtrack.models.weights import model_shapes, synthetic_state_dict

    path = tmp_path_factory.mktemp("weights") / name
    torch.save(synthetic_state_dict(model_shapes(model_class()), seed=0), path)
    return path


@pytest.fixture(scope="module")
def online_checkpoint(tmp_path_factory):
    from pointtrack.models.cotracker3 import CoTracker3Online

    return synthetic_checkpoint(tmp_path_factory, CoTracker3Online, "online.pth")


def test_online_streamed_equals_decoded(make_video, tmp_path, monkeypatch, online_checkpoint):
    """cotracker3-online (synthetic weights) streamed in pushes of 5 frames: the same Tracks
    as the whole decoded clip, over two windows, with queries on a later frame too."""
    path, _ = make_video(num_frames=20, size=(96, 64), fps=10)
    qfile = tmp_path / "q.csv"
    qfile.write_text("1,40,30\n9,70.5,20\n19,95,63\n")
    streamed, decoded = track_both_ways(
        monkeypatch, tmp_path, path, "--engine", "cotracker3-online", "--checkpoint",
        online_checkpoint, "--device", "cpu", "--queries", qfile, "--start", 0.1)
    assert streamed.frame_numbers.tolist() == list(range(1, 20))
    assert streamed.frame_size == (96, 64) and streamed.fps == pytest.approx(10.0)
    assert streamed.equals(decoded)
    # A mask (in source pixels) on a later grid frame; one window, to keep the test short.
    mask = np.zeros((64, 96), np.uint8)
    mask[10:50, 20:80] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    streamed, decoded = track_both_ways(
        monkeypatch, tmp_path, path, "--engine", "cotracker3-online", "--checkpoint",
        online_checkpoint, "--device", "cpu", "--grid-size", 4, "--mask", tmp_path / "m.png",
        "--grid-query-frame", 6, "--max-frames", 9)
    assert streamed.num_frames == 9 and streamed.equals(decoded)


@pytest.fixture(scope="module")
def offline_checkpoint(tmp_path_factory):
    from pointtrack.models.cotracker3 import CoTracker3Offline

    return synthetic_checkpoint(tmp_path_factory, CoTracker3Offline, "offline.pth")


def test_offline_streamed_equals_decoded(make_video, tmp_path, monkeypatch, offline_checkpoint):
    """cotracker3-offline encodes each batch as it decodes, so the CLI streams every prompt
    into it: backward tracking of late queries on every second frame gives the Tracks of
    the whole decoded clip."""
    path, _ = make_video(num_frames=16, size=(96, 64), fps=10)
    qfile = tmp_path / "q.csv"
    qfile.write_text("0,40,30\n8,70.5,20\n14,95,63\n")
    streamed, decoded = track_both_ways(
        monkeypatch, tmp_path, path, "--engine", "cotracker3-offline", "--checkpoint",
        offline_checkpoint, "--device", "cpu", "--queries", qfile, "--every", 2, "--backward")
    assert streamed.frame_numbers.tolist() == list(range(0, 16, 2))
    assert streamed.equals(decoded)
    assert streamed.visible[:4, 1].any()  # the point from frame 8, tracked back


def test_streamed_run_is_not_refused_for_memory(tmp_path, monkeypatch):
    """A streamed run holds a batch of frames, not the clip: 1500 frames pass a memory limit
    that refuses decoding them whole (and --backward, which needs the whole clip)."""
    from pointtrack.cli import main
    from pointtrack.trackers import PromptError, load_tracker
    from pointtrack.video import write_video

    frames = np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8)
    video = write_video(tmp_path / "long.mp4", (frames for _ in range(1500)), fps=30)
    # LK at 32x24: ~4.6 MB for the decoded clip and its gray copies, ~0.2 MB streamed.
    monkeypatch.setenv("POINTTRACK_MEMORY_LIMIT", "2M")
    out = tmp_path / "t.npz"
    assert main(["track", str(video), "--grid-size", "2", "--out", str(out)]) == 0
    assert Tracks.load(out).num_frames == 1500
    assert main(["track", str(video), "--grid-size", "2", "--backward",
                 "--out", str(tmp_path / "b.npz")]) == 2
    assert not (tmp_path / "b.npz").exists()
    # Online CoTracker3 holds one window: the check passes for a clip of any length.
    online = load_tracker("cotracker3-online", checkpoint="unused.pth")
    monkeypatch.setenv("POINTTRACK_MEMORY_LIMIT", "2G")
    with pytest.raises(PromptError, match="100000 frames with cotracker3-online"):
        online.check_memory(100_000, (1920, 1080), 100)
    online.check_memory(100_000, (1920, 1080), 100, held_frames=64)


def test_compile_flag_reaches_the_engine_only_when_given():
    """`--compile` / `--no-compile` pass the engine's option; without either, the engine's
    default (off) stands, for `track` and the commands that share its engine flags."""
    from pointtrack.cli import build_parser
    from pointtrack.cli.track import engine_options

    parser = build_parser()
    for argv, want in ((["--compile"], {"compile": True}), (["--no-compile"], {"compile": False}),
                       ([], {})):
        args = parser.parse_args(["track", "clip.mp4", "--engine", "cotracker3-offline", *argv])
        assert engine_options(args) == want
        args = parser.parse_args(["dataset", "track", "ds", "--engine", "cotracker3-offline",
                                  *argv])
        assert engine_options(args) == want
