"""Every Triton kernel compiled for an H100/H200 (sm_90) on the CPU: `triton.compile` runs
Triton's front end, its GPU passes and ptxas (bundled with Triton) without a GPU. CI has no
GPU and Triton's interpreter (`test_kernels_interpreted.py`) runs kernels as Python, so it
never applies the front end's rules (a session's kernel read a plain module-level float,
which compiles nowhere: every bf16 GPU test failed on the device). Also checks the PTX for
what the kernels rely on: tensor-core products.
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="needs Triton (the dev extra installs it)")

# Pointer arguments as the JIT sees PyTorch's tensors: 16-byte aligned.
ALIGNED = [["tt.divisibility", 16]]


def _compile(module: str, kernel: str, signature: dict, constexprs: dict, num_warps: int = 4):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(f"pointtrack.models.{module}"), kernel)
    names = list(signature)
    signature = {**signature, **{k: "constexpr" for k in constexprs}}
    attrs = {(names.index(k),): ALIGNED for k, v in signature.items() if v.startswith("*")}
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": num_warps})
    except RuntimeError as e:  # no ptxas or CUDA backend in this Triton build
        if "ptxas" in str(e) or "backend" in str(e).lower():
            pytest.skip(f"Triton cannot compile for CUDA here: {e}")
        raise
    return compiled.asm["ptx"]


def _pointers(*names: str, dtype: str = "bf16") -> dict:
    return {n: f"*{dtype}" for n in names}


def _ints(*names: str) -> dict:
    return dict.fromkeys(names, "i32")


@pytest.mark.parametrize("has_y,affine", [(True, False), (False, True)])
def test_add_norm_kernel_compiles(has_y, affine):
    ptx = _compile(
        "_add_norm_kernel", "_add_norm_kernel",
        {**_pointers("x_ptr", "y_ptr", "sum_ptr", "norm_ptr", "affine_ptr", "w_ptr", "b_ptr"),
         **_ints("M", "Q"), "eps": "fp32", "affine_eps": "fp32",
         **_ints("sxp", "sxq", "syp", "syq", "ssp", "ssq", "snp", "snq", "sap", "saq")},
        {"C": 384, "BLOCK_C": 512, "ROWS": 8, "HAS_Y": has_y, "WRITE_SUM": True,
         "WRITE_NORM": True, "WRITE_AFFINE": affine})
    assert "st.global" in ptx


@pytest.mark.parametrize("LP", [16, 128])
def test_short_attention_kernel_compiles(LP):
    ptx = _compile(
        "_attention_kernel", "_short_attention_kernel",
        {**_pointers("q_ptr", "kv_ptr", "out_ptr"),
         **_ints("num_seqs", "L", "stride_q", "stride_kv", "stride_out"), "scale": "fp32"},
        {"HEADS": 8, "HEAD_DIM": 48, "BLOCK_D": 64, "LP": LP, "ROWS": 128}, num_warps=8)
    assert "wgmma" in ptx or "mma.sync" in ptx


def test_few_keys_attention_kernel_compiles():
    ptx = _compile(
        "_attention_kernel", "_few_keys_attention_kernel",
        {**_pointers("q_ptr", "kv_ptr", "out_ptr"),
         **_ints("num_queries", "num_keys", "stride_qb", "stride_q", "stride_kvb",
                 "stride_kv", "stride_ob", "stride_out"), "scale": "fp32"},
        {"HEADS": 8, "HEAD_DIM": 48, "BLOCK_D": 64, "BLOCK_Q": 128, "KP": 64}, num_warps=8)
    assert "wgmma" in ptx or "mma.sync" in ptx


def test_correlation_kernel_compiles():
    ptx = _compile(
        "_corr_kernel", "_correlate_kernel",
        {**_pointers("f0", "f1", "f2", "f3", "q0", "q1", "q2", "q3"),
         **_pointers("xy_ptr", dtype="fp32"), **_pointers("out_ptr"),
         **_ints("T", "H", "W", "stride_xn", "stride_on", "stride_ot")},
        {"C": 128, "R": 3, "ROW_LEN": 2432, "BLOCK_T": 2, "PRECISION": "tf32"})
    assert "wgmma" in ptx or "mma.sync" in ptx


@pytest.mark.parametrize("skip", [False, True])
def test_norm_act_kernel_compiles(skip):
    ptx = _compile(
        "_norm_act_kernel", "_norm_act_kernel",
        {**_pointers("x_ptr", "skip_ptr", "out_ptr"), "HW": "i32", "eps": "fp32"},
        {"RELU": True, "SKIP": skip, "BLOCK": 1024})
    assert "st.global" in ptx
