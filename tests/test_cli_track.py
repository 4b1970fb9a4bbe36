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
