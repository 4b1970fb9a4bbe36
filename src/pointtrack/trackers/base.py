"""The one tracker interface, and the input checks every engine shares."""

from __future__ import annotations

import contextlib
import copy
import os
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..tracks import Tracks
from ..video import Clip, Frame, VideoError, read_clip


class PromptError(ValueError):
    """Queries, grid size or mask that cannot be tracked (names the problem)."""


#: Bytes of memory tracking may use (``4G``, ``512M`` or a number of bytes); default: what
#: the machine has available now.
MEMORY_LIMIT_ENV = "POINTTRACK_MEMORY_LIMIT"


def available_memory() -> int:
    """Host memory tracking may use: ``$POINTTRACK_MEMORY_LIMIT`` or what is available."""
    limit = os.environ.get(MEMORY_LIMIT_ENV, "").strip().upper()
    if limit:
        units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
        try:
            if limit[-1] in units:
                return int(float(limit[:-1]) * units[limit[-1]])
            return int(float(limit))
        except ValueError:
            raise PromptError(f"{MEMORY_LIMIT_ENV}={limit!r}: expected bytes, or a number "
                              f"with K, M, G or T") from None
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass
class Prompt:
    """Checked tracking prompt, in the pixels of the clip's frames (not source pixels).

    ``queries`` is ``(N, 3)`` as (t, x, y) with t a row of the clip; None for grid mode.
    """

    grid_size: int = 0
    queries: np.ndarray | None = None
    segm_mask: np.ndarray | None = None
    grid_query_frame: int = 0
    backward_tracking: bool = False


VideoLike = Any  # a path, a Clip, a uint8 array (T, H, W, 3) or a tensor of the same layout


def as_clip(video: VideoLike, size: tuple[int, int] | None = None, **sampling) -> Clip:
    """A `Clip` from a path (decoded, resized to ``size`` (W, H) at decode time), a `Clip`, or
    frames ``(T, H, W, 3)`` uint8 (numpy or torch)."""
    if isinstance(video, Clip):
        return video
    if isinstance(video, str | os.PathLike):
        return read_clip(video, size=size, **sampling)
    if hasattr(video, "detach"):  # torch tensor
        video = video.detach().cpu().numpy()
    frames = np.asarray(video)
    if frames.ndim == 3:  # single grayscale-less frame (H, W, 3) -> one-frame clip
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise PromptError(f"video array must be (T, H, W, 3), got {frames.shape}")
    if frames.shape[0] == 0:
        raise PromptError("video array has zero frames")
    if frames.dtype != np.uint8:
        if np.issubdtype(frames.dtype, np.floating) and frames.max(initial=0) <= 1.0:
            frames = frames * 255.0
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    T, H, W = frames.shape[:3]
    return Clip(frames=frames, frame_numbers=np.arange(T), fps=0.0, source_size=(W, H))


STREAM_BATCH_FRAMES = 32  # four steps of online CoTracker3's window
STREAM_BATCH_BYTES = 64 * 2**20


