"""Self-attention over short sequences (a track's 16 frames in the online model) as one
Triton kernel.

Flash-attention kernels tile queries and keys by 64-128: on sequences of 16 most of each
tile is padding, and cuDNN's took 0.54 ms for 4096 tracks x 16 frames x 8 heads on an H100,
several times what reading the inputs costs. Here one program packs several whole sequences
into a 128-row tile: a product of 128 x 128 scores, of which the blocks on the diagonal are
kept (the rest is masked before the softmax). Used on CUDA with Triton in bf16/fp16;
`Attention` uses PyTorch's SDPA everywhere else.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from . import corr_triton

MAX_LEN = 32  # longest sequence this kernel takes (longer ones go to SDPA)
ENABLED = os.environ.get("POINTTRACK_SHORT_ATTENTION", "1") != "0"


def available(q: Tensor) -> bool:
    """Whether `short_attention` runs for queries ``q (B, L, inner)``: CUDA with Triton, a
    reduced-precision dtype (fp32 keeps PyTorch's SDPA, the parity path) and L <= MAX_LEN."""
    return (ENABLED and q.shape[1] <= MAX_LEN and q.dtype != torch.float32
            and corr_triton.available(q))


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
    _short_attention_kernel[(-(-B // (rows // LP)), heads)](
        q, kv, out, B, L, q.stride(0), kv.stride(0), out.stride(0), 1.0 / math.sqrt(head_dim),
        HEADS=heads, HEAD_DIM=head_dim, BLOCK_D=max(16, 1 << (head_dim - 1).bit_length()),
        LP=LP, ROWS=rows, num_warps=num_warps,
    )
    return out.view(B, L, inner)
