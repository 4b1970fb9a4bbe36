"""A weight-free tracker: pyramidal Lucas-Kanade (OpenCV) with a forward-backward check.

Each query is tracked frame to frame, forward and backward from its own frame. A point is
visible on a frame when the step into that frame passes the forward-backward check and its
patch still looks like the query patch; once it fails it keeps being tracked (so it can
come back), but it is reported occluded until it passes again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tracks import Tracks
from ..video import Clip
from . import register
from .base import (
    Prompt,
    Tracker,
    check_stream_length,
    check_stream_prompt,
    grid_points,
    held,
    stream_frames,
)


@register("lk")
class LucasKanadeTracker(Tracker):
    """Pyramidal Lucas-Kanade.

    Args:
        window: LK window side in pixels.
        levels: pyramid levels above the base.
        fb_threshold: max forward-backward error (px) of a visible step.
        ncc_threshold: min normalised cross-correlation with the query patch to be visible.
        patch: side of the appearance patch (px).
    """

    streams = True
    stream_late_queries = False  # the stream tracks forward only

    def __init__(
        self,
        window: int = 21,
        levels: int = 3,
        fb_threshold: float = 1.0,
        ncc_threshold: float = 0.6,
        patch: int = 9,
    ) -> None:
        import cv2  # loaded with the engine's first use, not with the registry
        super().__init__(
            window=window,
            levels=levels,
            fb_threshold=fb_threshold,
            ncc_threshold=ncc_threshold,
            patch=patch,
        )
        self.lk_params = dict(
            winSize=(window, window),
            maxLevel=levels,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
        )
        self.fb_threshold = fb_threshold
        self.ncc_threshold = ncc_threshold
        self.patch = patch

    def memory_estimate(self, num_frames, source_size, num_points, held_frames=None) -> int:
        # Plus a grayscale copy of every frame held (the pyramids are per step, not kept).
        w, h = source_size
        frames = super().memory_estimate(num_frames, source_size, num_points, held_frames)
        return frames + held(num_frames, held_frames) * w * h

    def _track(self, clip: Clip, prompt: Prompt) -> Tracks:
        import cv2
        if prompt.queries is not None:
            queries = prompt.queries
        else:
            xy = grid_points(clip.size, prompt.grid_size, prompt.segm_mask)
            t = np.full((len(xy), 1), prompt.grid_query_frame, dtype=np.float32)
            queries = np.concatenate([t, xy], axis=1)
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clip.frames]
        T, N = clip.num_frames, len(queries)
        xy = np.zeros((T, N, 2), dtype=np.float32)
        visible = np.zeros((T, N), dtype=bool)
        for t0 in np.unique(queries[:, 0]).astype(int):
            idx = np.flatnonzero(queries[:, 0] == t0)
            start = queries[idx, 1:].astype(np.float32)
            template = self._patches(gray[t0], start)
            xy[t0, idx], visible[t0, idx] = start, True
            for step in (1, -1):  # forward, then backward from the query frame
                pts = start.copy()
                for t in range(t0 + step, T if step > 0 else -1, step):
                    pts, ok = self._step(gray[t - step], gray[t], pts)
                    ok &= self._looks_like(gray[t], pts, template)
                    ok &= _inside(pts, clip.size)
                    xy[t, idx], visible[t, idx] = pts, ok
        if len(queries) > 0 and prompt.queries is not None:
            # Queries were given on their frame: keep them exactly where the user put them.
            xy[queries[:, 0].astype(int), np.arange(N)] = queries[:, 1:]
        return Tracks(
            xy=clip.to_source_pixels(xy).astype(np.float32),
            visible=visible,
            queries=np.concatenate(
                [queries[:, :1], clip.to_source_pixels(queries[:, 1:])], axis=1
            ),
            frame_numbers=clip.frame_numbers,
            frame_size=clip.source_size,
            fps=clip.fps,
            tracker=self.name,
            options=dict(self.options),
        )

    def stream(self, *, grid_size: int = 0, queries: Any = None, segm_mask: Any = None,
               grid_query_frame: int = 0, source_size: tuple[int, int] | None = None
               ) -> LKStream:
        """Track frames as they arrive, holding one frame at a time: memory does not grow
        with the video beyond the tracks. Forward in time only: a point starts on its query
        frame and is reported not visible before it (`track` also tracks backward). The
        prompt and the tracks are in the pixels of the pushed frames, or of ``source_size``
        (W, H) when the frames were resized from it; query frames count from the first."""
        return LKStream(self, source_size, grid_size=grid_size, queries=queries,
                        segm_mask=segm_mask, grid_query_frame=grid_query_frame)

    def _step(self, prev: np.ndarray, cur: np.ndarray, pts: np.ndarray):
        """One LK step ``(N, 2)`` -> ``(N, 2)`` and whether it passed the forward-backward check."""
        import cv2
        p0 = pts.reshape(-1, 1, 2)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, **self.lk_params)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, **self.lk_params)
        fb_error = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
        ok = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & (fb_error < self.fb_threshold)
        p1 = p1.reshape(-1, 2)
        # A failed step holds the last position rather than jumping to a bad estimate.
        return np.where((st1.reshape(-1, 1) == 1) & np.isfinite(p1), p1, pts), ok

    def _patches(self, gray: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Zero-mean, unit-norm patches ``(N, P*P)`` around points, sampled bilinearly."""
        import cv2
        r = (self.patch - 1) / 2
        offsets = np.linspace(-r, r, self.patch, dtype=np.float32)
        oy, ox = np.meshgrid(offsets, offsets, indexing="ij")
        map_x = (pts[:, 0, None] + ox.reshape(1, -1)).astype(np.float32)
        map_y = (pts[:, 1, None] + oy.reshape(1, -1)).astype(np.float32)
        # remap's output is limited to 32767 rows: sample in chunks of points.
        values = np.concatenate(
            [
                cv2.remap(
                    gray, map_x[i : i + 32000], map_y[i : i + 32000], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE,
                )
                for i in range(0, len(pts), 32000)
            ]
        ).astype(np.float32)
        values -= values.mean(axis=1, keepdims=True)
        return values / (np.linalg.norm(values, axis=1, keepdims=True) + 1e-6)

    def _looks_like(self, gray: np.ndarray, pts: np.ndarray, template: np.ndarray) -> np.ndarray:
        return (self._patches(gray, pts) * template).sum(axis=1) > self.ncc_threshold


