"""The Triton kernels (correlation, add + norm, attention, norms) run on CPU
through Triton's interpreter, in fp32, against the PyTorch paths. CI has no GPU: this is where
the kernels' indexing, masks and border handling are checked on every run;
`tests/test_gpu.py` checks them compiled, in bf16, on a GPU.

The interpreter must be switched on before Triton is first imported, so each check runs in a
fresh interpreter process (``python tests/test_kernels_interpreted.py CHECK``) with
``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="needs Triton (the dev extra installs it)")


def _run(check: str, *args: str) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, __file__, check, *args], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ok {check}" in done.stdout


def test_correlation_kernel_matches_pytorch_path():
    _run("correlation")


@pytest.mark.parametrize("L", [1, 7, 16, 33, 82])
def test_short_attention_kernel_matches_sdpa(L):
    _run("short_attention", str(L))


@pytest.mark.parametrize("M", [64, 7])
def test_few_keys_attention_kernel_matches_sdpa(M):
    _run("few_keys_attention", str(M))


def test_add_norm_kernel_matches_pytorch():
    _run("add_norm")


def test_norm_act_kernel_matches_pytorch():
    _run("norm_act")


# -- the checks, run in the child process -----------------------------------------------------


def _sdpa(q, kv):
    import torch.nn.functional as F

    def heads(t):
        return t.reshape(t.shape[0], t.shape[1], 8, 48).transpose(1, 2)

    B, N, _ = q.shape
    out = F.scaled_dot_product_attention(heads(q), heads(kv[..., :384]), heads(kv[..., 384:]))
    return out.transpose(1, 2).reshape(B, N, 384)


def _interpreted(module: str, name: str) -> None:
    """Fail unless the kernel really runs in the interpreter (not a no-op check)."""
    from triton.runtime.interpreter import InterpretedFunction

    kernel = getattr(importlib.import_module(f"pointtrack.models.{module}"), name)
    assert isinstance(kernel, InterpretedFunction), type(kernel)


def check_correlation() -> None:
    import torch

    from pointtrack.models import corr_triton
    from pointtrack.models.cotracker3 import blend, gather_windows

    g = torch.Generator().manual_seed(0)
    T, n, H, W = 5, 4, 24, 32
    pyramid = [torch.randn(T, H >> lv, W >> lv, 128, generator=g) for lv in range(4)]
    support = [torch.randn(n, 49, 128, generator=g) for _ in range(4)]
    # Positions off the map on every side: border pixels must repeat.
    xy = torch.rand(n, T, 2, generator=g) * torch.tensor([W + 16.0, H + 16.0]) - 8
    out = corr_triton.correlate_volumes(pyramid, xy, support)
    _interpreted("_corr_kernel", "_correlate_kernel")
    assert out.shape == (n, T, 4, corr_triton.ROW)
    frames = torch.arange(T).expand(1, n, T)
    for level in range(4):
        at = xy[None] / 2**level
        window = gather_windows(pyramid[level][None], at, frames, 3)
        patch = blend(window, at).reshape(n, T, 49, -1)
        ref = torch.einsum("ntpc,nqc->ntpq", patch, support[level]).reshape(n, T, -1)
        torch.testing.assert_close(out[:, :, level, :2401], ref, rtol=1e-4, atol=1e-3)
        assert torch.all(out[:, :, level, 2401:] == 0)  # the GEMM's padding


def check_norm_act() -> None:
    import torch
    import torch.nn.functional as F

    from pointtrack.models import norm_act

    g = torch.Generator().manual_seed(0)
    # 40 x 50 = 2000 values a plane: two steps of the kernel's 1024, the second ragged.
    x = torch.randn(2, 3, 40, 50, generator=g) * 3 + 1
    skip = torch.randn(2, 3, 40, 50, generator=g)
    for relu, residual in ((True, None), (False, None), (True, skip)):
        out = norm_act.norm_act(x, 1e-5, relu, residual)
        ref = F.instance_norm(x, eps=1e-5)
        if relu:
            ref = F.relu(ref)
        if residual is not None:
            ref = F.relu(ref + residual)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    _interpreted("_norm_act_kernel", "_norm_act_kernel")


def check_short_attention(L: str) -> None:
    import torch

    from pointtrack.models import attention

    g = torch.Generator().manual_seed(int(L))
    B = 5  # with L <= 16: not a multiple of the sequences packed per program
    q = torch.randn(B, int(L), 384, generator=g)
    kv = torch.randn(B, int(L), 768, generator=g)
    out = attention.short_attention(q, kv, 8, 48)
    _interpreted("_attention_kernel", "_short_attention_kernel")
    torch.testing.assert_close(out, _sdpa(q, kv), rtol=1e-4, atol=1e-4)
    # Past the grid's limit on its second axis the sequences go in several launches.
    attention.MAX_GRID_Y = 1
    assert torch.equal(attention.short_attention(q, kv, 8, 48), out)


def check_few_keys_attention(M: str) -> None:
    import torch

    from pointtrack.models import attention

    g = torch.Generator().manual_seed(int(M))
    B, N = 2, 150  # three blocks of 64 queries, the last one ragged
    q = torch.randn(B, N, 384, generator=g)
    kv = torch.randn(B, int(M), 768, generator=g)
    out = attention.few_keys_attention(q, kv, 8, 48, block_q=64)
    _interpreted("_attention_kernel", "_few_keys_attention_kernel")
    torch.testing.assert_close(out, _sdpa(q, kv), rtol=1e-4, atol=1e-4)
    attention.MAX_GRID_Y = 1  # a launch per group, past the grid's limit on its third axis
    assert torch.equal(attention.few_keys_attention(q, kv, 8, 48, block_q=64), out)
    try:
        attention.few_keys_attention(q, torch.randn(B, 129, 768), 8, 48)
    except ValueError as e:
        assert "few_keys_attention takes" in str(e)
    else:
        raise AssertionError("129 keys were accepted")


def check_add_norm() -> None:
    import torch
    import torch.nn.functional as F

    from pointtrack.models.add_norm import _add_norm_triton

    g = torch.Generator().manual_seed(0)
    P, Q, C = 3, 5, 384
    x = torch.randn(P, Q, C, generator=g)
    y = torch.randn(P, Q, C, generator=g)
    weight, bias = torch.randn(C, generator=g), torch.randn(C, generator=g)
    # The sum lands transposed (frame-major), as the transformer writes it.
    sum_to = torch.empty(Q, P, C).transpose(0, 1)
    norm_to, affine_to = torch.empty(P, Q, C), torch.empty(P, Q, C)
    _add_norm_triton(x, y, sum_to, norm_to, affine_to, weight, bias, 1e-6, 1e-5)
    _interpreted("_add_norm_kernel", "_add_norm_kernel")
    s = x + y
    torch.testing.assert_close(sum_to, s)
    torch.testing.assert_close(norm_to, F.layer_norm(s, (C,), eps=1e-6), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(affine_to, F.layer_norm(s, (C,), weight, bias, eps=1e-5),
                               rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
    check, *arguments = sys.argv[1:]
    globals()[f"check_{check}"](*arguments)
    print(f"ok {check}")
