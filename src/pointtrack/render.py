"""Draw tracks over video frames: a stable colour per track and a fading trail."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from .tracks import Tracks
from .video import iter_frames, write_video


def track_colors(num_tracks: int, seed: int = 0) -> np.ndarray:
    """``(N, 3)`` uint8 RGB colours, stable per track id (golden-ratio hues)."""
    hue = ((np.arange(num_tracks) + seed) * 0.618033988749895) % 1.0
    hsv = np.stack(
        [hue * 180, np.full(num_tracks, 220), np.full(num_tracks, 255)], axis=-1
    ).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def draw_tracks(
    frames: Iterable[np.ndarray],
    tracks: Tracks,
    *,
    trail: int = 10,
    radius: int | None = None,
    occluded: str = "hollow",
) -> Iterator[np.ndarray]:
    """Yield frames ``(H, W, 3)`` uint8 with tracks drawn; frame i is row i of ``tracks``.

    Frames may be of another size than the source (positions are scaled to them).

    Args:
        trail: how many past frames the fading trail spans (0: no trail).
        radius: point radius in pixels (default: from the frame size).
        occluded: "hollow" draws occluded points as rings, "hide" leaves them out.
    """
    if occluded not in ("hollow", "hide"):
        raise ValueError(f"occluded must be 'hollow' or 'hide', got {occluded!r}")
    colors = [tuple(int(v) for v in c) for c in track_colors(tracks.num_tracks)]
    W, H = tracks.frame_size
    for t, frame in enumerate(frames):
        if t >= tracks.num_frames:
            break
        h, w = frame.shape[:2]
        scale = np.array([w / W, h / H])
        r = radius or max(2, round(min(w, h) / 160))
        canvas = np.ascontiguousarray(frame).copy()
        # Trail first, oldest segments faintest, blended onto the frame.
        for k in range(max(0, t - trail), t):
            alpha = (k - (t - trail) + 1) / (trail + 1)
            layer = canvas.copy()
            a = tracks.xy[k] * scale
            b = tracks.xy[k + 1] * scale
            seen = tracks.visible[k] & tracks.visible[k + 1]
            for n in np.flatnonzero(seen):
                cv2.line(layer, _pt(a[n]), _pt(b[n]), colors[n], max(1, r // 2), cv2.LINE_AA)
            cv2.addWeighted(layer, alpha, canvas, 1 - alpha, 0, dst=canvas)
        xy = tracks.xy[t] * scale
        for n in range(tracks.num_tracks):
            if tracks.visible[t, n]:
                cv2.circle(canvas, _pt(xy[n]), r, colors[n], -1, cv2.LINE_AA)
            elif occluded == "hollow":
                cv2.circle(canvas, _pt(xy[n]), r, colors[n], 1, cv2.LINE_AA)
        yield canvas


def _pt(xy: np.ndarray) -> tuple[int, int]:
    # Fixed-point coordinates would need shift; rounding is enough at these radii.
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def render_video(
    video: str | os.PathLike,
    tracks: Tracks,
    out: str | os.PathLike,
    *,
    max_side: int | None = None,
    trail: int = 10,
    occluded: str = "hollow",
    progress: bool = False,
) -> Path:
    """Decode the tracked frames of ``video``, draw ``tracks`` and write an mp4 (atomically)."""
    W, H = tracks.frame_size
    size = None
    if max_side and max(W, H) > max_side:
        s = max_side / max(W, H)
        size = (max(2, round(W * s)), max(2, round(H * s)))
    wanted = set(tracks.frame_numbers.tolist())
    last = int(tracks.frame_numbers.max())
    frames = (
        f.image
        for f in iter_frames(video, size=size, max_frames=last + 1)
        if f.index in wanted
    )
    drawn = draw_tracks(frames, tracks, trail=trail, occluded=occluded)
    if progress:
        from tqdm.auto import tqdm

        drawn = tqdm(drawn, total=tracks.num_frames, desc="render", unit="frame", leave=False,
                     disable=None)
    return write_video(out, drawn, fps=tracks.fps or 30.0)


def render_frames(
    frames: np.ndarray, tracks: Tracks, out: str | os.PathLike, **options
) -> Path:
    """Draw ``tracks`` over in-memory frames ``(T, H, W, 3)`` uint8 and write an mp4."""
    return write_video(out, draw_tracks(frames, tracks, **options), fps=tracks.fps or 30.0)
