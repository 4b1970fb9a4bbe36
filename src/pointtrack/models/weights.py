"""Checkpoints: the official CoTracker3 weights by name, local files, URLs, and synthetic
weights for tests and benchmarks.

``checkpoint=`` anywhere in pointtrack accepts:

- a registry name (`CHECKPOINTS`): looked up first in ``$POINTTRACK_CHECKPOINT_DIR`` (a
  directory of ``<name>.pth`` files, for machines without internet), else downloaded once
  into the torch.hub cache (``$TORCH_HOME/hub/checkpoints``) with a progress bar;
- an ``https://`` URL, downloaded into the same cache, or a ``file://`` URL, read in place
  (no other scheme: plain ``http://`` could be tampered with on the way);
- a local file path;
- an in-memory state dict.

Files are read with ``torch.load(weights_only=True)``: a checkpoint is tensors and plain
containers only, and a pickle that would build any other object (and so could run code) is
refused before anything in it runs.
"""

from __future__ import annotations

import os
import pickle
import urllib.error
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import numpy as np
import torch
from torch import nn

CHECKPOINTS: dict[str, str] = {
    "scaled_offline": "https://huggingface.co/facebook/cotracker3/resolve/main/scaled_offline.pth",
    "scaled_online": "https://huggingface.co/facebook/cotracker3/resolve/main/scaled_online.pth",
}
CHECKPOINT_DIR_ENV = "POINTTRACK_CHECKPOINT_DIR"

CheckpointLike = str | os.PathLike | Mapping[str, Any] | None


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found, downloaded, read, or loaded into the model."""


def cache_path(url: str) -> Path:
    """Where torch.hub keeps the download of ``url``."""
    name = os.path.basename(urlparse(url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_state_dict(checkpoint: CheckpointLike, default: str, *, progress: bool = True) -> dict:
    """The state dict named by ``checkpoint`` (see the module doc); None means ``default``."""
    if checkpoint is None:
        checkpoint = default
    if isinstance(checkpoint, Mapping):
        return _unwrap(checkpoint, "the given state dict")
    text = os.fspath(checkpoint)
    if text in CHECKPOINTS:
        local = _from_checkpoint_dir(text)
        if local is not None:
            return _read_file(local)
        return _download(CHECKPOINTS[text], progress)
    url = urlparse(text)
    if url.scheme == "https":
        return _download(text, progress)
    if url.scheme == "file":
        if url.netloc not in ("", "localhost"):
            raise CheckpointError(f"checkpoint {text!r}: file:// URLs must name a local file")
        path = Path(url2pathname(unquote(url.path)))
        if not path.is_file():
            raise CheckpointError(f"checkpoint {text!r}: no such file {path}")
        return _read_file(path)
    if "://" in text:
        raise CheckpointError(
            f"checkpoint {text!r}: URL scheme {url.scheme!r} is not allowed (only https:// "
            f"and file://)"
        )
    path = Path(text).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {text!r} is neither a file nor a URL nor a known name "
            f"({', '.join(CHECKPOINTS)})"
        )
    return _read_file(path)


def load_weights(model: nn.Module, checkpoint: CheckpointLike, default: str,
                 *, progress: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> nn.Module:
    """Load ``checkpoint`` into ``model`` strictly: every key present, used, and of the model's
    shape, else `CheckpointError` listing the first offending keys.

    A model built on the meta device (no storage, no random init) gets a copy of each tensor
    made straight on ``device`` (default: the checkpoint's) and, for floating-point ones, in
    ``dtype``: a copy, so that it never shares memory with a state dict passed in."""
    state = load_state_dict(checkpoint, default, progress=progress)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected),
                       ("mis-shaped", misshaped)):
        if keys:
            more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
            problems.append(f"{len(keys)} {what} key(s): {', '.join(keys[:5])}{more}")
    if problems:
        raise CheckpointError(
            f"checkpoint does not fit {type(model).__name__}: " + "; ".join(problems)
        )
    on_meta = any(t.is_meta for t in expected.values())
    if on_meta:
        state = {
            k: v.to(device or v.device, dtype if dtype and v.is_floating_point() else v.dtype,
                    copy=True)
            for k, v in state.items()
        }
    model.load_state_dict(state, strict=True, assign=on_meta)
    return model


def _from_checkpoint_dir(name: str) -> Path | None:
    directory = os.environ.get(CHECKPOINT_DIR_ENV)
    if not directory:
        return None
    path = Path(directory).expanduser() / f"{name}.pth"
    return path if path.is_file() else None


def _download(url: str, progress: bool) -> dict:
    cached = cache_path(url)
    was_cached = cached.is_file()
    try:
        state = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=progress, weights_only=True
        )
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        if cached.is_file():  # a download that failed half-way must not hide a good file
            return _read_file(cached)
        reason = getattr(e, "reason", None) or e
        raise CheckpointError(
            f"cannot download checkpoint {url} ({reason}) and it is not in the cache "
            f"({cached}). Download it on a machine with internet and pass the file: "
            f"checkpoint='/path/to/{cached.name}' (CLI: --checkpoint PATH), or put it in the "
            f"directory named by ${CHECKPOINT_DIR_ENV}."
        ) from e
    except Exception as e:  # a corrupt or non-checkpoint download
        if not was_cached:  # do not keep a bad download where a later run would trust it
            cached.unlink(missing_ok=True)
        raise CheckpointError(f"{cached}: {_load_error(e)}") from e
    return _unwrap(state, url)


def _read_file(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: {_load_error(e)}") from e
    return _unwrap(state, str(path))


def _load_error(e: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # torch's refusal runs over many lines and suggests weights_only=False: never that. Its
    # "Unsupported global" line names what the pickle wanted to build or call.
    culprit = next((line for line in lines if "GLOBAL" in line or "global" in line), None)
    if isinstance(e, pickle.UnpicklingError) and culprit:
        return (f"refused: the checkpoint holds Python objects other than tensors, which could "
                f"run code when loaded ({culprit[:200]})")
    detail = next((line for line in lines if line.startswith("Unsupported")), None)
    text = detail or " ".join(lines) or type(e).__name__
    return f"not a readable PyTorch checkpoint ({text[:300]})"


def _unwrap(state: Any, where: str) -> dict:
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # training checkpoints wrap the weights
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{where}: not a state dict of tensors")
    return dict(state)


def synthetic_state_dict(shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict:
    """Deterministic random weights for the keys and ``shapes`` of a checkpoint.

    The recipe of the parity fixtures: per key, a float32 standard normal ``z`` from a
    generator seeded by ``(seed, crc32(key))``, scaled so activations stay in range (time
    embedding 0.5 z, virtual tracks z, context-norm gains 1 + 0.1 z, other 1-D tensors
    0.1 z, matrices and kernels z / sqrt(fan_in)).
    """
    state = {}
    for name, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        z = rng.standard_normal(shape, dtype=np.float32)
        if name.endswith("time_emb"):
            w = 0.5 * z
        elif name.endswith("virual_tracks"):
            w = z
        elif name.endswith("norm_context.weight"):
            w = 1 + 0.1 * z
        elif len(shape) == 1:
            w = 0.1 * z
        else:
            w = z / np.float32(np.sqrt(np.prod(shape[1:])))
        state[name] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    return state


def model_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Key -> shape of a model's state dict (input of `synthetic_state_dict`)."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}
