"""The Triton kernel behind `add_norm.add_norm` (imported on first GPU use, so CPU runs never
load Triton)."""

import triton
import triton.language as tl


# Row counts change with every video length: specialising on them (divisibility by 16)
# would compile a new variant for each, mid-run.
@triton.jit(do_not_specialize=["M", "Q"])
def _add_norm_kernel(
    x_ptr, y_ptr, sum_ptr, norm_ptr, affine_ptr, w_ptr, b_ptr,
    M, Q, eps, affine_eps,
    sxp, sxq, syp, syq, ssp, ssq, snp, snq, sap, saq,  # (P, Q) strides of each view
    C: tl.constexpr, BLOCK_C: tl.constexpr, ROWS: tl.constexpr,
    HAS_Y: tl.constexpr, WRITE_SUM: tl.constexpr, WRITE_NORM: tl.constexpr,
    WRITE_AFFINE: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    p, q = rows // Q, rows % Q
    cols = tl.arange(0, BLOCK_C)
    mask = (rows < M)[:, None] & (cols < C)[None, :]
    s = tl.load(x_ptr + (p * sxp + q * sxq)[:, None] + cols[None, :], mask=mask, other=0.0)
    dtype = s.dtype
    s = s.to(tl.float32)
    if HAS_Y:
        y = tl.load(y_ptr + (p * syp + q * syq)[:, None] + cols[None, :], mask=mask, other=0.0)
        s = s + y.to(tl.float32)
    # The norm sees the sum as stored, as two separate ops would.
    s = s.to(dtype)
    if WRITE_SUM:
        tl.store(sum_ptr + (p * ssp + q * ssq)[:, None] + cols[None, :], s, mask=mask)
    if WRITE_NORM or WRITE_AFFINE:
        s = s.to(tl.float32)
        mean = tl.sum(s, axis=1) / C
        d = tl.where(mask, s - mean[:, None], 0.0)
        var = tl.sum(d * d, axis=1) / C
        if WRITE_NORM:
            n = d * tl.rsqrt(var + eps)[:, None]
            tl.store(norm_ptr + (p * snp + q * snq)[:, None] + cols[None, :], n.to(dtype),
                     mask=mask)
        if WRITE_AFFINE:
            w = tl.load(w_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
            b = tl.load(b_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
            n = d * tl.rsqrt(var + affine_eps)[:, None]
            tl.store(affine_ptr + (p * sap + q * saq)[:, None] + cols[None, :],
                     (n * w[None, :] + b[None, :]).to(dtype), mask=mask)
