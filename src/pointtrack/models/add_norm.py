"""Residual add + LayerNorm in one pass, writing wherever the next step reads.

The transformer's residual stream is the largest tensor in CoTracker3, and between two
matrix products it only gets an add, a LayerNorm and (between attention along time and
across tracks) a transpose: four or five passes over it in PyTorch, whose LayerNorm kernel
also reaches only about a third of the memory bandwidth at width 384. `add_norm` does all of
it in one read of each input: the sum, the transposed copy and up to two normalised versions
of it are written in the same pass.

Every tensor is a ``(P, Q, C)`` view whose last dimension is contiguous; the others may have
any strides, which is how a chunk of tracks lands in a frame-major buffer (and back). On CUDA
with Triton the kernel in `_add_norm_kernel` runs (imported on first use); elsewhere the same
function runs in PyTorch.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from . import corr_triton

ROWS = 8  # rows per program


def add_norm(
    x: Tensor,
    y: Tensor | None = None,
    *,
    sum_to: Tensor | None = None,
    norm_to: Tensor | None = None,
    affine_to: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-6,
    affine_eps: float = 1e-5,
) -> None:
    """``s = x + y`` (``x`` if ``y`` is None) written to ``sum_to`` (which may be ``x``),
    ``LayerNorm(s)`` without affine to ``norm_to`` (epsilon ``eps``) and with ``weight`` and
    ``bias`` to ``affine_to`` (epsilon ``affine_eps``). All ``(P, Q, C)``; the norms are taken
    of ``s`` as stored (rounded to its dtype), as separate PyTorch ops would see it."""
    if affine_to is not None and (weight is None or bias is None):
        raise ValueError("affine_to needs weight and bias")
    if x.is_cuda and corr_triton.available(x):
        _add_norm_triton(x, y, sum_to, norm_to, affine_to, weight, bias, eps, affine_eps)
        return
    if sum_to is x and y is not None:
        s = x.add_(y)
    else:
        s = x if y is None else x + y
        if sum_to is not None:
            sum_to.copy_(s)
    C = x.shape[-1]
    if norm_to is not None:
        norm_to.copy_(F.layer_norm(s, (C,), eps=eps))
    if affine_to is not None:
        affine_to.copy_(F.layer_norm(s, (C,), weight, bias, eps=affine_eps))


def _add_norm_triton(x, y, sum_to, norm_to, affine_to, weight, bias, eps, affine_eps) -> None:
    from ._add_norm_kernel import _add_norm_kernel

    P, Q, C = x.shape
    if P * Q == 0:
        return
    views = [x, y, sum_to, norm_to, affine_to]
    strides = []
    for v in views:
        if v is not None and (v.shape != x.shape or v.stride(-1) != 1):
            raise ValueError(f"add_norm views must be {tuple(x.shape)} with contiguous rows")
        strides += [v.stride(0), v.stride(1)] if v is not None else [0, 0]
    # Inputs and outputs not asked for get x's pointer: the kernel never touches them.
    pointers = [x if t is None else t for t in (*views, weight, bias)]
    _add_norm_kernel[(_cdiv(P * Q, ROWS),)](
        *pointers, P * Q, Q, eps, affine_eps, *strides,
        C=C, BLOCK_C=_next_pow2(C), ROWS=ROWS,
        HAS_Y=y is not None, WRITE_SUM=sum_to is not None, WRITE_NORM=norm_to is not None,
        WRITE_AFFINE=affine_to is not None,
        num_warps=4,
    )


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()
