"""The CUDA correlation kernel (`_corr_cuda`) compiled for an H100/H200 (sm_90) without a GPU:
NVRTC from the nvidia-cuda-nvrtc wheel (the dev extra), register and spill counts from the
cuobjdump that Triton bundles. On a GPU a failed compile is not an error (the Triton kernel
takes over, slower, with a log line), and a kernel over its register budget still runs, with
fewer blocks an SM: CI is where either shows, not a benchmark on the device.
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pointtrack.models import _corr_cuda


def _nvrtc() -> ctypes.CDLL:
    for base in sys.path:
        for path in sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libnvrtc.so.*"))):
            if "builtins" not in path:
                return ctypes.CDLL(path)
    pytest.skip("needs NVRTC (the dev extra installs nvidia-cuda-nvrtc)")


def _cuobjdump() -> Path:
    try:
        import triton
    except ImportError:
        pytest.skip("needs Triton's bundled cuobjdump (the dev extra installs Triton)")
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not path.exists():
        pytest.skip("this Triton build bundles no cuobjdump")
    return path


@pytest.mark.parametrize("paired", [False, True], ids=["one-warp-a-frame", "paired-warps"])
def test_correlation_kernel_compiles_for_hopper_within_its_budget(paired, tmp_path):
    lib = _corr_cuda._Library(nvrtc=_nvrtc(), driver=False)
    warps = _corr_cuda.WARPS
    blocks = _corr_cuda.min_blocks(warps, paired)
    source = _corr_cuda.PAIRED_SOURCE if paired else _corr_cuda.SOURCE
    cubin = tmp_path / "correlate.cubin"
    cubin.write_bytes(lib._compile(f"#define WARPS {warps}\n#define MIN_BLOCKS {blocks}\n"
                                   + source, "sm_90"))
    usage = subprocess.run([str(_cuobjdump()), "-res-usage", str(cubin)], capture_output=True,
                           text=True, check=True).stdout
    found = re.search(r"Function pointtrack_correlate:\s+REG:(\d+) STACK:(\d+) SHARED:\d+ "
                      r"LOCAL:(\d+)", usage)
    assert found, usage
    registers, stack, local = map(int, found.groups())
    assert stack == 0 and local == 0, f"spills: {usage}"
    # The design's occupancy: `blocks` blocks of `warps` warps fit an SM's 64K registers and
    # 228 KB of shared memory (1 KB of it reserved per block).
    assert registers * 32 * warps * blocks <= 65536, registers
    assert blocks * (_corr_cuda.shared_bytes(warps, paired) + 1024) <= 228 * 1024


def test_a_broken_source_is_an_error_naming_the_compiler(tmp_path):
    lib = _corr_cuda._Library(nvrtc=_nvrtc(), driver=False)
    with pytest.raises(RuntimeError, match="NVRTC"):
        lib._compile("#define WARPS 4\n#define MIN_BLOCKS 3\n" + _corr_cuda.SOURCE
                     + "\nthis is not C++;\n", "sm_90")