def stream_batch(size: tuple[int, int]) -> int:
    """Frames of ``size`` (W, H) to decode and push into a stream at once: few enough to keep
    memory bounded at any resolution, enough that per-push work is amortised."""
    return max(1, min(STREAM_BATCH_FRAMES, STREAM_BATCH_BYTES // (size[0] * size[1] * 3)))


def stream_held_frames(size: tuple[int, int]) -> int:
    """Frames of ``size`` (W, H) held at once by `feed_and_finish`: the batch being gathered,
    a batch decoded ahead (`read_ahead`) and the last one fed (a window keeps views of it)."""
    return 3 * stream_batch(size)


def read_ahead(items: Iterable[Any], ahead: int) -> Iterator[Any]:
    """``items`` made by a worker thread up to ``ahead`` in advance, so that a decoder goes
    on decoding while its consumer launches GPU work or waits for it (FFmpeg and swscale run
    without the GIL). Errors arrive in order; closing the iterator stops the worker."""
    slots: queue.Queue = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def work() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # handed over: the consumer raises it
            put((end, e))
        finally:
            close = getattr(source, "close", None)
            if close is not None:  # a generator's own cleanup (a decoder closes its file)
                close()

    worker = threading.Thread(target=work, name="pointtrack-decode", daemon=True)
    worker.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def feed_and_finish(tracker: Tracker, stream: Any, frames: Iterable[Frame], batch: int,
                    fps: float, what: str) -> Tracks:
    """Feed decoded ``frames`` into ``tracker``'s ``stream`` ``batch`` at a time and finish
    it: the tracks with the frames' source numbers (a stream counts rows from its first
    frame) and ``fps`` (the sampled rate). `VideoError` naming ``what`` when no frame came.
    The frames are made a batch ahead in another thread (`read_ahead`); the batches' model
    calls share one `Tracker.heap` scope."""
    numbers: list[int] = []
    chunk: list[np.ndarray] = []
    with tracker.heap():
        for frame in read_ahead(frames, batch):
            numbers.append(frame.index)
            chunk.append(frame.image)
            if len(chunk) == batch:
                stream.feed(np.stack(chunk))
                chunk = []
        if chunk:
            stream.feed(np.stack(chunk))
        if not numbers:
            raise VideoError(f"{what}: no frames in the requested range")
        tracks = stream.finish()
    return replace(tracks, frame_numbers=np.asarray(numbers, np.int64), fps=fps)


def stream_frames(frames: Any, size: tuple[int, int] | None) -> np.ndarray:
    """A batch pushed to a stream as uint8 ``(T, H, W, 3)`` (a single ``(H, W, 3)`` frame
    allowed), checked against the stream's frame ``size`` (W, H) once it has one."""
    if hasattr(frames, "detach"):  # torch tensor
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise PromptError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} "
                          f"{frames.shape}")
    new = (frames.shape[2], frames.shape[1])
    if size is not None and new != size:
        raise PromptError(f"frame size changed from {size[0]}x{size[1]} to {new[0]}x{new[1]}")
    return frames


def blank_clip(num_frames: int, size: tuple[int, int],
               source_size: tuple[int, int] | None = None, frame_numbers: Any = None,
               fps: float = 0.0) -> Clip:
    """A clip of ``num_frames`` frames of ``size`` (W, H) that holds no pixels (a broadcast
    zero): prompts and results are checked and converted against it before, or without,
    decoding. ``source_size`` defaults to ``size``; frame numbers to 0..T-1."""
    w, h = size
    frames = np.broadcast_to(np.zeros((), np.uint8), (num_frames, h, w, 3))
    numbers = np.arange(num_frames) if frame_numbers is None else np.asarray(frame_numbers)
    return Clip(frames, numbers, fps, source_size or size)


def frames_needed(queries: Any, grid_query_frame: int) -> int:
    """Frames a prompt refers to: one past its last query frame (or its grid's frame).
    Malformed queries count as none here; `check_prompt` names their problem."""
    last = int(grid_query_frame)
    if queries is not None and hasattr(queries, "detach"):
        queries = queries.detach().cpu().numpy()
    if queries is not None and np.ndim(queries) == 2 and np.shape(queries)[1] == 3 \
            and np.size(queries):
        t = np.asarray(queries, dtype=np.float64)[:, 0]
        if np.isfinite(t).all():
            last = max(last, int(t.max()))
    return max(last, 0) + 1


def starts_on_first_frame(queries: Any, grid_query_frame: int) -> bool:
    """Whether every point of a prompt starts on the clip's first frame (row 0)."""
    if queries is not None and np.ndim(queries) == 2 and np.shape(queries)[1] == 3:
        return bool(np.all(np.asarray(queries, dtype=np.float64)[:, 0] == 0))
    return grid_query_frame == 0


def check_stream_prompt(size: tuple[int, int], source_size: tuple[int, int] | None,
                        **prompt: Any) -> tuple[Prompt, Clip]:
    """A stream's prompt, checked when its first frames arrive (``size`` (W, H), resized
    from ``source_size``): on a pixel-less clip just long enough for every query frame,
    which is returned too (its length is the frames the stream must receive)."""
    needed = frames_needed(prompt.get("queries"), prompt.get("grid_query_frame", 0))
    # No frame numbers: a query may name frame 10^12, which the stream's end then refuses.
    clip = blank_clip(needed, size, source_size, frame_numbers=np.empty(0, np.int64))
    return check_prompt(clip, **prompt), clip


