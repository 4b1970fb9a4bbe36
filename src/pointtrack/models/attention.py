"""Attention where a whole sequence, or all keys, fit one tile, as Triton kernels.

`short_attention`: self-attention along a track's frames (16 in an online window, up to 128
offline). Flash-attention kernels tile queries and keys by 64-128 and carry a running
softmax across tiles: on sequences of 16 most of each tile is padding (cuDNN's took 0.54 ms
for 4096 tracks x 16 frames x 8 heads on an H100, several times what reading the inputs
costs). Here one program packs whole sequences into a 128-row tile: a product of 128 x 128
scores, of which the blocks on the diagonal are kept (the rest is masked before the
softmax). At 82 frames it is one sequence per tile, 35% faster than flash on an H200.

`few_keys_attention`: every point of a frame reading the 64 virtual tracks; all keys fit one
tile, so one product, an exact softmax and one more product (22% faster than flash there).

Both read the heads straight from the projections' rows and write rows for the output
projection: no transposed copies. Used on CUDA with Triton in bf16/fp16; `Attention` uses
PyTorch's SDPA everywhere else (fp32 keeps it: the parity path).
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from . import corr_triton

MAX_LEN = 128  # longest sequence `short_attention` takes (longer ones go to SDPA)
MAX_KEYS = 128  # most keys `few_keys_attention` takes
MAX_GRID_Y = 65535  # CUDA's limit on a grid's second and third axes
ENABLED = os.environ.get("POINTTRACK_SHORT_ATTENTION", "1") != "0"


def _usable(q: Tensor) -> bool:
    """CUDA with Triton and a reduced-precision dtype (fp32 keeps PyTorch's SDPA, the parity
    path), unless switched off."""
    return ENABLED and q.dtype != torch.float32 and corr_triton.available(q)


def available(q: Tensor) -> bool:
    """Whether `short_attention` runs for queries ``q (B, L, inner)``: `_usable`, and
    L <= MAX_LEN."""
    return q.shape[1] <= MAX_LEN and _usable(q)


def short_attention(q: Tensor, kv: Tensor, heads: int, head_dim: int,
                    num_warps: int = 8) -> Tensor:
    """Softmax attention within each sequence: ``q (B, L, heads * head_dim)`` and ``kv (B, L,
    2 * heads * head_dim)`` (keys, then values) -> ``(B, L, heads * head_dim)``, scaled by
    1/sqrt(head_dim), as ``F.scaled_dot_product_attention`` on the split heads."""
    from ._attention_kernel import _short_attention_kernel

    B, L, inner = q.shape
    if L > MAX_LEN or kv.shape != (B, L, 2 * inner) or inner != heads * head_dim:
        raise ValueError(f"short_attention takes (B, L <= {MAX_LEN}, {heads * head_dim}) "
                         f"queries and matching keys/values, got {tuple(q.shape)}, "
                         f"{tuple(kv.shape)}")
    q, kv = q.reshape(B * L, inner), kv.reshape(B * L, 2 * inner)  # rows of tokens
    if q.stride(1) != 1 or kv.stride(1) != 1:
        q, kv = q.contiguous(), kv.contiguous()
    out = torch.empty(B * L, inner, device=q.device, dtype=q.dtype)
    LP = max(16, 1 << (L - 1).bit_length())
    rows = 128
    # The sequences' blocks are the grid's second axis (at most 65535): more go in launches.
    per_launch = MAX_GRID_Y * (rows // LP)
    for s0 in range(0, B, per_launch):
        n = min(per_launch, B - s0)
        part = slice(s0 * L, (s0 + n) * L)
        _short_attention_kernel[(heads, -(-n // (rows // LP)))](
            q[part], kv[part], out[part], n, L, q.stride(0), kv.stride(0), out.stride(0),
            1.0 / math.sqrt(head_dim), HEADS=heads, HEAD_DIM=head_dim,
            BLOCK_D=max(16, 1 << (head_dim - 1).bit_length()), LP=LP, ROWS=rows,
            num_warps=num_warps,
        )
    return out.view(B, L, inner)


def few_keys_available(q: Tensor, kv: Tensor) -> bool:
    """Whether `few_keys_attention` runs for queries ``q (B, N, inner)`` over keys and values
    ``kv (B, M, 2 * inner)``: `_usable`, and M <= MAX_KEYS."""
    return kv.shape[1] <= MAX_KEYS and _usable(q)


def few_keys_attention(q: Tensor, kv: Tensor, heads: int, head_dim: int,
                       block_q: int = 128, num_warps: int = 8) -> Tensor:
    """Softmax attention of ``q (B, N, heads * head_dim)`` over a few keys ``kv (B, M,
    2 * heads * head_dim)`` (keys, then values; M <= MAX_KEYS) -> ``(B, N, heads * head_dim)``,
    as `short_attention` computes it."""
    from ._attention_kernel import _few_keys_attention_kernel

    B, N, inner = q.shape
    M = kv.shape[1]
    if M > MAX_KEYS or kv.shape != (B, M, 2 * inner) or inner != heads * head_dim:
        raise ValueError(f"few_keys_attention takes (B, N, {heads * head_dim}) queries and "
                         f"(B, M <= {MAX_KEYS}, {2 * heads * head_dim}) keys/values, got "
                         f"{tuple(q.shape)}, {tuple(kv.shape)}")
    if q.stride(2) != 1 or kv.stride(2) != 1:
        q, kv = q.contiguous(), kv.contiguous()
    out = torch.empty(B, N, inner, device=q.device, dtype=q.dtype)
    for b0 in range(0, B, MAX_GRID_Y):  # groups are the grid's third axis
        b = slice(b0, b0 + MAX_GRID_Y)
        _few_keys_attention_kernel[(heads, -(-N // block_q), min(MAX_GRID_Y, B - b0))](
            q[b], kv[b], out[b], N, M, q.stride(0), q.stride(1), kv.stride(0), kv.stride(1),
            out.stride(0), out.stride(1), 1.0 / math.sqrt(head_dim),
            HEADS=heads, HEAD_DIM=head_dim, BLOCK_D=max(16, 1 << (head_dim - 1).bit_length()),
            BLOCK_Q=block_q, KP=max(16, 1 << (M - 1).bit_length()), num_warps=num_warps,
        )
    return out
