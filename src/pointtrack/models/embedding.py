"""The token embedding's narrow inputs in one GPU kernel.

Each refinement step embeds, for every token (track x frame), its visibility and confidence
logits and a sine encoding of its motion to the next and from the previous frame (86 values)
through the input layer's matching columns, plus a per-frame bias (the time embedding). In
PyTorch that is ten passes over ``tokens x 86`` floats (differences, divisions, products,
sines, concatenations, a cast) before the product and one more pass over the tokens for the
bias. `embed_narrow` computes the 86 values in registers, multiplies them with the weight
(`tl.dot`, fp32 sums) and adds the bias in the same kernel: one write of the tokens.

It runs on CUDA with Triton in bf16/fp16 (`_embedding_kernel`, imported on first use) where
the model's config asks for it (`CoTracker3Config.fused_embedding`: off until measured on a
GPU); fp32 keeps the PyTorch path (`narrow_inputs`), the parity path. The sines (libdevice's)
and divisions (IEEE) are PyTorch's; the product's sums run in another order,
and the bias is added before the one rounding instead of after.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import corr_triton

BLOCK_M = 64  # tokens per program
BLOCK_C = 128  # output channels per product


def available(weight: Tensor) -> bool:
    """Whether `embed_narrow` runs for a model whose weights are like ``weight``: CUDA with
    Triton, reduced precision."""
    return corr_triton.available(weight) and weight.dtype != torch.float32


def embed_narrow(track: Tensor, vis: Tensor, conf: Tensor, extent: Tensor, weight: Tensor,
                 time_bias: Tensor, num_freqs: int) -> Tensor:
    """Tokens ``(B, N, T, C)`` in ``weight``'s dtype from positions ``track (B, N, T, 2)``
    (feature pixels, fp32, contiguous), logits ``vis`` and ``conf (B, T, N)``, the feature map
    ``extent (2,)``, the input layer's narrow columns ``weight (C, 2 + 4 + 8 * num_freqs)``
    and the per-frame bias ``time_bias (1, 1, T, C)``."""
    from ._embedding_kernel import _narrow_tokens_kernel

    B, N, T, _ = track.shape
    C, K = weight.shape
    if K != 6 + 8 * num_freqs or K > 128 or time_bias.shape[-2:] != (T, C):
        raise ValueError(f"embed_narrow: weight {tuple(weight.shape)} and time_bias "
                         f"{tuple(time_bias.shape)} do not match {num_freqs} frequencies, "
                         f"{T} frames")
    track = track.float().contiguous()
    weight, time_bias = weight.contiguous(), time_bias.contiguous()
    out = torch.empty(B, N, T, C, device=track.device, dtype=weight.dtype)
    M = B * N * T
    if M == 0:
        return out
    _narrow_tokens_kernel[(-(-M // BLOCK_M),)](
        track, vis, conf, extent.float(), weight, time_bias, out,
        M, N, T, *vis.stride(), *conf.stride(),
        C=C, K=K, FREQS=num_freqs, BLOCK_M=BLOCK_M, BLOCK_K=128, BLOCK_C=BLOCK_C,
        num_warps=4,
    )
    return out
