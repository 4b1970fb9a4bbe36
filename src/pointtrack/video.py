"""Video I/O with PyAV: metadata, decode-time resizing and frame sampling, mp4 writing.

Frames are always uint8 RGB ``(H, W, 3)``; nothing here makes full-resolution float video.
Every decoded frame keeps its 0-based source frame index, so results map back to the source.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .tracks import atomic_path


class VideoError(RuntimeError):
    """A video that cannot be read or written; the message names the file and the cause."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds. ``width``/``height`` are the displayed size (after rotation)."""

    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    rotation: int
    codec: str

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


@dataclass
class Clip:
    """Decoded frames ``(T, H, W, 3)`` uint8 and where they came from.

    ``frame_numbers (T,)`` are 0-based source frame indices, ``source_size`` is the (W, H) of
    the source video (frames may be resized), ``fps`` the frame rate of the rows kept.
    """

    frames: np.ndarray
    frame_numbers: np.ndarray
    fps: float
    source_size: tuple[int, int]
    path: str | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the decoded frames."""
        return (int(self.frames.shape[2]), int(self.frames.shape[1]))

    @property
    def scale(self) -> np.ndarray:
        """Factor (sx, sy) from frame pixels to source pixels."""
        (w, h), (W, H) = self.size, self.source_size
        return np.array([W / w, H / h], dtype=np.float64)

    # Pixel centres are integers. A resize maps source centre x to frame (x + 0.5) / s - 0.5
    # (what swscale and cv2 do), so a point keeps its place in the image, not its index.

    def to_frame_pixels(self, xy: np.ndarray) -> np.ndarray:
        return (np.asarray(xy, dtype=np.float64) + 0.5) / self.scale - 0.5

    def to_source_pixels(self, xy: np.ndarray, dtype: type = np.float64) -> np.ndarray:
        """``xy (..., 2)`` frame pixels -> a new ``dtype`` array of source pixels (float32
        for dense tracks: the same passes at half the memory traffic)."""
        out = np.array(xy, dtype=dtype)  # a copy, updated in place
        out += 0.5
        out *= self.scale.astype(dtype)
        out -= 0.5
        return out


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video ({_reason(e)})") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _rotation(stream, first_frame=None) -> int:
    """Clockwise display rotation in degrees (0, 90, 180, 270)."""
    deg = None
    if first_frame is not None:
        deg = getattr(first_frame, "rotation", None)
    if deg is None:
        rotate = stream.metadata.get("rotate")
        deg = -int(rotate) if rotate is not None else 0
    # PyAV reports the display matrix angle counter-clockwise; we rotate clockwise.
    return int(round(-deg)) % 360


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's metadata (decodes one frame, to learn the rotation reliably).

    Remembered per file (path, size and modification time): a tracking call probes for its
    memory check and again to decode, which cost 0.1 s each for a 1080p file on 16 cores.
    """
    key = _file_key(path)
    info = _remembered(key)
    if info is None:
        info = _probe(path)
        _remember(key, info)
    return replace(info, path=str(path))


_INFOS: OrderedDict[tuple, VideoInfo] = OrderedDict()  # the last few files probed
_INFOS_LOCK = threading.Lock()


def _file_key(path: str | os.PathLike) -> tuple | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None  # _open names what is wrong
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def _remembered(key: tuple | None) -> VideoInfo | None:
    if key is None:
        return None
    with _INFOS_LOCK:
        info = _INFOS.get(key)
        if info is not None:
            _INFOS.move_to_end(key)
        return info


def _remember(key: tuple | None, info: VideoInfo) -> None:
    if key is None:
        return
    with _INFOS_LOCK:
        _INFOS[key] = info
        while len(_INFOS) > 64:
            _INFOS.popitem(last=False)


def _probe(path: str | os.PathLike) -> VideoInfo:
    with _open(path) as container:
        stream = container.streams.video[0]
        # One keyframe: FFmpeg's default of a thread per core only costs the set-up of each.
        stream.thread_count = 1
        return _info(path, container, stream, _first_frame(path, container.decode(stream)))


