"""Instance norm, ReLU and the residual block's add + ReLU in one kernel, for the encoder on
the GPU in bf16/fp16.

The eager encoder spends most of its time around its convolutions: each instance norm is a
statistics pass and a transform pass (PyTorch runs it as a batch norm), then a ReLU, and at a
residual block's end an add and another ReLU, each a pass over the activations. Compiling
the encoder fuses them (0.21 against 0.60 ms a frame on an H200) but costs 12-35 s a
process. `norm_act` does them in one kernel per norm: ``relu(norm(x))``, ``norm(x)``, or the
block's end ``relu(relu(norm(x)) + skip)``, reading each plane three times (it stays in L2)
and writing it once, in fp32 until the one rounding.

On by default (``POINTTRACK_FUSED_ENCODER=0`` turns it off): on an H200 one 16-frame chunk took
8.25 against 9.67 ms eager, and came out closer to fp32 (benchmarks/NOTES.md, session 19). Not
inside ``torch.compile``, which fuses these itself. Elsewhere the same results come from
PyTorch ops (`cotracker3.instance_norm`).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from . import corr_triton

ENABLED = os.environ.get("POINTTRACK_FUSED_ENCODER", "1") != "0"
BLOCK = 1024  # elements of a plane per step


def available(x: Tensor) -> bool:
    """Whether `norm_act` runs for ``x``: switched on, CUDA with Triton, reduced precision
    (fp32 keeps PyTorch's ops, the parity path), a contiguous NCHW tensor, not being compiled."""
    if torch.compiler.is_compiling():
        # Asked first: torch.compile takes it as a constant. The Triton lookup below broke
        # the graph (torch 2.11), so the check ran eagerly, not compiling, and chose the kernel.
        return False
    return (ENABLED and x.dtype != torch.float32 and corr_triton.available(x)
            and x.dim() == 4 and x.is_contiguous())


def norm_act(x: Tensor, eps: float, relu: bool = True, skip: Tensor | None = None) -> Tensor:
    """The instance norm (no affine) of ``x (N, C, H, W)``, then a ReLU if ``relu``, then
    with ``skip`` (same shape) ``relu(that + skip)``. A new tensor, in ``x``'s dtype."""
    from ._norm_act_kernel import _norm_act_kernel

    if not x.is_contiguous() or (skip is not None and (skip.shape != x.shape
                                                       or not skip.is_contiguous())):
        raise ValueError("norm_act takes contiguous NCHW tensors of one shape")
    out = torch.empty_like(x)
    N, C, H, W = x.shape
    if out.numel():
        _norm_act_kernel[(N * C,)](
            x, x if skip is None else skip, out, H * W, eps,
            RELU=relu, SKIP=skip is not None, BLOCK=BLOCK, num_warps=4,
        )
    return out
