"""The Triton kernel behind `norm_act.norm_act` (imported on first GPU use, so CPU runs never
load Triton)."""

import triton
import triton.language as tl


# Plane sizes change with the video's resolution only through the model's fixed input size,
# but a new one must not specialise a variant mid-run either.
@triton.jit(do_not_specialize=["HW"])
def _norm_act_kernel(
    x_ptr, skip_ptr, out_ptr,  # (planes, HW) contiguous; skip read only with SKIP
    HW, eps,
    RELU: tl.constexpr, SKIP: tl.constexpr, BLOCK: tl.constexpr,
):
    # One program per (frame, channel) plane: the mean, then the variance about it (biased,
    # as the instance norm's), then one pass that normalises, applies the ReLU, adds the
    # residual and applies the block's last ReLU, rounding once. The plane stays in L2
    # between the three passes.
    plane = tl.program_id(0).to(tl.int64) * HW
    x_ptr += plane
    out_ptr += plane
    offs = tl.arange(0, BLOCK)
    total = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, HW, BLOCK):
        total += tl.load(x_ptr + start + offs, mask=start + offs < HW, other=0.0).to(tl.float32)
    mean = tl.sum(total) / HW
    squares = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, HW, BLOCK):
        m = start + offs < HW
        d = tl.load(x_ptr + start + offs, mask=m, other=0.0).to(tl.float32) - mean
        squares += tl.where(m, d * d, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(squares) / HW + eps)
    for start in range(0, HW, BLOCK):
        m = start + offs < HW
        y = (tl.load(x_ptr + start + offs, mask=m, other=0.0).to(tl.float32) - mean) * rstd
        if RELU:
            y = tl.maximum(y, 0.0)
        if SKIP:
            skip = tl.load(skip_ptr + plane + start + offs, mask=m, other=0.0)
            y = tl.maximum(y + skip.to(tl.float32), 0.0)
        tl.store(out_ptr + start + offs, y.to(out_ptr.dtype.element_ty), mask=m)