def _first_frame(path, decoded: Iterator[av.VideoFrame]) -> av.VideoFrame:
    try:
        first = next(decoded, None)
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: corrupt video stream ({_reason(e)})") from e
    if first is None:
        raise VideoError(f"{path}: video has zero frames")
    return first


def _info(path, container, stream, first: av.VideoFrame) -> VideoInfo:
    """The `VideoInfo` of an open file, from its stream and first decoded frame."""
    fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
    rotation = _rotation(stream, first)
    w, h = first.width, first.height
    if rotation in (90, 270):
        w, h = h, w
    num_frames = int(stream.frames or 0)
    duration = 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    if num_frames <= 0:
        num_frames = _count_frames(path)
    if duration <= 0 and fps > 0:
        duration = num_frames / fps
    return VideoInfo(
        path=str(path),
        width=w,
        height=h,
        fps=fps,
        num_frames=num_frames,
        duration=duration,
        rotation=rotation,
        codec=stream.codec_context.name,
    )


def _count_frames(path) -> int:
    """Frame count by demuxing (no decoding), for containers that do not store it."""
    with _open(path) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size)


def sample_indices(
    num_frames: int,
    source_fps: float,
    *,
    every: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Source frame indices kept by the sampling options (see `iter_frames`)."""
    _check_sampling(every, fps, max_frames, start, end, source_fps)
    keep = []
    for i in range(num_frames):
        if _keeps(i, source_fps, every, fps, start, end):
            keep.append(i)
        if max_frames is not None and len(keep) >= max_frames:
            break
    return np.asarray(keep, dtype=np.int64)


def count_kept(
    num_frames: int,
    source_fps: float,
    *,
    every: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> int:
    """About how many frames the sampling options keep (at most 2 more than
    `sample_indices`), in constant time: a file may claim billions of frames."""
    _check_sampling(every, fps, max_frames, start, end, source_fps)
    first, last = 0, max(int(num_frames), 0)
    if source_fps > 0:  # (min before int: a time of 1e308 s is a frame beyond any int)
        if start is not None:
            first = int(min(last, np.ceil(start * source_fps - 1e-9)))
        if end is not None:
            last = max(first, int(min(last, np.ceil(end * source_fps - 1e-9))))
    n = last - first
    if fps is not None and fps < source_fps:
        n = min(n, int(np.ceil(n * fps / source_fps)) + 1)
    else:
        n = -(-n // every)
    return min(n, max_frames) if max_frames is not None else n


def _check_sampling(every, fps, max_frames, start, end, source_fps):
    if every is None or int(every) != every or every < 1:
        raise VideoError(f"every must be an integer >= 1, got {every}")
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise VideoError(f"fps must be a number > 0, got {fps}")
    for name, value in (("start", start), ("end", end)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise VideoError(f"{name} must be a time >= 0 in seconds, got {value}")
    if every != 1 and fps is not None:
        raise VideoError("give either every or fps, not both")
    if max_frames is not None and max_frames < 1:
        raise VideoError(f"max frames must be >= 1, got {max_frames}")
    if (start is not None or end is not None or fps is not None) and not source_fps > 0:
        raise VideoError("the video has no frame rate, so time-based sampling is not possible")
    if start is not None and end is not None and end <= start:
        raise VideoError(f"empty time range: start {start} s >= end {end} s")


def _keeps(i, source_fps, every, fps, start, end) -> bool:
    t = i / source_fps if source_fps else 0.0
    if start is not None and t < start - 1e-9:
        return False
    if end is not None and t >= end - 1e-9:
        return False
    j = i - (int(np.ceil(start * source_fps - 1e-9)) if start is not None else 0)
    if fps is not None and fps < source_fps:
        # Keep frame j when a sample time k / fps falls in ((j - 1) / F, j / F].
        r = fps / source_fps
        return np.floor(j * r + 1e-9) > np.floor((j - 1) * r + 1e-9)
    return j % every == 0


@dataclass
class Frame:
    """One decoded frame: its 0-based source index and its pixels ``(H, W, 3)`` uint8."""

    index: int
    image: np.ndarray


#: Threads that convert and resize decoded frames (`iter_frames`).
RGB_WORKERS = 4
#: FFmpeg's decoding threads per video (0: its own choice, a thread per core).
DECODE_THREADS = 0


def iter_frames(
    path: str | os.PathLike,
    *,
    size: tuple[int, int] | None = None,
    every: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> Iterator[Frame]:
    """Decode frames one by one as uint8 RGB, resized at decode time.

    Args:
        size: (W, H) to resize to (after rotation), or None for the source size.
        every: keep every k-th frame.
        fps: keep frames at about this rate (instead of ``every``).
        max_frames: stop after this many kept frames.
        start, end: time range in seconds (end exclusive).
    """
    yield from VideoReader(path).frames(size=size, every=every, fps=fps, max_frames=max_frames,
                                        start=start, end=end)


class VideoReader:
    """One open video file: its `info` and its `frames`, from a single open.

    Opening a file runs FFmpeg's stream probe, which decodes a few frames (0.08 s for a
    1080p H.264 file on 16 cores, 0.11 s on 2), and `probe` decodes the first frame once
    more: `probe` followed by `iter_frames` pays both twice. A reader opens once; `info`
    keeps the first frame it decodes for `frames`. Close it (or use ``with``) unless
    `frames` ran to its end, which closes it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path
        self._container = _open(path)
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._stream.thread_count = DECODE_THREADS
        self._decoded = self._container.decode(self._stream)
        self._first: av.VideoFrame | None = None  # decoded by `info`, not yet handed out
        self._info: VideoInfo | None = None
        self._reading = False
        self._closed = False

    @property
    def info(self) -> VideoInfo:
        """The file's `VideoInfo` (remembered with `probe`'s, so either serves the other)."""
        if self._info is None:
            if self._reading:
                raise RuntimeError("VideoReader.info: ask before reading frames")
            key = _file_key(self.path)
            info = _remembered(key)
            if info is None:
                self._first = _first_frame(self.path, self._decoded)
                info = _info(self.path, self._container, self._stream, self._first)
                _remember(key, info)
            self._info = replace(info, path=str(self.path))
        return self._info

    def frames(
        self,
        *,
        size: tuple[int, int] | None = None,
        every: int = 1,
        fps: float | None = None,
        max_frames: int | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> Iterator[Frame]:
        """The frames `iter_frames` gives for these options; once per reader, which closes
        when they end."""
        if self._reading or self._closed:
            raise RuntimeError("VideoReader.frames: a reader reads its file once")
        self._reading = True
        return self._frames(size, every, fps, max_frames, start, end)

    def _frames(self, size, every, fps, max_frames, start, end) -> Iterator[Frame]:
        path, stream = self.path, self._stream
        # Converting and resizing a frame (swscale, GIL released) costs more than decoding it
        # (FFmpeg's own threads): a few workers convert frames in order, a bounded few ahead.
        workers = min(RGB_WORKERS, os.cpu_count() or 1)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="pointtrack-rgb")
        ahead: deque[tuple[int, Future]] = deque()
        try:
            source_fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
            _check_sampling(every, fps, max_frames, start, end, source_fps)
            decoded = self._decoded
            if self._first is not None:
                decoded, self._first = itertools.chain([self._first], decoded), None
            kept = 0
            rotation = None
            i = -1
            corrupt = None
            try:
                for frame in decoded:
                    i += 1
                    if end is not None and source_fps and i / source_fps >= end - 1e-9:
                        break
                    if not _keeps(i, source_fps, every, fps, start, end):
                        continue
                    if rotation is None:
                        rotation = _rotation(stream, frame)
                    ahead.append((i, pool.submit(_to_rgb, frame, size, rotation)))
                    kept += 1
                    if len(ahead) > 2 * workers:
                        index, image = ahead.popleft()
                        yield Frame(index, image.result())
                    if max_frames is not None and kept >= max_frames:
                        break
            except av.error.FFmpegError as e:
                corrupt = VideoError(
                    f"{path}: corrupt video stream at frame {i + 1} ({_reason(e)})")
                corrupt.__cause__ = e
            while ahead:  # the frames decoded before the end (or the corruption) come first
                index, image = ahead.popleft()
                yield Frame(index, image.result())
            if corrupt is not None:
                raise corrupt
            if i < 0:
                raise VideoError(f"{path}: video has zero frames")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._first = None
            self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None, rotation: int) -> np.ndarray:
    if size is None:
        image = frame.to_ndarray(format="rgb24")
    else:
        w, h = size
        if rotation in (90, 270):  # resize before rotating: swap the target size
            w, h = h, w
        # swscale resizes while converting: the full-size RGB frame is never made.
        image = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
    if rotation:
        image = np.ascontiguousarray(np.rot90(image, k=-rotation // 90))
    return image


def read_clip(
    video: str | os.PathLike | VideoReader,
    *,
    size: tuple[int, int] | None = None,
    every: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    progress: bool = False,
) -> Clip:
    """Decode a clip into memory as uint8 ``(T, H, W, 3)`` (options as in `iter_frames`);
    ``video`` is a path or a `VideoReader` that has not read its frames (it is closed)."""
    reader = video if isinstance(video, VideoReader) else VideoReader(video)
    with reader:
        info = reader.info
        path = reader.path
        frames_iter = reader.frames(size=size, every=every, fps=fps, max_frames=max_frames,
                                    start=start, end=end)
        if progress:
            from tqdm.auto import tqdm

            # disable=None: no bar when stderr is not a terminal (logs, CI, pipes).
            total = len(sample_indices(info.num_frames, info.fps, every=every, fps=fps,
                                       max_frames=max_frames, start=start, end=end))
            frames_iter = tqdm(frames_iter, desc="decode", unit="frame", leave=False,
                               disable=None, total=total)
        indices, images = [], []
        for frame in frames_iter:
            indices.append(frame.index)
            images.append(frame.image)
    if not images:
        raise VideoError(f"{path}: no frames in the requested range")
    return Clip(
        frames=np.stack(images),
        frame_numbers=np.asarray(indices, dtype=np.int64),
        fps=sampled_fps(info.fps, every=every, fps=fps),
        source_size=info.size,
        path=str(path),
    )


def sampled_fps(source_fps: float, *, every: int = 1, fps: float | None = None) -> float:
    """Frame rate of the frames the sampling options keep (0 when the source has none)."""
    step = every if fps is None else max(source_fps / fps, 1.0)
    return source_fps / step if source_fps else 0.0


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    crf: int = 20,
) -> Path:
    """Write uint8 RGB frames ``(H, W, 3)`` to an H.264/yuv420p mp4 that browsers play.

    Odd sizes are padded by one pixel (yuv420p needs even sizes). Written atomically.
    """
    path = Path(path)
    rate = Fraction(fps if fps and fps > 0 else 30).limit_denominator(1001)
    count = 0
    with atomic_path(path) as tmp:
        try:
            with av.open(str(tmp), mode="w", format="mp4") as container:
                stream = None
                for image in frames:
                    image = np.asarray(image)
                    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                        raise VideoError(f"{path}: frames must be (H, W, 3) uint8, got "
                                         f"{image.dtype} {image.shape}")
                    h, w = image.shape[:2]
                    if stream is None:
                        stream = container.add_stream("libx264", rate=rate)
                        stream.width, stream.height = w + w % 2, h + h % 2
                        stream.pix_fmt = "yuv420p"
                        stream.options = {"crf": str(crf), "preset": "veryfast"}
                    if (w + w % 2, h + h % 2) != (stream.width, stream.height):
                        raise VideoError(f"{path}: frame {count} is {w}x{h}, expected "
                                         f"{stream.width}x{stream.height}")
                    if w % 2 or h % 2:
                        image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                    for packet in stream.encode(frame):
                        container.mux(packet)
                    count += 1
                if stream is None:
                    raise VideoError(f"{path}: no frames to write")
                for packet in stream.encode():
                    container.mux(packet)
        except av.error.FFmpegError as e:
            # A full disk or a failing writer: PyAV wraps a Python file's error in a
            # callback error, so name the cause it carries.
            cause = e.__context__ if isinstance(e, av.error.PyAVCallbackError) else e
            raise VideoError(f"{path}: cannot write video ({_reason(cause)})") from e
    return path
