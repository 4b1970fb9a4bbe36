"""CoTracker3 engines: ``cotracker3-offline`` (whole video at once) and ``cotracker3-online``
(sliding windows, also as a stream).

They follow the official predictors:

- Frames are resized to the model's 512x384 (bilinear, align_corners=True, on 0..255 floats;
  paths are decoded at that size directly) and query pixels scaled alike.
- ``grid_size`` puts a grid on ``grid_query_frame`` (margin W/64 at model resolution), kept
  where ``segm_mask`` is set (nearest pixel of the mask resized to model resolution).
- With queries or a mask, a 6x6 grid of support points (frame 0) is tracked alongside, which
  steadies the virtual tracks, and dropped from the result (``support_grid=False`` to skip).
- ``backward_tracking`` tracks the time-reversed video too and uses it before each query frame.
- Offline: visible where the visibility probability is > 0.9; each query's own frame is set
  to the query point, visible. Online: visible where visibility x confidence > 0.6.

Many points are split into groups of at most ``max_points`` (support points included), each
tracked in its own model call: queries are dealt out round-robin (group g gets queries g,
g + G, ...) so every group spreads over the frame like the whole set; `track_dense` uses
interleaved sub-grids (offsets of an s x s lattice). Points interact through the
transformer's virtual tracks, so results with several groups differ slightly from one call.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import threading
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models import corr_triton
from ..models.cotracker3 import CoTracker3Offline, CoTracker3Online
from ..models.weights import CheckpointLike, load_weights
from ..tracks import Tracks
from ..video import Clip
from . import register
from .base import (
    Prompt,
    PromptError,
    Tracker,
    VideoLike,
    as_clip,
    blank_clip,
    check_prompt,
    check_stream_length,
    check_stream_prompt,
    grid_points,
    stream_frames,
)

MODEL_SIZE = (512, 384)  # (W, H) the networks run at
# Memory estimates (checked before decoding): the network, its weights and the chunked
# correlation and transformer activations, whatever the clip's length; and per frame the
# stride-4 features (128 x 96 x 128 float32) with their pyramid (x 4/3) and a float copy of
# the frame. On CPU with 24 frames these put offline at ~1.3 GiB (measured: 1.2 GiB RSS).
WORKING_SET = 1 << 30
FEATURE_BYTES = int(128 * 96 * 128 * 4 * 4 / 3) + 512 * 384 * 3 * 4
SUPPORT_GRID = 6
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class _KeptHeap:
    """On glibc, freed memory stays in the heap while CPU model calls run, and goes back after.

    PyTorch's CPU tensors come straight from malloc, and glibc maps every block over 32 MiB
    fresh from the kernel and unmaps it when freed, so each of the model's large activations
    pays a page fault per 4 KiB every time it is made: a third of the CPU time of an offline
    call (24 frames, 2 cores). During calls, blocks up to 1 GiB come from the heap and freed
    ones are kept for reuse; when the last call ends, the thresholds go back to glibc's settled
    values (32 MiB to map, 64 MiB to trim) and `malloc_trim` returns what is free.
    ``POINTTRACK_KEEP_HEAP=0`` turns this off.
    """

    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.libc = None
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            with contextlib.suppress(OSError):
                self.libc = ctypes.CDLL("libc.so.6")

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.libc is None or os.environ.get("POINTTRACK_KEEP_HEAP", "1") == "0":
            yield
            return
        with self.lock:
            self.users += 1
            if self.users == 1:
                self.libc.mallopt(self.M_MMAP_THRESHOLD, 1 << 30)
                self.libc.mallopt(self.M_TRIM_THRESHOLD, 2**31 - 1)
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if self.users == 0:
                    self.libc.mallopt(self.M_MMAP_THRESHOLD, 32 << 20)
                    self.libc.mallopt(self.M_TRIM_THRESHOLD, 64 << 20)
                    self.libc.malloc_trim(0)


kept_heap = _KeptHeap()


def fast_cpu_precision(precision: str) -> bool:
    """Whether this CPU runs ``precision`` at least as fast as fp32. oneDNN's bf16 kernels
    need AVX-512 (native with AVX-512 BF16 or AMX: 2-4x fp32 measured); on AVX2 alone it
    falls back to reference code. fp16 needs AVX-512 FP16 or AMX."""
    if precision == "fp32":
        return True
    check = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}
    try:
        return bool(getattr(torch.ops.mkldnn, check[precision])())
    except (AttributeError, KeyError, RuntimeError):
        return False


def pick_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as torch reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r} (use cpu, cuda or auto)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but CUDA is not available here")
    return device


class _Staging:
    """Two pinned host buffers that frames pass through on their way to the GPU, filled by
    a worker thread (NumPy's copy releases the GIL) while the main thread queues GPU work."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pointtrack-upload")
        self.buffers: list[torch.Tensor | None] = [None, None]
        self.copied = [torch.cuda.Event(), torch.cuda.Event()]  # last upload from each

    def stage(self, frames: np.ndarray | list[np.ndarray], k: int) -> Future:
        return self.pool.submit(self._fill, frames, k % 2)

    def _fill(self, frames: np.ndarray | list[np.ndarray], slot: int) -> torch.Tensor:
        self.copied[slot].synchronize()  # the GPU has read what this buffer held
        shape = (len(frames), *frames[0].shape)
        size = math.prod(shape)
        buffer = self.buffers[slot]
        if buffer is None or buffer.numel() < size:
            buffer = self.buffers[slot] = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        view = buffer[:size].view(shape)
        np.stack(frames, out=view.numpy())  # a list of frames is gathered in the same copy
        return view

    def upload(self, buffer: torch.Tensor, k: int, device: torch.device) -> torch.Tensor:
        x = buffer.to(device, non_blocking=True)
        self.copied[k % 2].record()
        return x


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host array on ``device``. On CUDA it goes through pinned memory without
    blocking: a copy from pageable memory first waits for all GPU work queued before it
    (CUDA's rule), which held the CPU back until the GPU had finished the encoder instead of
    letting it queue the refinement meanwhile. (No change in a 480p call's time could be
    told from the runs' spread: session 21.)"""
    t = torch.from_numpy(array)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class _Geometry:
    """Pixels of the clip's frames (w x h) <-> model pixels (512 x 384), align_corners-style
    like the official predictors (corner pixel centres map onto each other)."""

    def __init__(self, size: tuple[int, int]) -> None:
        w, h = size
        W, H = MODEL_SIZE
        self.to_model = np.float32([(W - 1) / max(w - 1, 1), (H - 1) / max(h - 1, 1)])
        self.to_frame = np.float32([max(w - 1, 1) / (W - 1), max(h - 1, 1) / (H - 1)])


def _source_pixels(xy: np.ndarray, to_frame: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Model pixels ``xy (T, N, 2)`` -> float32 source pixels: what
    ``clip.to_source_pixels(xy * to_frame, np.float32)`` gives, bit for bit (the same float32
    operations in the same order), through torch's CPU kernels. NumPy broadcasts over the
    trailing (x, y) pair with an inner loop two long: 5.2 ms for 82 x 2500 points against
    0.8 ms here (2-core VM), every call."""
    out = torch.from_numpy(np.ascontiguousarray(xy, dtype=np.float32)) * torch.from_numpy(
        np.asarray(to_frame, dtype=np.float32))
    out += 0.5
    out *= torch.from_numpy(np.asarray(scale).astype(np.float32))
    out -= 0.5
    return out.numpy()


class _CoTracker3Engine(Tracker):
    """What both engines share: options, weights, prompts in model pixels, output Tracks."""

    input_size = MODEL_SIZE
    default_checkpoint = ""
    model_class: type = CoTracker3Offline
    gpu_encoder_chunk = 8  # frames per compiled encoder call (bf16 on GPU)
    gpu_token_budget = 2**16  # tokens per transformer chunk (bf16/fp16 on GPU)

    def __init__(
        self,
        checkpoint: CheckpointLike = None,
        device: str = "cpu",
        iters: int = 6,
        max_points: int = 65536,
        support_grid: bool = True,
        precision: str = "fp32",
        compile: bool = False,
        progress: bool = True,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if int(iters) < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        if int(max_points) < 1 + SUPPORT_GRID**2:
            raise ValueError(f"max_points must be > {SUPPORT_GRID**2}, got {max_points}")
        if checkpoint is None or isinstance(checkpoint, str | os.PathLike):
            described = os.fspath(checkpoint) if checkpoint is not None else self.default_checkpoint
        else:
            described = "<state dict>"
        super().__init__(checkpoint=described, device=str(device), iters=int(iters),
                         max_points=int(max_points), support_grid=bool(support_grid),
                         precision=precision, compile=bool(compile))
        self.checkpoint = checkpoint
        self.device = pick_device(device)
        if self.device.type == "cpu" and not fast_cpu_precision(precision):
            warnings.warn(
                f"precision={precision} on this CPU (PyTorch reports "
                f"{torch.backends.cpu.get_cpu_capability()}): oneDNN has no fast {precision} "
                f"kernels here, so it runs reference code, many times slower than fp32 (bf16 "
                f"on a 2-core AVX2 EPYC, 24 frames x 100 points offline: 165 s against 18 s); "
                f"use precision=fp32", stacklevel=3)
        self.iters = int(iters)
        self.max_points = int(max_points)
        self.support_grid = bool(support_grid)
        self.precision = precision
        self.compile = bool(compile)
        self.progress = progress
        self._model = None
        self._staging: _Staging | None = None

    def memory_estimate(self, num_frames, source_size, num_points, held_frames=None) -> int:
        frames = super().memory_estimate(num_frames, source_size, num_points, held_frames)
        if self.device.type == "cuda":
            return frames + WORKING_SET // 2  # the features live on the GPU
        return frames + WORKING_SET + self._feature_frames(num_frames) * FEATURE_BYTES

    def device_memory_estimate(self, num_frames, num_points) -> int:
        if self.device.type != "cuda":
            return 0
        return WORKING_SET + self._feature_frames(num_frames) * FEATURE_BYTES

    def _feature_frames(self, num_frames: int) -> int:
        """Frames whose features are held at once."""
        return num_frames

    def estimator(self) -> _CoTracker3Engine:
        # Neither the network nor the weights (a state dict, maybe) travel: estimates need
        # only the device and the options.
        light = super().estimator()
        light._model, light._staging, light.checkpoint = None, None, None
        return light

    @property
    def model(self):
        """The network with its weights, loaded on first use (`CheckpointError` if it can't)."""
        if self._model is None:
            if self.device.type == "cuda":
                corr_triton.preload_kernels(self.device)  # while the weights load, video decodes
            # Built without storage or random init (0.2-0.4 s): the strict load sets every
            # tensor. (The model never calls randn or arange on meta: they import sympy.)
            with torch.device("meta"):
                model = self.model_class()
            # bf16 keeps fp32's range: the whole network runs in it (no per-op casts); positions
            # and logits still accumulate in fp32 inside the model.
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
            load_weights(model, self.checkpoint, self.default_checkpoint, progress=self.progress,
                         device=self.device, dtype=dtype)
            self._model = model.to(self.device, dtype).eval()
            self._model.cfg.compile_encoder = self.compile
            # cuDNN's convolution autotuner goes with the compiled CNN (9% faster online on an
            # H200, session 5). With the eager CNN it gained 0-1% and cost 0.3-0.6 s at each
            # new video length (session 15); in fp32 it tried workspaces of 55 GiB and kept
            # 230 MiB more of host memory (session 5; `benchmarks/NOTES.md`).
            self._model.cfg.cudnn_benchmark = dtype != torch.float32 and self.compile
            if self.device.type == "cpu":
                # Smaller chunks on CPU: with the heap kept (`kept_heap`) the blocks are reused,
                # and the peak memory drops with no loss of speed (2 cores, 24 frames).
                self._model.cfg.encoder_chunk = 2
                self._model.cfg.corr_budget = 2**24
                self._model.cfg.token_budget = 2**14
                if dtype != torch.float32 and self._model.cfg.cpu_channels_last:
                    # The CNN runs channels-last there (`cpu_channels_last`): its weights too,
                    # or every convolution copies its weight into that layout on every call.
                    self._model.fnet.to(memory_format=torch.channels_last)
            if self.device.type == "cuda":
                # The virtual tracks' attention over the points runs 15x faster batched over
                # 16 frames than frame by frame on an H100 (64 queries fill few of its cores).
                self._model.cfg.attention_budget = 2**19
                # Fewer, larger correlation chunks: each costs the CPU as much to launch as a
                # small one, and the volumes live only while the tokens are built.
                self._model.cfg.corr_budget = 2**28
                if dtype != torch.float32:
                    self._model.cfg.encoder_chunk = self.gpu_encoder_chunk
                    self._model.cfg.token_budget = self.gpu_token_budget
            self.checkpoint = None  # the weights live in the model now
        return self._model

    def autocast(self):
        """Context for model calls: fp32 and bf16 (weights converted) as they are, fp16 through
        autocast, which keeps the ops that overflow in fp32 (a speed option; parity with the
        official outputs holds in fp32 only)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None or self.precision == "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    # Prompts ----------------------------------------------------------------------------------

    def _model_queries(self, clip_size, prompt: Prompt) -> tuple[np.ndarray, bool]:
        """Queries ``(N, 3)`` (t, x, y) in model pixels, and whether support points apply."""
        geo = _Geometry(clip_size)
        if prompt.queries is not None:
            q = prompt.queries.astype(np.float32).copy()
            q[:, 1:] = q[:, 1:] * geo.to_model
            return q, self.support_grid
        xy = grid_points(MODEL_SIZE, prompt.grid_size)
        if prompt.segm_mask is not None:
            xy = xy[_inside_mask(xy, prompt.segm_mask)]
            if len(xy) == 0:
                raise PromptError(
                    f"no point of the {prompt.grid_size}x{prompt.grid_size} grid falls inside "
                    "the mask; use a larger grid size"
                )
        t = np.full((len(xy), 1), prompt.grid_query_frame, dtype=np.float32)
        return np.concatenate([t, xy], axis=1), self.support_grid and prompt.segm_mask is not None

    def _groups(self, n: int, support: bool) -> list[np.ndarray]:
        per_call = self.max_points - (SUPPORT_GRID**2 if support else 0)
        G = max(1, math.ceil(n / per_call))
        return [np.arange(g, n, G) for g in range(G)]

    def _frames_to_model(self, frames: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """uint8 ``(T, h, w, 3)`` (array or list of frames) -> float ``(1, T, 3, 384, 512)``
        in 0..255 on the device."""
        return self._to_model(next(iter(self._uploads(frames, max(1, len(frames))))))

    def _uploads(self, frames: np.ndarray | list[np.ndarray], step: int
                 ) -> Iterator[torch.Tensor]:
        """uint8 ``(n, h, w, 3)`` tensors on the device, ``step`` frames at a time.

        On CUDA a worker thread copies the next chunk into one of two pinned buffers (kept
        for later calls) while the GPU works on this one: a host copy of frames runs at a
        few GB/s, and pinning a fresh buffer per chunk cost a 480p clip 30 ms of GPU idling.
        """
        starts = range(0, len(frames), step)
        if self.device.type != "cuda":
            for i in starts:
                part = frames[i : i + step]
                part = np.stack(part) if isinstance(part, list) else np.ascontiguousarray(part)
                yield torch.from_numpy(part).to(self.device)
            return
        if self._staging is None:
            self._staging = _Staging()
        staging = self._staging
        pending = staging.stage(frames[:step], 0)
        for k, i in enumerate(starts):
            buffer = pending.result()
            if k + 1 < len(starts):
                pending = staging.stage(frames[i + step : i + 2 * step], k + 1)
            yield staging.upload(buffer, k, self.device)

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(T, h, w, 3)`` on the device -> float ``(1, T, 3, 384, 512)``."""
        x = x.permute(0, 3, 1, 2).float()
        if (x.shape[-1], x.shape[-2]) != MODEL_SIZE:
            x = F.interpolate(x, MODEL_SIZE[::-1], mode="bilinear", align_corners=True)
        return x[None]

    # Results ----------------------------------------------------------------------------------

    @staticmethod
    def _numpy(out):
        """Model outputs ``(1, T, N, ...)`` -> float32 numpy ``(T, N, ...)``."""
        return tuple(o[0].float().cpu().numpy() for o in out)

    overwrite_query_frames = False  # offline: a query's own frame is the query point, visible

    def _visible(self, vis: np.ndarray, conf: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _to_tracks(self, clip: Clip, queries: np.ndarray, xy, vis, conf) -> Tracks:
        """Model-pixel results ``(T, N, ...)`` -> source-pixel `Tracks`."""
        geo = _Geometry(clip.size)
        xy_src = _source_pixels(xy, geo.to_frame, clip.scale)
        q_src = queries.astype(np.float64).copy()
        q_src[:, 1:] = clip.to_source_pixels(queries[:, 1:] * geo.to_frame)
        visible = self._visible(vis, conf)
        if self.overwrite_query_frames and len(queries):
            rows, cols = queries[:, 0].astype(int), np.arange(len(queries))
            xy_src[rows, cols] = q_src[:, 1:]
            visible[rows, cols] = True
        return Tracks(
            xy=xy_src, visible=visible, queries=q_src, frame_numbers=clip.frame_numbers,
            frame_size=clip.source_size, fps=clip.fps, tracker=self.name,
            visibility=vis, confidence=conf, options=dict(self.options),
        )

    def _track(self, clip: Clip, prompt: Prompt) -> Tracks:
        queries, support = self._model_queries(clip.size, prompt)
        groups = self._groups(len(queries), support)
        with self.heap():
            xy, vis, conf = self._run(clip.frames, queries, groups, support,
                                      prompt.backward_tracking)
        return self._to_tracks(clip, queries, xy, vis, conf)

    def heap(self) -> contextlib.AbstractContextManager:
        """`kept_heap` around CPU model calls (GPU calls allocate through PyTorch's cache)."""
        return kept_heap() if self.device.type == "cpu" else contextlib.nullcontext()

    def _run(self, frames, queries, groups, support, backward):
        """Track model-pixel ``queries`` through uint8 ``frames``, one model call per group;
        returns ``xy (T, N, 2)`` model pixels, visibility and confidence ``(T, N)``."""
        raise NotImplementedError

    def track_dense(
        self,
        video: VideoLike,
        *,
        grid_query_frame: int = 0,
        backward_tracking: bool = False,
        stride: int = 1,
    ) -> Tracks:
        """Track every ``stride``-th pixel (in x and y) of frame ``grid_query_frame``.

        Pixels are those of the frames the engine decodes (512x384 for a path, the array's own
        size for frames given in memory); tracks come in row-major pixel order, in source
        pixels. Points go in interleaved sub-grids of at most ``max_points`` per model call.
        """
        clip = as_clip(video, size=self.input_size)
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise PromptError(f"dense stride must be an integer >= 1, got {stride!r}")
        check_prompt(clip, grid_size=1, grid_query_frame=grid_query_frame)
        w, h = clip.size
        ys, xs = np.mgrid[0:h:stride, 0:w:stride]
        n = xs.size
        s = max(1, math.ceil(math.sqrt(n / self.max_points)))  # lattice step of the groups
        groups = [
            np.flatnonzero(((ys // stride) % s == oy).ravel() & ((xs // stride) % s == ox).ravel())
            for oy in range(s) for ox in range(s)
        ]
        groups = [g for g in groups if len(g)]
        frame_xy = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
        queries = np.concatenate(
            [np.full((n, 1), grid_query_frame, np.float32),
             frame_xy * _Geometry(clip.size).to_model], axis=1
        )
        xy, vis, conf = self._run(clip.frames, queries, groups, False, backward_tracking)
        return self._to_tracks(clip, queries, xy, vis, conf)


def _inside_mask(xy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Which model-pixel points ``(N, 2)`` fall on ``mask (H, W)``: the mask is resized to
    model resolution by nearest neighbour (source index floor(i * in / out)) and looked up at
    the rounded point, as the official predictor does."""
    mh, mw = mask.shape
    W, H = MODEL_SIZE
    ix = np.clip(np.round(xy[:, 0]), 0, W - 1).astype(np.float32)
    iy = np.clip(np.round(xy[:, 1]), 0, H - 1).astype(np.float32)
    sx = np.minimum(np.floor(ix * np.float32(mw / W)).astype(int), mw - 1)
    sy = np.minimum(np.floor(iy * np.float32(mh / H)).astype(int), mh - 1)
    return mask[sy, sx].astype(bool)


def _support_points() -> np.ndarray:
    xy = grid_points(MODEL_SIZE, SUPPORT_GRID)
    return np.concatenate([np.zeros((len(xy), 1), np.float32), xy], axis=1)


def _merge_backward(fwd, bwd, query_frames: np.ndarray):
    """Use the backward pass (already flipped back) before each query's frame."""
    T = fwd[0].shape[0]
    before = np.arange(T)[:, None] < query_frames[None, :]
    xy = np.where(before[..., None], bwd[0], fwd[0])
    return (xy,) + tuple(np.where(before, b, f) for f, b in zip(fwd[1:], bwd[1:], strict=True))


# -- Offline ----------------------------------------------------------------------------------


@register("cotracker3-offline")
class CoTracker3OfflineTracker(_CoTracker3Engine):
    """CoTracker3 offline: sees the whole clip at once (best accuracy; memory grows with T).

    Args:
        checkpoint: registry name, path, URL or state dict (default ``scaled_offline``).
        device: ``cpu``, ``cuda`` or ``auto``.
        iters: refinement iterations.
        max_points: points per model call (support points included); more go in groups.
        support_grid: track a 6x6 support grid alongside queries and masks.
        precision: ``fp32`` (parity with the official model), ``bf16`` or ``fp16``.
        compile: on GPU in bf16, run the encoder through ``torch.compile`` and let cuDNN
            time its convolutions: ~0.4 ms less per frame, after 12-35 s of compilation per
            process (Inductor's disk cache warm or cold) and 0.3-0.6 s at each new video
            length (H200, `benchmarks/NOTES.md` session 15). Off by default: file to tracks
            was no faster with it (the encoder runs while frames decode), and it pays only
            past tens of thousands of frames in one process.
    """

    default_checkpoint = "scaled_offline"
    model_class = CoTracker3Offline
    overwrite_query_frames = True
    # The compiled encoder costs the CPU as much to launch as the GPU to run at 8 frames: 16
    # per call leave the GPU the slower side. (Online windows bring 8 new frames.)
    gpu_encoder_chunk = 16
    # Transformer chunks of 2^17 tokens: a 480p grid-50 call's blocks run in two chunks
    # instead of four. Its refinement (H200, one process, arms taking turns; benchmarks/NOTES.md
    # session 21): GPU 135 -> 131 ms, CPU time to queue it 97 -> 78 ms (it runs eagerly, barely
    # ahead of the GPU, so a slower host stalls the GPU), peak 1.33 -> 1.65 GiB, tracks the
    # same bit for bit. 2^18: 127 ms and 55 ms for 2.02 GiB, past the 2 GiB this case is held
    # to. (Online windows replay a CUDA graph: launches cost nothing there, so 2^16 stays.)
    gpu_token_budget = 2**17

    def _visible(self, vis, conf):
        return vis > 0.9

    @torch.inference_mode()
    def _run(self, frames, queries, groups, support, backward):
        with self.autocast():
            return self._run_offline(frames, queries, groups, support, backward)

    def _run_offline(self, frames, queries, groups, support, backward):
        return self._track_features(self._pyramid(self._encode(frames)), queries, groups,
                                    support, backward)

    def _encode(self, frames: np.ndarray | list[np.ndarray]) -> list[list[torch.Tensor]]:
        """uint8 frames ``(T, h, w, 3)`` -> feature pyramids, one per encoder chunk."""
        model = self.model
        return [model.encode(self._to_model(x))
                for x in self._uploads(frames, model.cfg.encoder_chunk)]

    @staticmethod
    def _pyramid(chunks: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """The chunks' pyramids joined along time; empties ``chunks``, so that each chunk's
        features are freed once copied rather than held beside the whole pyramid."""
        pyramid = []
        for level in range(len(chunks[0])):
            pyramid.append(torch.cat([c[level] for c in chunks], dim=1))
            for c in chunks:
                c[level] = None
        chunks.clear()
        return pyramid

    def _track_features(self, pyramid, queries, groups, support, backward):
        """`_run` from the clip's features ``pyramid`` (level l: ``(1, T, h_l, w_l, C)``)."""
        model = self.model
        T, N = pyramid[0].shape[1], len(queries)
        reversed_pyramid = [p.flip(1) for p in pyramid] if backward else None
        if len(groups) > 1:
            xy = np.zeros((T, N, 2), np.float32)
            vis = np.zeros((T, N), np.float32)
            conf = np.zeros((T, N), np.float32)
        for idx in groups:
            q = queries[idx]
            if support:
                q = np.concatenate([q, _support_points()])
            qt = _to_device(q, self.device)[None]
            out = self._numpy(model.track(pyramid, qt, self.iters))
            if backward:
                qt_rev = qt.clone()
                qt_rev[..., 0] = T - 1 - qt_rev[..., 0]
                rev = self._numpy(model.track(reversed_pyramid, qt_rev, self.iters))
                out = _merge_backward(out, tuple(r[::-1] for r in rev), q[:, 0])
            n = len(idx)
            if len(groups) == 1:  # all queries in order: no scatter
                return tuple(o[:, :n] for o in out)
            xy[:, idx], vis[:, idx], conf[:, idx] = (o[:, :n] for o in out)
        return xy, vis, conf

    def streams_prompt(self, first_frame_only: bool, backward_tracking: bool) -> bool:
        return True  # the stream keeps every frame's features: any prompt, either direction

    def stream(
        self,
        *,
        grid_size: int = 0,
        queries: Any = None,
        segm_mask: Any = None,
        grid_query_frame: int = 0,
        backward_tracking: bool = False,
        source_size: tuple[int, int] | None = None,
    ) -> OfflineStream:
        """A stream to `OfflineStream.feed` frames into as they are decoded; prompt as for
        `track`, in pixels of the fed frames or of ``source_size`` (W, H) when they were
        resized from it; query frames count from the first frame fed."""
        return OfflineStream(self, grid_size=grid_size, queries=queries, segm_mask=segm_mask,
                             grid_query_frame=grid_query_frame,
                             backward_tracking=backward_tracking, source_size=source_size)


class OfflineStream:
    """Offline tracking of frames fed as they come (``tracker.stream(...)``).

    ``feed(frames)`` takes uint8 frames ``(T, H, W, 3)`` (or one ``(H, W, 3)``) and runs the
    encoder on them at once, so a caller's decoding overlaps the GPU's work and the frames
    are not kept, only their features (on the model's device: memory still grows with the
    clip, as offline tracking needs). ``finish()`` tracks the whole clip: identical to
    ``tracker.track()`` of all the frames (the encoder sees the same chunks). ``push(frames)``
    also returns the tracks of every frame so far, a full offline run per call.
    """

    def __init__(self, engine: CoTracker3OfflineTracker, *, grid_size=0, queries=None,
                 segm_mask=None, grid_query_frame=0, backward_tracking=False,
                 source_size: tuple[int, int] | None = None) -> None:
        self.engine = engine
        self.source_size = source_size
        self.prompt_args = dict(grid_size=grid_size, queries=queries, segm_mask=segm_mask,
                                grid_query_frame=grid_query_frame)
        self.backward = bool(backward_tracking)
        self.size: tuple[int, int] | None = None
        self.waiting: list[np.ndarray] = []  # frames short of a whole encoder chunk
        self.chunks: list[list[torch.Tensor]] = []  # each encoded chunk's pyramid
        self.received = 0
        self.needed = 1
        self.finished = False

    def feed(self, frames: Any) -> None:
        """Encode ``frames`` (whole encoder chunks now, the rest with the next frames)."""
        if self.finished:
            raise RuntimeError("this stream is finished; start a new one")
        frames = stream_frames(frames, self.size)
        if self.size is None:
            size = (frames.shape[2], frames.shape[1])
            self.prompt, clip = check_stream_prompt(size, self.source_size, **self.prompt_args)
            self.needed, self.size = clip.num_frames, size
        self.received += len(frames)
        kept = len(self.waiting)  # copies already
        self.waiting.extend(frames)
        chunk = self.engine.model.cfg.encoder_chunk
        whole = len(self.waiting) // chunk * chunk
        if whole:
            self.chunks += self._encode(self.waiting[:whole])
        rest, new = self.waiting[whole:], max(kept - whole, 0)
        # Frames of this batch that wait are copied: a caller may reuse its buffer.
        self.waiting = rest[:new] + [f.copy() for f in rest[new:]]

    def push(self, frames: Any) -> Tracks:
        self.feed(frames)
        return self._tracks([list(c) for c in self.chunks])  # the stream keeps its own

    def finish(self) -> Tracks:
        """Track the whole stream (its features are released as they are joined)."""
        check_stream_length(self.received, self.needed)
        self.finished = True
        chunks, self.chunks = self.chunks, []
        return self._tracks(chunks)

    def _encode(self, frames: list[np.ndarray]) -> list[list[torch.Tensor]]:
        engine = self.engine
        with torch.inference_mode(), engine.autocast(), engine.heap():
            return engine._encode(frames)

    def _tracks(self, chunks: list[list[torch.Tensor]]) -> Tracks:
        """Tracks of every frame received: ``chunks`` and the frames still waiting."""
        check_stream_length(self.received, self.needed)
        if self.waiting:  # encoded for this result only: `finish` encodes them with the rest
            chunks = chunks + self._encode(self.waiting)
        engine = self.engine
        clip = blank_clip(self.received, self.size, self.source_size)
        queries, support = engine._model_queries(self.size, self.prompt)
        groups = engine._groups(len(queries), support)
        with torch.inference_mode(), engine.autocast(), engine.heap():
            pyramid = engine._pyramid(chunks)
            xy, vis, conf = engine._track_features(pyramid, queries, groups, support,
                                                  self.backward)
        return engine._to_tracks(clip, queries, xy, vis, conf)


# -- Online -----------------------------------------------------------------------------------


@register("cotracker3-online")
class CoTracker3OnlineTracker(_CoTracker3Engine):
    """CoTracker3 online: windows of 16 frames moving by 8, memory bounded by the window.

    `track` runs the windows over a whole clip; `stream` takes frames as they come.
    Options as for ``cotracker3-offline`` (default checkpoint ``scaled_online``).
    """

    default_checkpoint = "scaled_online"
    model_class = CoTracker3Online
    streams = True

    def _feature_frames(self, num_frames: int) -> int:
        return min(num_frames, 16)  # one window

    def _visible(self, vis, conf):
        return vis * conf > 0.6

    def _run(self, frames, queries, groups, support, backward):
        windows = _Windows(self, queries, groups, support)
        windows.push(frames)
        out = windows.finish()
        if backward:
            rev_queries = queries.copy()
            rev_queries[:, 0] = len(frames) - 1 - rev_queries[:, 0]
            windows = _Windows(self, rev_queries, groups, support)
            windows.push(frames[::-1])
            rev = windows.finish()
            out = _merge_backward(out, tuple(r[::-1] for r in rev), queries[:, 0])
        return out

    def stream(
        self,
        *,
        grid_size: int = 0,
        queries: Any = None,
        segm_mask: Any = None,
        grid_query_frame: int = 0,
        source_size: tuple[int, int] | None = None,
    ) -> OnlineStream:
        """A stream to `OnlineStream.push` frames into; prompt as for `track`, in pixels of
        the pushed frames or of ``source_size`` (W, H) when they were resized from it (the
        tracks are in the same pixels); query frames count from the first frame pushed."""
        return OnlineStream(self, grid_size=grid_size, queries=queries, segm_mask=segm_mask,
                            grid_query_frame=grid_query_frame, source_size=source_size)


class _Windows:
    """Runs the online model over frames pushed in any amounts.

    A window of S frames starts every S/2 frames and runs once all its frames are in; the
    last, shorter window runs at `finish`. Only the frames the next window needs are kept.
    Rows before the current window are final; the rest may change with the next window.
    """

    def __init__(self, engine: CoTracker3OnlineTracker, queries: np.ndarray,
                 groups: list[np.ndarray], support: bool) -> None:
        self.engine, self.model = engine, engine.model
        self.S, self.step = self.model.cfg.window_len, self.model.step
        self.groups, self.N = groups, len(queries)
        self.states = []
        for idx in groups:
            q = queries[idx]
            if support:
                q = np.concatenate([q, _support_points()])
            self.states.append(self.model.init_state(torch.from_numpy(q).to(engine.device)[None]))
        self.start = 0  # first frame of the next window
        self.buffer: list[np.ndarray] = []  # frames from `start` on
        self.received = 0
        self.windows_run = 0
        self.final: list[tuple[np.ndarray, ...]] = []  # rows [0, start)
        self.pending: tuple[np.ndarray, ...] | None = None  # rows [start, start + S - step)
        self.overlap: list[torch.Tensor] | None = None  # features of rows [start, start+S-step)
        self.queued: tuple | None = None  # the last window's results, still on their way

    def push(self, frames: Iterable[np.ndarray]) -> None:
        for frame in frames:
            self.buffer.append(frame)
            self.received += 1
            if self.received == self.start + self.S:
                self._run_window(self.S)

    def finish(self) -> tuple[np.ndarray, ...]:
        """Run the last window if frames are left, and return all rows."""
        if self.windows_run == 0 or self.start + self.S - self.step < self.received:
            if self.received > self.start:
                self._run_window(self.received - self.start)
        return self.rows()

    def rows(self) -> tuple[np.ndarray, ...]:
        self._collect()
        parts = self.final + ([self.pending] if self.pending is not None else [])
        if not parts:
            empty = np.zeros((0, self.N), np.float32)
            return np.zeros((0, self.N, 2), np.float32), empty, empty.copy()
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))

    @torch.inference_mode()
    def _run_window(self, length: int) -> None:
        # Features are per frame: reuse those of the frames shared with the previous window.
        known = 0 if self.overlap is None else self.overlap[0].shape[1]
        frames = self.engine._frames_to_model(self.buffer[known:length])
        with self.engine.autocast():
            new = self.model.encode(frames)
        if self.overlap is not None:
            new = [torch.cat(pair, dim=1) for pair in zip(self.overlap, new, strict=True)]
        self.overlap = [p[:, self.step :].clone() for p in new] if length == self.S else None
        pyramid = self.model.pad_window(new)
        outs = []
        for state in self.states:
            with self.engine.autocast():
                out = self.model.track(pyramid, state, length, self.engine.iters)
            # To the host without waiting (pinned memory on CUDA): the GPU goes on with the
            # next window while the CPU reads these.
            outs.append(tuple(o[0].float().to("cpu", non_blocking=True) for o in out))
        done = None
        if self.engine.device.type == "cuda":
            done = torch.cuda.Event()
            done.record()
        self._collect()  # the previous window's results, read now that this one is queued
        self.queued = (length, outs, done)
        self.start += self.step
        self.buffer = self.buffer[self.step :]
        self.windows_run += 1

    def _collect(self) -> None:
        """File the queued window's results: rows before the next window are final, the
        rest pending (the next window starts `step` frames later and redoes them)."""
        if self.queued is None:
            return
        length, outs, done = self.queued
        self.queued = None
        if done is not None:
            done.synchronize()
        xy = np.zeros((length, self.N, 2), np.float32)
        vis = np.zeros((length, self.N), np.float32)
        conf = np.zeros((length, self.N), np.float32)
        for idx, (c, v, f) in zip(self.groups, outs, strict=True):
            n = len(idx)
            xy[:, idx], vis[:, idx], conf[:, idx] = (o.numpy()[:, :n] for o in (c, v, f))
        self.final.append((xy[: self.step], vis[: self.step], conf[: self.step]))
        self.pending = (xy[self.step :], vis[self.step :], conf[self.step :])
        if length <= self.step:  # nothing left for a next window: all rows are final
            self.pending = None
            self.final[-1] = (xy, vis, conf)


class OnlineStream:
    """Online tracking of frames as they arrive (``tracker.stream(...)``).

    ``push(frames)`` takes uint8 frames ``(T, H, W, 3)`` (or one ``(H, W, 3)``) and returns
    `Tracks` of the frames covered by a window so far: a window runs once its 16 frames are
    in, so up to 15 recent frames wait, and the last 8 rows returned may still be refined by
    the next window. ``feed(frames)`` takes them without returning tracks: building those
    copies every row so far and waits for the GPU, which a caller that only wants the end
    result need not pay on every batch. ``finish()`` runs the last window and returns the
    tracks of every frame,
    identical to ``tracker.track()`` on all frames at once. Memory is bounded by the window
    (plus the returned tracks), whatever the stream's length.
    """

    def __init__(self, engine: CoTracker3OnlineTracker, *, grid_size=0, queries=None,
                 segm_mask=None, grid_query_frame=0,
                 source_size: tuple[int, int] | None = None) -> None:
        self.engine = engine
        self.source_size = source_size
        self.prompt_args = dict(grid_size=grid_size, queries=queries, segm_mask=segm_mask,
                                grid_query_frame=grid_query_frame)
        self.windows: _Windows | None = None
        self.size: tuple[int, int] | None = None
        self.needed = 1  # frames the prompt refers to
        self.finished = False

    def _start(self, size: tuple[int, int]) -> None:
        self.prompt, self.clip = check_stream_prompt(size, self.source_size, **self.prompt_args)
        self.needed = self.clip.num_frames
        self.queries, support = self.engine._model_queries(size, self.prompt)
        groups = self.engine._groups(len(self.queries), support)
        self.size = size
        self.windows = _Windows(self.engine, self.queries, groups, support)

    def push(self, frames: Any) -> Tracks:
        self.feed(frames)
        return self._tracks(self.windows.rows())

    def feed(self, frames: Any) -> None:
        """`push` without building the tracks so far."""
        if self.finished:
            raise RuntimeError("this stream is finished; start a new one")
        frames = stream_frames(frames, None if self.windows is None else self.size)
        if self.windows is None:
            self._start((frames.shape[2], frames.shape[1]))
        with self.engine.heap():
            self.windows.push(frames)

    def finish(self) -> Tracks:
        """Track the frames still waiting and return the tracks of the whole stream."""
        check_stream_length(0 if self.windows is None else self.windows.received, self.needed)
        self.finished = True
        with self.engine.heap():
            rows = self.windows.finish()
        return self._tracks(rows)

    def _tracks(self, rows) -> Tracks:
        xy, vis, conf = rows
        clip = blank_clip(len(xy), self.size, self.clip.source_size)
        return self.engine._to_tracks(clip, self.queries, xy, vis, conf)
