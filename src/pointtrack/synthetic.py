"""Synthetic videos with exact ground-truth point tracks.

A clip is a stack of textured layers: a background photo seen through a moving camera (a
homography per frame) and a few textured shapes (an affine pose per frame) painted over it in
depth order. Every layer's pixel-to-frame map is known, so a point picked on any frame follows
its layer exactly, and it is visible where it lies inside the frame and no layer in front of it
covers it. Textures are scikit-image's bundled sample photos (no network needed).

Coordinates follow OpenCV: pixel centres are at integer (x, y), so ``frames[t, y, x]`` is the
colour at point (x, y), and a point is inside the frame for ``0 <= x <= W - 1, 0 <= y <= H - 1``.

    >>> video = make_video(seed=0)
    >>> video.frames.shape, video.tracks.xy.shape
    ((24, 192, 256, 3), (24, 128, 2))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from .tracks import Tracks

# Colour photos bundled with scikit-image (no download). Backgrounds are the well-textured ones
# (rocket's sky and hubble's black would leave most background points untrackable); objects take
# the most textured crop of any photo other than the background's.
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "immunohistochemistry")
PHOTOS = BACKGROUNDS + ("rocket", "hubble_deep_field")

_BG_MARGIN = 1.8  # background texture size relative to the frame: room for the camera to move


@dataclass
class SyntheticVideo:
    """A generated clip and its exact ground truth.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        tracks: ground-truth `Tracks` (tracker ``"ground_truth"``), queries on ``query_frame``.
        fps: frame rate to write the clip at.
        layers: ``(T, H, W)`` int8 index of the layer seen at each pixel: 0 is the background,
            ``k + 1`` is object ``k`` (objects are painted in index order, later ones in front).
        point_layers: ``(N,)`` int64 layer of each track (same numbering as ``layers``).
        transforms: ``(L, T, 3, 3)`` float64 homographies from each layer's texture pixels to
            frame pixels on each frame (L = 1 + number of objects).
        seed: the seed it was made from.
    """

    frames: np.ndarray
    tracks: Tracks
    fps: float
    layers: np.ndarray
    point_layers: np.ndarray
    transforms: np.ndarray
    seed: int

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the frames."""
        return (int(self.frames.shape[2]), int(self.frames.shape[1]))


@dataclass
class _Object:
    texture: np.ndarray  # (S, S, 3) uint8
    polygon: np.ndarray  # (V, 2) float64 outline in texture pixels


# -- textures ----------------------------------------------------------------------------------


@cache
def _photo(name: str) -> np.ndarray:
    from skimage import data

    image = np.asarray(getattr(data, name)())
    image.setflags(write=False)
    return image