def check_stream_length(received: int, needed: int) -> None:
    """`PromptError` at a stream's end when it stopped before a frame its prompt refers to."""
    if received == 0:
        raise PromptError("no frames were pushed")
    if received < needed:
        raise PromptError(f"the prompt refers to frame {needed - 1}, but the stream ended "
                          f"after {received} frames")


def check_prompt(
    clip: Clip,
    *,
    grid_size: int = 0,
    queries: Any = None,
    segm_mask: Any = None,
    grid_query_frame: int = 0,
    backward_tracking: bool = False,
) -> Prompt:
    """Validate a prompt against the clip; queries come in source pixels (t = clip row) and
    leave in the clip's frame pixels. Raises `PromptError` naming the problem."""
    T = clip.num_frames
    W, H = clip.source_size
    if isinstance(grid_size, bool) or not isinstance(grid_size, int | np.integer):
        raise PromptError(f"grid size must be an integer, got {grid_size!r}")
    if grid_size < 0:
        raise PromptError(f"grid size must be >= 0, got {grid_size}")
    if grid_size > max(W, H):
        # Finer than the pixels, a grid only repeats points (and a huge one fills memory).
        raise PromptError(f"grid size {grid_size} is finer than the {W}x{H} frame "
                          f"(at most {max(W, H)})")
    if not 0 <= grid_query_frame < T:
        raise PromptError(f"grid query frame {grid_query_frame} is outside the clip (0..{T - 1})")
    q = None
    if queries is not None:
        if hasattr(queries, "detach"):
            queries = queries.detach().cpu().numpy()
        q = np.asarray(queries, dtype=np.float64)
        if q.ndim != 2 or q.shape[1] != 3:
            raise PromptError(f"queries must be (N, 3) rows of (t, x, y), got shape {q.shape}")
        if len(q) == 0:
            raise PromptError("queries are empty")
        if not np.isfinite(q).all():
            raise PromptError("queries contain NaN or infinite values")
        t = q[:, 0]
        if (t != np.round(t)).any() or (t < 0).any() or (t >= T).any():
            bad = q[(t != np.round(t)) | (t < 0) | (t >= T)][0]
            raise PromptError(f"query frame {bad[0]:g} is outside the clip's frames (0..{T - 1})")
        outside = (q[:, 1] < 0) | (q[:, 1] > W - 1) | (q[:, 2] < 0) | (q[:, 2] > H - 1)
        if outside.any():
            bad = q[outside][0]
            raise PromptError(
                f"query point ({bad[1]:g}, {bad[2]:g}) is outside the {W}x{H} frame"
            )
        q = q.copy()
        q[:, 1:] = clip.to_frame_pixels(q[:, 1:])
        q = q.astype(np.float32)
    mask = None
    if segm_mask is not None:
        if hasattr(segm_mask, "detach"):
            segm_mask = segm_mask.detach().cpu().numpy()
        mask = np.asarray(segm_mask)
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != (H, W):
            raise PromptError(
                f"mask is {mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]}, "
                f"the video is {W}x{H}"
            )
        mask = mask > 0
        if not mask.any():
            raise PromptError("mask is empty (no pixel set)")
    if q is None and grid_size == 0:
        raise PromptError("nothing to track: give a grid size > 0, queries, or a mask")
    if q is not None and mask is not None:
        raise PromptError("give either queries or a mask, not both")
    return Prompt(grid_size, q, mask, int(grid_query_frame), bool(backward_tracking))


