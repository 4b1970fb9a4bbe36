"""The 4D correlation of CoTracker3 as one fused GPU kernel (CUDA in bf16, else Triton).

`CoTracker3.correlate` in PyTorch gathers an 8x8 window of features around every track
position, correlates it with the query patch and blends the result bilinearly: three passes
over tensors of ``points x frames x 64 x 128`` that exist only to be read once. Here one
program per point, level and two frames keeps all of it on chip: it reads the query patch
once, loads each patch position's four bilinear neighbours straight from the feature map
(they share cache lines), blends them in fp32, correlates the patch with the query patch in
one matrix product and writes only the 49x49 volume, as a row of the correlation MLP's input.

The arithmetic is the same as the PyTorch path (border pixels repeat, x varies slowest in
both patches); products accumulate in fp32. Used on CUDA when Triton is installed (it comes
with PyTorch's CUDA wheels; the kernel itself is in `_corr_kernel`, imported on first use);
the PyTorch path is the reference and runs everywhere else. In bf16 on GPUs with bf16 tensor
cores, `_corr_cuda`'s kernel runs instead: it blends after the products, as the PyTorch path
does, with the products on tensor cores.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading

import torch
from torch import Tensor

ENABLED = os.environ.get("POINTTRACK_TRITON", "1") != "0"  # POINTTRACK_TRITON=0: PyTorch path
# POINTTRACK_CORR_CUDA=0: the Triton correlation kernel in bf16 too.
CUDA_KERNEL = os.environ.get("POINTTRACK_CORR_CUDA", "1") != "0"
ROW = 2432  # a volume row padded to a multiple of 64 elements: aligned, fast GEMM operands


def available(t: Tensor) -> bool:
    """Whether the fused kernel can run on tensors like ``t``."""
    return ENABLED and t.is_cuda and _triton_installed()


@functools.cache
def _triton_installed() -> bool:  # asked once per chunk of points: look it up once
    return importlib.util.find_spec("triton") is not None


def preload_kernels(device: torch.device | None = None) -> threading.Thread | None:
    """Import Triton and the fused kernels on a thread, where Triton is installed (and compile
    `_corr_cuda`'s kernel for ``device``, a CUDA device, with NVRTC).

    A process's first kernel launch imports Triton (0.2-0.3 s) and has it hash its own files
    into its cache key (0.4 s on an H200's host; the hashing runs without the GIL). The GPU
    engines start this when they load their weights, so it happens while the first video
    decodes rather than after. CPU work only: nothing here touches the GPU (the online engine
    captures CUDA graphs, which another thread's CUDA calls could break)."""
    if not (ENABLED and _triton_installed()):
        return None
    arch = None
    if CUDA_KERNEL and device is not None:
        from . import _corr_cuda

        arch = _corr_cuda._arch(device)  # a device query: here, not on the thread

    def load() -> None:
        try:
            if arch is not None:
                _corr_cuda.compile_for(arch)
            from triton.runtime.cache import triton_key  # Triton's own, cached per process

            from . import (  # noqa: F401
                _add_norm_kernel,
                _attention_kernel,
                _corr_kernel,
                _norm_act_kernel,
            )

            triton_key()
        except Exception:  # only a head start: the first launch does it otherwise
            pass

    thread = threading.Thread(target=load, name="pointtrack-triton", daemon=True)
    thread.start()
    return thread


def correlate_volumes(pyramid: list[Tensor], xy: Tensor, support: list[Tensor],
                      radius: int = 3, block_t: int = 2, num_warps: int = 4) -> Tensor:
    """Correlation volumes ``(n, T, 4, 2432)`` (the first 2401 of each row used, the rest
    zero) of tracks at ``xy (n, T, 2)`` (level-0 feature pixels) against query patches
    ``support[l] (n, 49, C)``, on the 4 pyramid levels ``(T, H >> l, W >> l, C)`` (channels
    last). One launch covers every point, frame and level."""
    if radius != 3 or len(pyramid) != 4:
        raise ValueError("the fused correlation is written for 7x7 patches on 4 levels")
    n, T, _ = xy.shape
    _, H, W, C = pyramid[0].shape
    dtype = pyramid[0].dtype
    for level, fmap in enumerate(pyramid):
        if fmap.shape[1:3] != (H >> level, W >> level):
            raise ValueError(f"pyramid level {level} has size {tuple(fmap.shape[1:3])}")
    out = torch.empty(n, T, 4, ROW, device=xy.device, dtype=dtype)
    if n == 0 or T == 0:
        return out
    xy = xy.float().contiguous()
    fmaps = [f.contiguous() for f in pyramid]
    queries = [q.to(dtype).contiguous() for q in support]
    if CUDA_KERNEL and dtype == torch.bfloat16 and C == 128:
        from . import _corr_cuda

        if _corr_cuda.correlate_volumes(fmaps, xy, queries, out):
            return out
    from ._corr_kernel import _correlate_kernel
    _correlate_kernel[(n, -(-T // block_t), 4)](
        *fmaps, *queries, xy, out,
        T, H, W,
        xy.stride(0),
        out.stride(0), out.stride(1),
        C=C, R=radius, ROW_LEN=ROW, BLOCK_T=block_t,
        PRECISION="ieee" if dtype == torch.float32 else "tf32",
        num_warps=num_warps,
    )
    return out