def _cover(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``image`` to cover (W, H) keeping its aspect ratio, then centre-crop to it."""
    W, H = size
    h, w = image.shape[:2]
    s = max(W / w, H / h)
    nw, nh = max(W, int(np.ceil(w * s))), max(H, int(np.ceil(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    image = cv2.resize(image, (nw, nh), interpolation=interp)
    x0, y0 = (nw - W) // 2, (nh - H) // 2
    return np.ascontiguousarray(image[y0 : y0 + H, x0 : x0 + W])


def _textured_crop(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """The most textured of a few random square crops of ``image``, resized to ``side``."""
    h, w = image.shape[:2]
    best, best_score = None, -1.0
    for _ in range(6):
        c = int(rng.integers(min(h, w) // 4, min(h, w) // 2 + 1))
        x0, y0 = int(rng.integers(0, w - c + 1)), int(rng.integers(0, h - c + 1))
        crop = cv2.resize(image[y0 : y0 + c, x0 : x0 + c], (side, side), cv2.INTER_AREA)
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
        # Mean gradient magnitude: flat crops (sky, walls) are hard to track.
        score = float(np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)).mean()
                      + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1)).mean())
        if score > best_score:
            best, best_score = crop, score
    return best


# -- motion --------------------------------------------------------------------------------------


def _wave(rng: np.random.Generator, t: np.ndarray, speed: float, T: int) -> np.ndarray:
    """A smooth 1-D path starting at 0 whose speed never exceeds ``speed`` per frame."""
    period = rng.uniform(1.0, 2.5) * max(T, 24)
    w = 2 * np.pi / period
    phase = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0.5, 1.0) * speed / w
    return amp * (np.sin(w * t + phase) - np.sin(phase))


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], dtype=np.float64)


def _similarity(angle: float, scale: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def _camera(rng, T: int, size: tuple[int, int], tex_size: tuple[int, int]) -> np.ndarray:
    """``(T, 3, 3)`` homographies background texture -> frame: pan, roll, zoom, a little tilt."""
    W, H = size
    t = np.arange(T, dtype=np.float64)
    tx, ty = _wave(rng, t, 2.0, T), _wave(rng, t, 1.5, T)
    angle = _wave(rng, t, np.deg2rad(0.3), T)
    log_scale = _wave(rng, t, 0.004, T)
    px, py = _wave(rng, t, 1.5e-5, T), _wave(rng, t, 1.5e-5, T)
    tw, th = tex_size
    centre_tex = _translate(-(tw - 1) / 2, -(th - 1) / 2)
    out = np.empty((T, 3, 3))
    for i in range(T):
        tilt = np.array([[1, 0, 0], [0, 1, 0], [px[i], py[i], 1]], dtype=np.float64)
        out[i] = (
            _translate((W - 1) / 2 + tx[i], (H - 1) / 2 + ty[i])
            @ tilt
            @ _similarity(angle[i], np.exp(log_scale[i]))
            @ centre_tex
        )
    return out


def _object_motion(rng, T: int, size: tuple[int, int], side: int) -> np.ndarray:
    """``(T, 3, 3)`` affine maps object texture -> frame: drifting, turning, breathing."""
    W, H = size
    t = np.arange(T, dtype=np.float64)
    # Start anywhere in the middle 70% of the frame, then drift at up to ~3 px/frame (so
    # objects cross each other and sometimes leave the frame).
    cx = rng.uniform(0.15, 0.85) * (W - 1) + _wave(rng, t, 3.0, T)
    cy = rng.uniform(0.15, 0.85) * (H - 1) + _wave(rng, t, 2.5, T)
    angle = rng.uniform(-0.5, 0.5) + _wave(rng, t, np.deg2rad(1.0), T)
    log_scale = _wave(rng, t, 0.006, T)
    centre_tex = _translate(-(side - 1) / 2, -(side - 1) / 2)
    out = np.empty((T, 3, 3))
    for i in range(T):
        out[i] = (
            _translate(cx[i], cy[i]) @ _similarity(angle[i], np.exp(log_scale[i])) @ centre_tex
        )
    return out


def _outline(rng: np.random.Generator, side: int) -> np.ndarray:
    """An ellipse or a star-shaped polygon inside a ``side`` x ``side`` texture, ``(V, 2)``."""
    c, r = (side - 1) / 2, 0.48 * (side - 1)
    if rng.random() < 0.5:
        a = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        rx, ry = r, r * rng.uniform(0.55, 1.0)
        rot = rng.uniform(0, np.pi)
        x, y = rx * np.cos(a), ry * np.sin(a)
        x, y = x * np.cos(rot) - y * np.sin(rot), x * np.sin(rot) + y * np.cos(rot)
    else:
        # Evenly spread, jittered vertex angles keep the polygon fat (no slivers).
        n = int(rng.integers(5, 9))
        a = 2 * np.pi * (np.arange(n) + rng.uniform(-0.3, 0.3, n)) / n + rng.uniform(0, np.pi)
        radius = r * rng.uniform(0.65, 1.0, n)
        x, y = radius * np.cos(a), radius * np.sin(a)
    return np.stack([c + x, c + y], axis=-1)


# -- geometry ---------------------------------------------------------------------------------


def _apply(Hm: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply homographies ``(..., 3, 3)`` to points ``(..., 2)`` (broadcast)."""
    p = np.einsum("...ij,...j->...i", Hm[..., :2], xy) + Hm[..., 2]
    return p[..., :2] / p[..., 2:3]


def _inside(polygon: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test: ``(V, 2)`` outline, ``(..., 2)`` points -> ``(...)``."""
    x, y = xy[..., 0, None], xy[..., 1, None]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < x_cross)).sum(-1) % 2 == 1


def _render(
    background: np.ndarray,
    objects: list[_Object],
    transforms: np.ndarray,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(T, H, W, 3)`` uint8 and top-layer index ``(T, H, W)`` int8."""
    W, H = size
    L, T = transforms.shape[:2]
    frames = np.empty((T, H, W, 3), dtype=np.uint8)
    layers = np.zeros((T, H, W), dtype=np.int8)
    shift = 8  # fixed-point bits for sub-pixel polygon vertices
    for t in range(T):
        image = cv2.warpPerspective(
            background, transforms[0, t], (W, H), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        ).astype(np.float32)
        for k, obj in enumerate(objects):
            A = transforms[k + 1, t]
            tex = cv2.warpAffine(
                obj.texture, A[:2], (W, H), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
            poly = np.round(_apply(A, obj.polygon) * (1 << shift)).astype(np.int32)
            alpha = np.zeros((H, W), dtype=np.uint8)  # anti-aliased coverage of the outline
            cv2.fillPoly(alpha, [poly], 255, lineType=cv2.LINE_AA, shift=shift)
            a = alpha.astype(np.float32)[..., None] / 255.0
            image = image * (1 - a) + tex.astype(np.float32) * a
            layers[t][alpha >= 128] = k + 1
        frames[t] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return frames, layers


# -- ground truth -------------------------------------------------------------------------------


def _layer_at(
    xy: np.ndarray, t: np.ndarray, objects: list[_Object], transforms: np.ndarray
) -> np.ndarray:
    """Exact top layer (0 background, k + 1 object k) under points ``(N, 2)`` on frames ``(N,)``."""
    layer = np.zeros(len(xy), dtype=np.int64)
    for k, obj in enumerate(objects):
        p = _apply(np.linalg.inv(transforms[k + 1, t]), xy)  # per-point frame t
        layer[_inside(obj.polygon, p)] = k + 1
    return layer


def _trajectories(
    queries: np.ndarray,
    point_layers: np.ndarray,
    objects: list[_Object],
    transforms: np.ndarray,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(T, N, 2)`` and visibility ``(T, N)`` of query points ``(N, 3)`` (t, x, y)
    riding their layers."""
    W, H = size
    L, T = transforms.shape[:2]
    N = len(queries)
    t_q = queries[:, 0].astype(np.int64)
    xy = np.empty((T, N, 2))
    for n in range(N):
        to_tex = np.linalg.inv(transforms[point_layers[n], t_q[n]])
        tex_xy = _apply(to_tex, queries[n, 1:].astype(np.float64))
        xy[:, n] = _apply(transforms[point_layers[n]], tex_xy)
    visible = (xy[..., 0] >= 0) & (xy[..., 0] <= W - 1) & (xy[..., 1] >= 0) & (xy[..., 1] <= H - 1)
    for t in range(T):
        for k, obj in enumerate(objects):
            front = point_layers < k + 1  # only layers painted later occlude
            p = _apply(np.linalg.inv(transforms[k + 1, t]), xy[t])
            visible[t] &= ~(front & _inside(obj.polygon, p))
    return xy.astype(np.float32), visible


def _sample_queries(
    rng: np.random.Generator,
    layers: np.ndarray,
    num_points: int,
    query_frame: str,
    margin: int,
) -> np.ndarray:
    """``(N, 3)`` query points (t, x, y): about half on the background and half spread over the
    objects, each at least ``margin`` px away from a layer edge and the frame border."""
    T, H, W = layers.shape
    L = int(layers.max(initial=0)) + 1
    if query_frame == "first":
        frame_of = np.zeros(num_points, dtype=np.int64)
    else:
        frame_of = np.sort(rng.integers(0, T, num_points))
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    border = np.zeros((H, W), bool)
    border[margin : H - margin, margin : W - margin] = True
    out = np.empty((num_points, 3), dtype=np.float64)
    for t in np.unique(frame_of):
        idx = np.flatnonzero(frame_of == t)
        # Pixels deep inside each layer's visible region (erosion keeps clear of edges).
        pools = []
        for k in range(L):
            ok = cv2.erode((layers[t] == k).astype(np.uint8), kernel).astype(bool) & border
            pools.append(np.flatnonzero(ok))
        objects = [k for k in range(1, L) if len(pools[k])]
        if not len(pools[0]) and not objects:
            pools[0] = np.flatnonzero(border)
        n_bg = len(idx) - len(idx) // 2 if objects else len(idx)
        if not len(pools[0]):
            n_bg = 0
        choice = np.zeros(len(idx), dtype=np.int64)
        if objects:
            choice[n_bg:] = np.asarray(objects)[np.arange(len(idx) - n_bg) % len(objects)]
        choice = rng.permutation(choice)
        for i, k in zip(idx, choice, strict=True):
            pix = int(rng.choice(pools[k]))
            y, x = divmod(pix, W)
            jitter = rng.uniform(-0.5, 0.5, 2)
            out[i] = (t, x + jitter[0], y + jitter[1])
    return out


# -- public API --------------------------------------------------------------------------------


def make_video(
    seed: int = 0,
    num_frames: int = 24,
    size: tuple[int, int] = (256, 192),
    num_objects: int = 3,
    grid_size: int | None = None,
    num_points: int = 128,
    query_frame: str = "first",
    fps: float = 12.0,
    margin: int = 3,
) -> SyntheticVideo:
    """A deterministic synthetic clip with exact ground-truth tracks.

    Args:
        seed: everything (textures, shapes, motions, query points) follows from it.
        num_frames: T.
        size: (W, H) of the frames.
        num_objects: textured shapes moving over the background (0 for camera motion only).
        grid_size: if given, query a ``grid_size`` x ``grid_size`` grid on frame 0 (the same
            grid as `pointtrack.trackers.grid_points`) instead of sampled points.
        num_points: number of sampled query points (ignored with ``grid_size``).
        query_frame: ``"first"``: queries on frame 0; ``"random"``: each query on a random frame
            (for strided and backward tracking). Grid queries are always on frame 0.
        fps: frame rate recorded in the tracks and used by `write_synthetic`.
        margin: sampled queries keep this many px from layer edges and the frame border.

    Returns:
        `SyntheticVideo` with frames ``(T, H, W, 3)`` and ground-truth tracks ``(T, N, 2)``.
    """
    W, H = int(size[0]), int(size[1])
    if W < 16 or H < 16:
        raise ValueError(f"size must be at least 16x16, got {W}x{H}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_objects < 0:
        raise ValueError(f"num_objects must be >= 0, got {num_objects}")
    if query_frame not in ("first", "random"):
        raise ValueError(f"query_frame must be 'first' or 'random', got {query_frame!r}")
    if grid_size is None and num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    if grid_size is not None and grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    T = int(num_frames)
    rng = np.random.default_rng(seed)

    bg_name = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    photos = [p for p in PHOTOS if p != bg_name]
    photos = [photos[i] for i in rng.permutation(len(photos))]
    tex_size = (int(W * _BG_MARGIN), int(H * _BG_MARGIN))
    background = _cover(_photo(bg_name), tex_size)
    transforms = [_camera(rng, T, (W, H), tex_size)]
    objects = []
    for k in range(num_objects):
        side = int(round(min(W, H) * rng.uniform(0.3, 0.45)))
        # Objects take their texture from photos other than the background's.
        texture = _textured_crop(_photo(photos[k % len(photos)]), side, rng)
        objects.append(_Object(texture=texture, polygon=_outline(rng, side)))
        transforms.append(_object_motion(rng, T, (W, H), side))
    transforms = np.stack(transforms)  # (L, T, 3, 3)

    frames, layers = _render(background, objects, transforms, (W, H))

    if grid_size is not None:
        from .trackers.base import grid_points

        xy = grid_points((W, H), int(grid_size))
        queries = np.concatenate([np.zeros((len(xy), 1)), xy], axis=1).astype(np.float64)
    else:
        queries = _sample_queries(rng, layers, int(num_points), query_frame, int(margin))
    point_layers = _layer_at(queries[:, 1:], queries[:, 0].astype(np.int64), objects, transforms)
    xy, visible = _trajectories(queries, point_layers, objects, transforms, (W, H))
    # A query is visible on its own frame by construction; pin it against edge round-off.
    visible[queries[:, 0].astype(np.int64), np.arange(len(queries))] = True
    xy[queries[:, 0].astype(np.int64), np.arange(len(queries))] = queries[:, 1:]

    tracks = Tracks(
        xy=xy,
        visible=visible,
        queries=queries.astype(np.float32),
        frame_numbers=np.arange(T),
        frame_size=(W, H),
        fps=fps,
        tracker="ground_truth",
        options={"synthetic_seed": int(seed), "query_frame": query_frame},
    )
    return SyntheticVideo(
        frames=frames,
        tracks=tracks,
        fps=float(fps),
        layers=layers,
        point_layers=point_layers,
        transforms=transforms,
        seed=int(seed),
    )


def write_synthetic(path: str | os.PathLike, seed: int = 0, **options) -> SyntheticVideo:
    """Make a clip with `make_video` (same options) and write it as an mp4 at ``path``."""
    from .video import write_video

    video = make_video(seed=seed, **options)
    write_video(Path(path), video.frames, video.fps)
    return video


__all__ = ["BACKGROUNDS", "PHOTOS", "SyntheticVideo", "make_video", "write_synthetic"]