def _inside(pts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    W, H = size
    return (pts[:, 0] >= 0) & (pts[:, 0] <= W - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= H - 1)


class LKStream:
    """``push(frames)`` uint8 ``(T, H, W, 3)`` (or one ``(H, W, 3)``) and get the tracks of
    every frame so far (``feed(frames)``: the same without them); ``finish()`` checks the
    prompt's frames all came and returns them."""

    def __init__(self, engine: LucasKanadeTracker, source_size: tuple[int, int] | None,
                 **prompt: Any) -> None:
        self.engine, self.prompt_args = engine, prompt
        self.source_size = source_size
        self.size: tuple[int, int] | None = None
        self.prev: np.ndarray | None = None
        self.t = 0
        # Rows are final once written (forward only): kept in buffers that double when full,
        # so that the Tracks each push returns are views, not a copy of every row so far.
        self.xy: np.ndarray
        self.visible: np.ndarray

    def _start(self, size: tuple[int, int]) -> None:
        prompt, self.clip = check_stream_prompt(size, self.source_size, **self.prompt_args)
        self.needed = self.clip.num_frames
        if prompt.queries is not None:
            self.queries = prompt.queries
        else:
            xy = grid_points(size, prompt.grid_size, prompt.segm_mask)
            t = np.full((len(xy), 1), prompt.grid_query_frame, dtype=np.float32)
            self.queries = np.concatenate([t, xy], axis=1)
        N = len(self.queries)
        self.size = size
        self.pts = self.queries[:, 1:].copy()
        self.templates = np.zeros((N, self.engine.patch**2), np.float32)
        self.started = np.zeros(N, bool)
        self.xy = np.zeros((0, N, 2), np.float32)
        self.visible = np.zeros((0, N), bool)

    def push(self, frames: Any) -> Tracks:
        self.feed(frames)
        return self._tracks()

    def feed(self, frames: Any) -> None:
        """`push` without building the tracks so far (for callers that want `finish`'s)."""
        import cv2

        frames = stream_frames(frames, self.size)
        if self.size is None:
            self._start((frames.shape[2], frames.shape[1]))
        for frame in frames:
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            visible = np.zeros(len(self.pts), bool)
            on = np.flatnonzero(self.started)
            if len(on):
                pts, ok = self.engine._step(self.prev, gray, self.pts[on])
                ok &= self.engine._looks_like(gray, pts, self.templates[on])
                self.pts[on], visible[on] = pts, ok & _inside(pts, self.size)
            new = np.flatnonzero(self.queries[:, 0] == self.t)
            if len(new):
                self.pts[new] = self.queries[new, 1:]
                self.templates[new] = self.engine._patches(gray, self.pts[new])
                self.started[new], visible[new] = True, True
            if self.t == len(self.xy):
                grown = max(64, 2 * len(self.xy))
                self.xy = np.concatenate([self.xy[: self.t], np.zeros(
                    (grown - self.t, len(self.pts), 2), np.float32)])
                self.visible = np.concatenate([self.visible[: self.t], np.zeros(
                    (grown - self.t, len(self.pts)), bool)])
            self.xy[self.t], self.visible[self.t] = self.pts, visible
            self.prev = gray
            self.t += 1

    def finish(self) -> Tracks:
        check_stream_length(self.t, 0 if self.size is None else self.needed)
        return self._tracks()

    def _tracks(self) -> Tracks:
        T = self.t
        xy, queries = self.xy[:T], self.queries
        if self.clip.source_size != self.size:  # (else views: no copy of every row so far)
            xy = self.clip.to_source_pixels(xy).astype(np.float32)
            queries = np.concatenate(
                [queries[:, :1], self.clip.to_source_pixels(queries[:, 1:])], axis=1)
        # Points that start on the first frame get `track`'s result; later ones differ (not
        # tracked backward), and the options say so.
        late = bool(len(queries)) and self.queries[:, 0].max() > 0
        options = dict(self.engine.options, stream=True) if late else dict(self.engine.options)
        return Tracks(xy=xy, visible=self.visible[:T], queries=queries,
                      frame_numbers=np.arange(T), frame_size=self.clip.source_size, fps=0.0,
                      tracker=self.engine.name, options=options)
