"""`pointtrack preprocess` on videos the tests encode: frame counts, rates, sizes, provenance."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np
import pytest

from pointtrack.cli import main
from pointtrack.preprocess import fit_size, make_plan, preprocess_video
from pointtrack.video import VideoError, VideoInfo, iter_frames, probe, write_video

W, H, FPS = 64, 48, 30


def _frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Two grey halves that encode the frame index (grey survives H.264 and resizing)."""
    image = np.empty((h, w, 3), np.uint8)
    image[:, : w // 2] = 16 + (i % 20) * 12
    image[:, w // 2 :] = 16 + (i // 20) * 12
    return image


def _index(image: np.ndarray) -> int:
    """The source frame index `_frame` encoded into ``image`` (read away from the edges)."""
    h, w = image.shape[:2]
    lo = image[h // 4 : 3 * h // 4, w // 8 : 3 * w // 8].mean()
    hi = image[h // 4 : 3 * h // 4, 5 * w // 8 : 7 * w // 8].mean()
    return int(round((lo - 16) / 12)) + 20 * int(round((hi - 16) / 12))


def _encode(path: Path, seconds: float, fps: int = FPS) -> Path:
    return write_video(path, (_frame(i) for i in range(int(seconds * fps))), fps)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("src")
    bad = root / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    return {
        "long": _encode(root / "long.mp4", 12),
        "short": _encode(root / "short.mp4", 3),
        "bad": bad,
    }


def _decoded_indices(path: Path) -> list[int]:
    return [_index(f.image) for f in iter_frames(path)]


def test_default_rule_long_and_short(videos, tmp_path, capsys):
    before = {k: (_digest(p), p.stat().st_mtime_ns) for k, p in videos.items()}
    out = tmp_path / "out"
    assert main(["preprocess", str(videos["long"]), str(videos["short"]), "--out", str(out)]) == 0

    long, short = probe(out / "long.mp4"), probe(out / "short.mp4")
    # 12 s > 10 s: every 3rd of 360 frames, written at 7 fps.
    assert (long.num_frames, long.fps, long.size) == (120, 7.0, (W, H))
    # 3 s: sampled from 30 to 10 fps.
    assert (short.num_frames, short.fps, short.size) == (30, 10.0, (W, H))
    # The frames kept are the right source frames.
    assert _decoded_indices(out / "long.mp4") == list(range(0, 360, 3))
    assert _decoded_indices(out / "short.mp4") == list(range(0, 90, 3))
    # Originals untouched; no temp files left beside the outputs.
    assert before == {k: (_digest(p), p.stat().st_mtime_ns) for k, p in videos.items()}
    assert sorted(p.name for p in out.iterdir()) == ["long.mp4", "short.mp4"]
    assert "120 frames, 64x48 at 7 fps" in capsys.readouterr().out


@pytest.mark.parametrize(
    "options, frames, fps",
    [
        ({"every": 2}, list(range(0, 90, 2)), 15.0),  # same speed
        ({"fps": 5.0}, list(range(0, 90, 6)), 5.0),
        ({"every": 3, "fps": 7.0}, list(range(0, 90, 3)), 7.0),  # the seed's long-video rule
        ({"fps": 60.0}, list(range(90)), 30.0),  # never above the source's rate
    ],
)
def test_overrides(videos, tmp_path, options, frames, fps):
    r = preprocess_video(videos["short"], tmp_path / "o.mp4", **options)
    info = probe(r.output)
    assert r.frame_numbers.tolist() == frames
    assert (info.num_frames, info.fps) == (len(frames), fps)
    assert _decoded_indices(r.output) == frames


def test_max_side_resizes_at_decode(videos, tmp_path):
    r = preprocess_video(videos["short"], tmp_path / "small.mp4", max_side=32)
    assert r.size == (32, 24) and probe(r.output).size == (32, 24)
    assert _decoded_indices(r.output) == r.frame_numbers.tolist()
    # Never upscales.
    r = preprocess_video(videos["short"], tmp_path / "same.mp4", max_side=1000)
    assert probe(r.output).size == (W, H)


def test_fit_size_and_plan():
    assert fit_size((1920, 1080), 512) == (512, 288)
    assert fit_size((1080, 1920), 512) == (288, 512)
    assert fit_size((640, 480), None) is None and fit_size((640, 480), 640) is None
    info = VideoInfo("x.mp4", 640, 480, 5.0, 20, 4.0, 0, "h264")
    assert make_plan(info).out_fps == 5.0  # a 5 fps source is not sped up to 10 fps
    with pytest.raises(VideoError, match="fps must be > 0"):
        make_plan(info, fps=0)
    with pytest.raises(VideoError, match="every must be"):
        make_plan(info, every=0)


def test_directories_keep_layout_and_skip_output(videos, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    _encode(src / "a.mp4", 1)
    _encode(src / "sub" / "b.mov", 1)
    (src / "notes.txt").write_text("not a video")
    out = src / "pre"  # inside the input dir: a second run must not re-encode its outputs
    for _ in range(2):
        assert main(["preprocess", str(src), "--out", str(out), "--max-side", "32"]) == 0
    made = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert made == ["a.mp4", "sub/b.mp4"]
    assert probe(out / "sub" / "b.mp4").size == (32, 24)


def test_bad_input_reported_others_done(videos, tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "missing.mp4"
    argv = [str(videos["bad"]), str(videos["short"]), str(missing), "--out", str(out)]
    assert main(["preprocess", *argv]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pointtrack:")]
    assert len(err) == 2
    assert any("broken.mp4" in line and "not a readable video" in line for line in err)
    assert any("missing.mp4" in line and "no such file" in line for line in err)
    assert probe(out / "short.mp4").num_frames == 30
    assert sorted(p.name for p in out.iterdir()) == ["short.mp4"]


def test_bad_options_are_user_errors(videos, tmp_path, capsys):
    assert main(["preprocess", str(videos["short"]), "--out", str(tmp_path), "--fps", "0"]) == 2
    assert "--fps must be > 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_dataset(videos, tmp_path):
    import fiftyone as fo

    name = f"pointtrack-test-preprocess-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    argv = [str(videos["long"]), str(videos["short"]), "--out", str(out), "--dataset", name]
    try:
        assert main(["preprocess", *argv]) == 0
        assert main(["preprocess", *argv]) == 0  # a re-run refreshes the samples, no duplicates
        dataset = fo.load_dataset(name)
        assert dataset.media_type == "video" and len(dataset) == 2
        sample = dataset.one(fo.ViewField("filepath") == str((out / "long.mp4").resolve()))
        assert sample.source_filepath == str(videos["long"].resolve())
        assert sample.source_frame_numbers == list(range(0, 360, 3))
        assert sample.metadata.total_frame_count == 120
        assert sample.metadata.frame_rate == pytest.approx(7.0)
        assert (sample.metadata.frame_width, sample.metadata.frame_height) == (W, H)
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
