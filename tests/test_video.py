from dataclasses import replace

import numpy as np
import pytest
from conftest import encode_with_pyav, set_mp4_rotation, textured_frames

from pointtrack.video import VideoError, iter_frames, probe, read_clip, sample_indices, write_video


def test_write_and_probe_roundtrip(make_video):
    path, frames = make_video(num_frames=15, size=(160, 120), fps=12.5)
    info = probe(path)
    assert (info.width, info.height, info.num_frames) == (160, 120, 15)
    assert info.fps == pytest.approx(12.5)
    assert info.duration == pytest.approx(15 / 12.5, abs=0.1)
    assert info.rotation == 0 and info.codec == "h264"
    clip = read_clip(path)
    assert clip.frames.shape == (15, 120, 160, 3) and clip.frames.dtype == np.uint8
    assert np.array_equal(clip.frame_numbers, np.arange(15))
    # Lossy but close: H.264 at crf 20 on a smooth texture.
    assert np.abs(clip.frames.astype(int) - frames.astype(int)).mean() < 6


def test_resize_at_decode(make_video):
    path, frames = make_video(num_frames=4, size=(160, 120))
    clip = read_clip(path, size=(64, 48))
    assert clip.frames.shape == (4, 48, 64, 3)
    assert clip.source_size == (160, 120) and clip.size == (64, 48)
    # Pixel centres map like the resize does: x_src = (x + 0.5) * 2.5 - 0.5.
    np.testing.assert_allclose(clip.to_source_pixels([[32, 24]]), [[80.75, 60.75]])
    np.testing.assert_allclose(clip.to_frame_pixels(clip.to_source_pixels([[3, 4]])), [[3, 4]])
    # The downscaled frame is the downscaled source, not something else.
    import cv2

    expected = cv2.resize(frames[0], (64, 48), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(clip.frames[0].astype(int) - expected).mean() < 8


def test_sampling_every_fps_max_and_range(make_video):
    path, _ = make_video(num_frames=30, fps=10.0)
    assert read_clip(path, every=3).frame_numbers.tolist() == list(range(0, 30, 3))
    clip = read_clip(path, fps=5)
    assert clip.frame_numbers.tolist() == list(range(0, 30, 2)) and clip.fps == pytest.approx(5)
    assert read_clip(path, fps=4).frame_numbers.tolist()[:5] == [0, 3, 5, 8, 10]
    assert read_clip(path, max_frames=4).frame_numbers.tolist() == [0, 1, 2, 3]
    assert read_clip(path, start=1.0, end=2.0).frame_numbers.tolist() == list(range(10, 20))
    assert read_clip(path, start=1.0, every=4, max_frames=2).frame_numbers.tolist() == [10, 14]
    assert sample_indices(30, 10.0, fps=4).tolist() == read_clip(path, fps=4).frame_numbers.tolist()
    # The kept frames are the right frames: decode all and compare.
    full = read_clip(path)
    sampled = read_clip(path, every=3)
    assert np.array_equal(full.frames[::3], sampled.frames)


def test_iter_frames_streams(make_video):
    path, _ = make_video(num_frames=20)
    it = iter_frames(path, every=5)
    first = next(it)
    assert first.index == 0 and first.image.shape == (120, 160, 3)
    assert [f.index for f in it] == [5, 10, 15]


def test_odd_size_single_frame_and_grayscale(tmp_path):
    frames = textured_frames(num_frames=1, size=(63, 37))
    path = write_video(tmp_path / "odd.mp4", frames, fps=5)
    clip = read_clip(path)
    assert clip.num_frames == 1
    assert clip.frames.shape[1:3] in {(37, 63), (38, 64)}  # padded to even for yuv420p
    gray = textured_frames(num_frames=3, size=(64, 48))[..., :1].repeat(3, axis=-1)
    gpath = encode_with_pyav(tmp_path / "gray.mkv", gray[..., 0], codec="ffv1",
                             pix_fmt="gray", fmt="gray")
    clip = read_clip(gpath)
    assert clip.frames.shape == (3, 48, 64, 3)
    assert np.array_equal(clip.frames[..., 0], clip.frames[..., 2])  # gray becomes equal RGB
    assert np.abs(clip.frames[..., 0].astype(int) - gray[..., 0]).max() <= 1


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata(tmp_path, degrees):
    frames = np.zeros((3, 32, 64, 3), np.uint8)
    frames[:, :, :8] = 255  # a white band on the left edge
    path = write_video(tmp_path / "rot.mp4", frames, fps=10)
    set_mp4_rotation(path, degrees)
    info = probe(path)
    assert info.rotation == degrees
    image = read_clip(path).frames[0]
    expected = np.rot90(frames[0], k=-degrees // 90)  # displayed clockwise
    assert image.shape == expected.shape
    assert (info.width, info.height) == (expected.shape[1], expected.shape[0])
    assert np.abs(image.astype(int) - expected.astype(int)).mean() < 10
    # Resizing respects the displayed orientation.
    w, h = info.width // 2, info.height // 2
    assert read_clip(path, size=(w, h)).frames.shape == (3, h, w, 3)


def test_errors_name_file_and_cause(tmp_path, make_video):
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match="notes.mp4.*not a readable video"):
        probe(text)
    path, _ = make_video(num_frames=30)
    data = bytearray(path.read_bytes())
    # Keep the container header, destroy every byte of the coded frames.
    mdat = data.index(b"mdat")
    data[mdat + 4 :] = bytes(len(data) - mdat - 4)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(VideoError, match="corrupt.mp4"):
        read_clip(corrupt)
    empty = tmp_path / "empty.mp4"
    with pytest.raises(VideoError, match="no frames"):
        write_video(empty, [], fps=10)
    assert not empty.exists() and not list(tmp_path.glob(".empty*"))
    with pytest.raises(VideoError, match="empty time range"):
        read_clip(path, start=2, end=1)


def test_zero_frame_container(tmp_path):
    import av

    path = tmp_path / "zero.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    with pytest.raises(VideoError, match="zero.mp4"):
        read_clip(path)


def test_frame_to_source_pixels_keeps_image_position(tmp_path):
    """A blob at source (100, 60) decoded at a quarter of the size maps back to (100, 60):
    the resize's half-pixel convention, not a plain scale (which is off by 1.5 px here)."""
    import cv2

    yy, xx = np.mgrid[0:240, 0:400]
    blob = np.exp(-((xx - 100.0) ** 2 + (yy - 60.0) ** 2) / (2 * 8.0**2))
    frame = (blob * 255).astype(np.uint8)
    path = encode_with_pyav(tmp_path / "blob.mkv", frame[None].repeat(2, 0), codec="ffv1",
                            pix_fmt="gray", fmt="gray")
    clip = read_clip(path, size=(100, 60))
    small = clip.frames[0, ..., 0].astype(np.float64)
    m = cv2.moments(small)
    centroid = np.array([[m["m10"] / m["m00"], m["m01"] / m["m00"]]])
    np.testing.assert_allclose(clip.to_source_pixels(centroid), [[100, 60]], atol=0.3)


def test_frames_before_a_corrupt_packet_come_in_order_then_the_error(tmp_path, make_video):
    """Frames are converted by workers a few ahead of the decoder; a stream that breaks still
    yields every frame decoded before the break, in order and intact, then one VideoError."""
    path, _ = make_video(num_frames=40)
    data = bytearray(path.read_bytes())
    mdat, moov = data.index(b"mdat"), data.index(b"moov")
    assert moov > mdat  # coded frames first: the index at the end stays intact
    cut = mdat + (moov - mdat) * 2 // 3
    data[cut:moov] = bytes(moov - cut)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    got = []
    with pytest.raises(VideoError, match=r"broken.mp4: corrupt video stream at frame \d+"):
        for frame in iter_frames(broken, size=(80, 60)):
            got.append(frame)
    assert 5 < len(got) < 40
    assert [f.index for f in got] == list(range(len(got)))
    intact = read_clip(path, size=(80, 60), max_frames=len(got))
    assert np.array_equal(np.stack([f.image for f in got]), intact.frames)


def test_read_ahead_keeps_order_hands_over_the_error_and_stops_when_closed(tmp_path,
                                                                          make_video):
    """Frames decoded in a worker thread ahead of their consumer (`read_ahead`, as streams
    are fed): the same frames in order, a broken stream's error after its good frames, and a
    consumer that stops early stops the worker, which closes the file."""
    import threading

    from pointtrack.trackers.base import read_ahead

    path, _ = make_video(num_frames=40)
    plain = [f.image for f in iter_frames(path, size=(80, 60))]
    ahead = list(read_ahead(iter_frames(path, size=(80, 60)), 4))
    assert [f.index for f in ahead] == list(range(40))
    assert np.array_equal(np.stack([f.image for f in ahead]), np.stack(plain))

    data = bytearray(path.read_bytes())
    mdat, moov = data.index(b"mdat"), data.index(b"moov")
    cut = mdat + (moov - mdat) * 2 // 3
    data[cut:moov] = bytes(moov - cut)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    got = []
    with pytest.raises(VideoError, match="broken.mp4: corrupt video stream"):
        for frame in read_ahead(iter_frames(broken, size=(80, 60)), 4):
            got.append(frame.index)
    assert 5 < len(got) < 40 and got == list(range(len(got)))

    closed = []

    def frames():
        try:
            yield from iter_frames(path, size=(80, 60))
        finally:
            closed.append(threading.current_thread().name)

    reader = read_ahead(frames(), 2)
    assert next(reader).index == 0
    reader.close()
    assert closed == ["pointtrack-decode"]
    assert not any(t.name == "pointtrack-decode" for t in threading.enumerate())


def test_probe_is_remembered_until_the_file_changes(tmp_path, make_video):
    path, _ = make_video(name="a.mp4", num_frames=6)
    first = probe(path)
    assert probe(str(path)) == replace(first, path=str(path))  # the caller's spelling kept
    other, _ = make_video(name="b.mp4", num_frames=9, size=(96, 64))
    path.write_bytes(other.read_bytes())  # same name, new content: probed again
    again = probe(path)
    assert (again.num_frames, again.size) == (9, (96, 64))


def test_a_reader_opens_once_for_info_and_frames(tmp_path, make_video, monkeypatch):
    """`VideoReader` gives `probe`'s info and `iter_frames`' frames from one open of the file
    (FFmpeg's stream probe runs at each open), and its info serves later `probe` calls."""
    import av

    from pointtrack import video
    from pointtrack.video import VideoReader

    path, _ = make_video(name="once.mp4", num_frames=12, size=(96, 64), fps=12.0)
    opens = []
    real_open = av.open
    monkeypatch.setattr(video.av, "open", lambda *a, **k: opens.append(a[0]) or real_open(*a, **k))
    with VideoReader(path) as reader:
        info = reader.info
        frames = list(reader.frames(size=(48, 32), every=2))
    assert opens == [str(path)]
    assert probe(path) == info and len(opens) == 1  # remembered: no second open
    expected = list(iter_frames(path, size=(48, 32), every=2))
    assert [f.index for f in frames] == [f.index for f in expected] == list(range(0, 12, 2))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, expected, strict=True))
    assert (info.num_frames, info.size, info.fps) == (12, (96, 64), 12.0)

    # A reader reads its file once; info comes first; a path not yet probed decodes its
    # first frame for the info, and the frames still start at frame 0.
    other, _ = make_video(name="fresh.mp4", num_frames=5)
    reader = VideoReader(other)
    assert reader.info.num_frames == 5
    assert [f.index for f in reader.frames()] == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="once"):
        reader.frames()
    reader = VideoReader(other)
    reader.frames()
    with pytest.raises(RuntimeError, match="before reading"):
        reader.info  # noqa: B018
    reader.close()


def test_tracking_a_path_opens_it_once(tmp_path, make_video, monkeypatch):
    """`Tracker.track(path)` opens the file once, streamed or decoded whole."""
    import av

    from pointtrack import video
    from pointtrack.trackers import load_tracker

    path, _ = make_video(name="walk.mp4", num_frames=8, size=(96, 64))
    opens = []
    real_open = av.open
    monkeypatch.setattr(video.av, "open", lambda *a, **k: opens.append(a[0]) or real_open(*a, **k))
    lk = load_tracker("lk")
    streamed = lk.track(path, grid_size=3)
    assert opens == [str(path)]
    whole = lk.track(path, queries=[[2, 40.0, 30.0]])  # a late query: decoded whole first
    assert len(opens) == 2
    assert streamed.num_frames == whole.num_frames == 8
