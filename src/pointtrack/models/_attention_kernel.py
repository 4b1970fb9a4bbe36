"""The Triton kernel behind `attention.short_attention` (imported on first GPU use, so CPU
runs never load Triton)."""

import triton
import triton.language as tl


# The sequence count changes with the number of tracks: one compiled variant for all.
@triton.jit(do_not_specialize=["num_seqs", "L"])
def _short_attention_kernel(
    q_ptr, kv_ptr, out_ptr,
    num_seqs, L, stride_q, stride_kv, stride_out, scale,
    HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    LP: tl.constexpr, ROWS: tl.constexpr,
):
    # ROWS // LP whole sequences per program, each padded to LP rows: one (ROWS x ROWS)
    # product of which only the blocks on the diagonal count. The waste is cheap next to
    # what a flash kernel's 64-128 row tiles lose on sequences of 16.
    # Heads vary fastest over the grid: a row's heads are read by programs that run
    # together, so its cache lines are fetched once (4% faster than sequences first).
    head = tl.program_id(0)
    r = tl.arange(0, ROWS)
    seq = tl.program_id(1) * (ROWS // LP) + r // LP
    t = r % LP
    token = seq.to(tl.int64) * L + t
    live = (t < L) & (seq < num_seqs)
    d = tl.arange(0, BLOCK_D)
    mask = live[:, None] & (d < HEAD_DIM)[None, :]
    cols = head * HEAD_DIM + d[None, :]
    q = tl.load(q_ptr + token[:, None] * stride_q + cols, mask=mask, other=0.0)
    k = tl.load(kv_ptr + token[:, None] * stride_kv + cols, mask=mask, other=0.0)
    v = tl.load(kv_ptr + token[:, None] * stride_kv + HEADS * HEAD_DIM + cols, mask=mask,
                other=0.0)
    s = tl.dot(q, tl.trans(k)) * (scale * 1.4426950408889634)  # log2 units for exp2
    same = ((r // LP)[:, None] == (r // LP)[None, :]) & (t < L)[None, :]
    s = tl.where(same, s, float("-inf"))
    p = tl.exp2(s - tl.max(s, axis=1)[:, None])
    out = tl.dot(p.to(v.dtype), v) / tl.sum(p, axis=1)[:, None]
    tl.store(out_ptr + token[:, None] * stride_out + cols, out.to(out_ptr.dtype.element_ty),
             mask=mask)


# Query and key counts change with the number of tracks: one compiled variant for all.
@triton.jit(do_not_specialize=["num_queries", "num_keys", "stride_qb", "stride_kvb",
                               "stride_ob"])
def _few_keys_attention_kernel(
    q_ptr, kv_ptr, out_ptr,
    num_queries, num_keys,
    stride_qb, stride_q, stride_kvb, stride_kv, stride_ob, stride_out, scale,
    HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_Q: tl.constexpr, KP: tl.constexpr,
):
    # All keys of a group fit one tile: one product, an exact softmax and one more product,
    # with no running maximum to carry as in a flash kernel. Heads vary fastest over the grid
    # (as in `_short_attention_kernel`).
    head = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    group = tl.program_id(2).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    keys = tl.arange(0, KP)
    cols = head * HEAD_DIM + d[None, :]
    dmask = (d < HEAD_DIM)[None, :]
    qmask = (rows < num_queries)[:, None] & dmask
    kmask = (keys < num_keys)[:, None] & dmask
    q = tl.load(q_ptr + group * stride_qb + rows[:, None] * stride_q + cols, mask=qmask, other=0.0)
    kv = kv_ptr + group * stride_kvb + keys[:, None] * stride_kv + cols
    k = tl.load(kv, mask=kmask, other=0.0)
    v = tl.load(kv + HEADS * HEAD_DIM, mask=kmask, other=0.0)
    s = tl.dot(q, tl.trans(k)) * (scale * 1.4426950408889634)  # log2 units for exp2
    s = tl.where((keys < num_keys)[None, :], s, float("-inf"))
    p = tl.exp2(s - tl.max(s, axis=1)[:, None])
    out = tl.dot(p.to(v.dtype), v) / tl.sum(p, axis=1)[:, None]
    tl.store(out_ptr + group * stride_ob + rows[:, None] * stride_out + cols,
             out.to(out_ptr.dtype.element_ty), mask=qmask)
