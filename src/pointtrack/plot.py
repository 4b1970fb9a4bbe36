"""Trajectory plots: x and y of each track against the frame number, one colour per track
(the colours `pointtrack.render` draws it in), occluded stretches left as gaps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .render import track_colors
from .tracks import Tracks, atomic_path


def plot_tracks(
    tracks: Tracks,
    *,
    track_ids: Sequence[int] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (10.0, 6.0),
    dpi: int = 100,
    linewidth: float = 1.2,
) -> Figure:
    """A figure of two panels sharing the frame axis: x (top) and y (bottom) in source pixels.

    Each track is a line of its `track_colors` colour over the source frame numbers
    ``tracks.frame_numbers``; frames where it is occluded are NaN, so the line breaks there.
    y grows downwards, as in the image. Returned, not shown: a notebook displays it, and
    `save_plot` writes it.

    Args:
        track_ids: the tracks to draw (default all), by track id (column of ``tracks.xy``).
    """
    ids = np.arange(tracks.num_tracks) if track_ids is None else np.asarray(track_ids, int)
    if ids.size and (ids.min() < 0 or ids.max() >= tracks.num_tracks):
        raise ValueError(f"track ids must be in 0..{tracks.num_tracks - 1}")
    colors = track_colors(tracks.num_tracks) / 255.0
    # Figure() without pyplot: no global state, no GUI backend needed.
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax_x, ax_y = fig.subplots(2, 1, sharex=True)
    frames = tracks.frame_numbers
    xy = np.where(tracks.visible[..., None], tracks.xy, np.nan)  # (T, N, 2)
    for n in ids:
        ax_x.plot(frames, xy[:, n, 0], color=colors[n], linewidth=linewidth, label=str(n))
        ax_y.plot(frames, xy[:, n, 1], color=colors[n], linewidth=linewidth, label=str(n))
    W, H = tracks.frame_size
    ax_x.set_ylim(0, W)
    ax_y.set_ylim(H, 0)
    ax_x.set_ylabel("x (px)")
    ax_y.set_ylabel("y (px)")
    ax_y.set_xlabel("frame")
    ax_x.set_title(title or f"{len(ids)} tracks, {tracks.num_frames} frames "
                   f"({tracks.tracker or 'tracks'})")
    for ax in (ax_x, ax_y):
        ax.grid(True, alpha=0.3)
    return fig


def save_plot(fig: Figure, out: str | os.PathLike) -> Path:
    """Write ``fig`` atomically, in the format of the suffix (.png, .pdf, .svg, ...);
    ValueError for a suffix matplotlib cannot write."""
    out = Path(out)
    kind = out.suffix.lstrip(".").lower()
    kinds = sorted(fig.canvas.get_supported_filetypes())
    if kind not in kinds:
        raise ValueError(f"{out}: cannot write a plot as {kind or 'a file without suffix'} "
                         f"(use one of .{', .'.join(kinds)})")
    with atomic_path(out) as tmp:
        fig.savefig(tmp)
    return out