def grid_points(
    size: tuple[int, int], grid_size: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """``(N, 2)`` points (x, y) of a ``grid_size`` x ``grid_size`` grid over a (W, H) frame.

    Row by row, with a margin of W/64 (CoTracker's grid when (W, H) is the model size);
    restricted to ``mask`` (H, W) if given (any resolution: looked up by nearest pixel).
    """
    W, H = size
    if grid_size == 1:
        xy = np.array([[W / 2.0, H / 2.0]], dtype=np.float32)
    else:
        margin = W / 64.0  # CoTracker's convention: a margin of W/64 on every side
        ys = np.linspace(margin, H - margin, grid_size, dtype=np.float32)
        xs = np.linspace(margin, W - margin, grid_size, dtype=np.float32)
        gy, gx = np.meshgrid(ys, xs, indexing="ij")
        xy = np.stack([gx.reshape(-1), gy.reshape(-1)], axis=-1)
    if mask is not None:
        mh, mw = mask.shape
        ix = np.clip(np.round(xy[:, 0] * mw / W).astype(int), 0, mw - 1)
        iy = np.clip(np.round(xy[:, 1] * mh / H).astype(int), 0, mh - 1)
        xy = xy[mask[iy, ix]]
    return xy.astype(np.float32)


class Tracker(ABC):
    """Tracks points through a video. Engines subclass this and implement `_track`."""

    name: str = ""
    #: Frame size (W, H) the engine wants frames decoded at, or None for source resolution.
    input_size: tuple[int, int] | None = None
    #: Whether the engine's stream holds a window of frames rather than the clip, so memory
    #: does not grow with the video (online CoTracker3, LK). When False, the advice of
    #: `check_memory` points to an engine that streams. A stream is
    #: ``stream(..., source_size=None)``: an object that takes frames a batch at a time
    #: (``push(frames) -> Tracks`` so far, ``feed(frames)`` without them) and gives
    #: ``finish() -> Tracks``; offline CoTracker3 has one too, which keeps features only.
    streams: bool = False
    #: Whether a stream gives `track`'s result for points that start after the first frame
    #: (LK's stream starts them on their frame; its `track` also tracks them backward).
    stream_late_queries: bool = True

    def __init__(self, **options: Any) -> None:
        self.options = options

    def memory_estimate(self, num_frames: int, source_size: tuple[int, int],
                        num_points: int, held_frames: int | None = None) -> int:
        """Bytes of host memory `track` needs for a clip of ``num_frames`` frames: the
        decoded frames ``(T, H, W, 3)`` uint8 and the tracks ``(T, N)`` with their copies.
        ``held_frames``: frames held at once when they are pushed to a stream a batch at a
        time (None: the whole clip is decoded first). Engines add their working set."""
        w, h = self.input_size or source_size
        return held(num_frames, held_frames) * w * h * 3 + num_frames * num_points * 48

    def device_memory_estimate(self, num_frames: int, num_points: int) -> int:
        """Bytes of accelerator memory `track` needs (0: the engine runs on the host)."""
        return 0

    def check_memory(self, num_frames: int, source_size: tuple[int, int], num_points: int,
                     what: str = "the clip", held_frames: int | None = None,
                     on_device: bool = True) -> None:
        """`PromptError` before anything is decoded when tracking ``num_frames`` frames would
        not fit in memory; the message says how to track fewer frames at once.
        ``held_frames`` as in `memory_estimate` (a streamed run). ``on_device``: check the
        accelerator's memory too (False in a process that decodes for a tracker elsewhere)."""
        need = self.memory_estimate(num_frames, source_size, num_points, held_frames)
        have = available_memory()
        where = "memory"
        device_need = self.device_memory_estimate(num_frames, num_points) if on_device else 0
        if need <= have and device_need:
            import torch

            free, _ = torch.cuda.mem_get_info(self.device)
            need, have, where = device_need, int(free), "GPU memory"
        if need <= have:
            return
        advice = "track fewer frames (--fps, --every, --max-frames, --start/--end)"
        if not self.streams and self.name.startswith("cotracker3"):
            advice += " or use the online engine (--engine cotracker3-online)"
        raise PromptError(
            f"{what}: {num_frames} frames with {self.name} need about {_gib(need)} of {where}, "
            f"{_gib(have)} available; {advice}"
        )

    def estimator(self) -> Tracker:
        """A copy of this tracker for `check_memory` in another process (a Ray worker that
        decodes): the same estimates, without a model. Engines that hold one drop it here."""
        return copy.copy(self)

    def track(
        self,
        video: VideoLike,
        *,
        grid_size: int = 0,
        queries: Any = None,
        segm_mask: Any = None,
        grid_query_frame: int = 0,
        backward_tracking: bool = False,
    ) -> Tracks:
        """Track points through ``video``.

        Args:
            video: a path, a `Clip`, or frames ``(T, H, W, 3)`` uint8.
            grid_size: track a ``grid_size`` x ``grid_size`` grid from ``grid_query_frame``.
            queries: ``(N, 3)`` rows of (t, x, y): t a frame row of the clip, x, y in source
                pixels.
            segm_mask: ``(H, W)`` mask in source pixels: grid points outside it are dropped.
            grid_query_frame: the row the grid points start from.
            backward_tracking: also track queries backward in time from their frame.

        Returns:
            `Tracks` in source-video pixels.

        A path is decoded a batch at a time into the engine's stream, where it has one that
        gives `track`'s result for the prompt (`streams_prompt`): the engine works on each
        batch while the next decodes, and memory holds a batch rather than the clip. Other
        prompts decode the whole clip first.
        """
        if isinstance(video, str | os.PathLike):
            from ..video import VideoReader

            with VideoReader(video) as reader:  # one open of the file for its info and frames
                info = reader.info
                if self.streams_prompt(starts_on_first_frame(queries, grid_query_frame),
                                       backward_tracking):
                    return self._track_streamed(reader, info, backward_tracking,
                                                grid_size=grid_size, queries=queries,
                                                segm_mask=segm_mask,
                                                grid_query_frame=grid_query_frame)
                self._check_memory_of(video, info, grid_size, queries)
                video = read_clip(reader, size=self.input_size)
        clip = as_clip(video, size=self.input_size)
        prompt = check_prompt(
            clip,
            grid_size=grid_size,
            queries=queries,
            segm_mask=segm_mask,
            grid_query_frame=grid_query_frame,
            backward_tracking=backward_tracking,
        )
        return self._track(clip, prompt)

    def streams_prompt(self, first_frame_only: bool, backward_tracking: bool) -> bool:
        """Whether the engine's stream gives `track`'s result for a prompt whose points all
        start on the first frame (``first_frame_only``) or not: then `track` of a path, and
        the CLI, decode into the stream. Window streams track forward only."""
        if not self.streams or backward_tracking:
            return False
        return self.stream_late_queries or first_frame_only

    def _check_memory_of(self, path, info, grid_size, queries, held_frames=None) -> None:
        points = len(queries) if queries is not None and np.ndim(queries) == 2 else 0
        if not points:
            points = max(int(grid_size), 1) ** 2 if isinstance(grid_size, int | np.integer) else 1
        self.check_memory(info.num_frames, info.size, points, what=str(path),
                          held_frames=held_frames)

    def _track_streamed(self, reader, info, backward_tracking: bool, **prompt) -> Tracks:
        """`track` of a path (an open `VideoReader`) through the engine's stream: frames are
        decoded a batch at a time, the prompt checked against the file's frame count before
        any is decoded."""
        path = reader.path
        size = self.input_size or info.size
        self._check_memory_of(path, info, prompt["grid_size"], prompt["queries"],
                              held_frames=stream_held_frames(size))
        check_prompt(blank_clip(info.num_frames, info.size, fps=info.fps), **prompt)
        stream = self.stream(**prompt, source_size=info.size,
                             **({"backward_tracking": True} if backward_tracking else {}))
        return feed_and_finish(self, stream, reader.frames(size=self.input_size),
                               stream_batch(size), fps=info.fps, what=str(path))

    def heap(self) -> contextlib.AbstractContextManager:
        """Context around a run of model calls (CoTracker3 on CPU keeps freed memory in the
        heap until the outermost one ends: `kept_heap`)."""
        return contextlib.nullcontext()

    @abstractmethod
    def _track(self, clip: Clip, prompt: Prompt) -> Tracks:
        """Track a checked prompt (frame pixels) through a clip; return source-pixel Tracks."""


def held(num_frames: int, held_frames: int | None) -> int:
    """Frames held in memory at once: the clip's, or at most ``held_frames`` of a stream."""
    return num_frames if held_frames is None else min(num_frames, held_frames)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
