"""pointtrack's trackers as a FiftyOne zoo model source (remotely-sourced model format).

``manifest.json`` beside this file lists ``cotracker3-offline``, ``cotracker3-online`` and
``lk``. `register_zoo_source` installs this directory into
``fo.config.model_zoo_dir/pointtrack-models`` the way ``foz.register_zoo_model_source``
installs a downloaded source (FiftyOne's own function only fetches GitHub repositories and
archives over the network), after which::

    model = foz.load_zoo_model("cotracker3-offline", grid_size=20, every=2)
    dataset.apply_model(model, label_field="tracks")

FiftyOne imports this file from the zoo directory and calls `download_model` and
`load_model`; they import everything from the installed ``pointtrack`` package, so the copy
never goes stale. Weights are resolved by pointtrack's checkpoint registry when the model
loads (``checkpoint=`` a name, path or URL; ``$POINTTRACK_CHECKPOINT_DIR``; the torch.hub
cache), not by FiftyOne's download step, so a local checkpoint works without internet.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

#: ``load_zoo_model`` keyword arguments that configure the FiftyOne model; all others go to
#: the tracker (``checkpoint``, ``device``, ``precision``, ``iters``, ...).
MODEL_OPTIONS = ("grid_size", "queries", "every", "fps", "max_frames", "include_occluded")

SOURCE_DIR = Path(__file__).resolve().parent


def register_zoo_source(overwrite: bool = True) -> str:
    """Install this model source into ``fo.config.model_zoo_dir`` and return its URL (the
    ``file://`` URI of this directory, as ``foz.list_zoo_model_sources()`` lists it).

    ``foz.delete_zoo_model_source(url)`` removes it again. With ``overwrite=False`` an
    existing installation is kept.
    """
    import fiftyone as fo
    import fiftyone.zoo.models as fozm

    manifest = json.loads((SOURCE_DIR / "manifest.json").read_text())
    # FiftyOne imports the module as sys.modules[<name>]: "pointtrack-models", a name no
    # importable package can have, so that it never shadows the pointtrack package.
    target = Path(fo.config.model_zoo_dir) / manifest["name"]
    url = SOURCE_DIR.as_uri()
    if target.is_dir() and not overwrite:
        return url
    manifest["url"] = url  # what marks a remote source to FiftyOne
    staging = target.with_name(f".{target.name}.part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy2(SOURCE_DIR / "__init__.py", staging / "__init__.py")
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=4) + "\n")
    # Swap in whole: a reader never sees a half-copied source. Downloaded model markers of
    # an earlier installation are kept.
    if target.is_dir():
        for marker in target.glob("*.json"):
            if marker.name != "manifest.json":
                shutil.copy2(marker, staging / marker.name)
        shutil.rmtree(target)
    os.replace(staging, target)
    fozm._invalidate_zoo_models_manifest()  # FiftyOne may memoize the manifest
    return url


def download_model(model_name: str, model_path: str) -> None:
    """FiftyOne's download step: write a small marker file. The weights are not fetched here
    but resolved when the model loads, so a ``checkpoint=`` given then (a local file on a
    machine without internet) is used instead of the default download."""
    from pointtrack.models.weights import CHECKPOINTS

    engine = _engine(model_name)
    default = {"cotracker3-offline": "scaled_offline",
               "cotracker3-online": "scaled_online"}.get(engine)
    info = {"engine": engine, "default_checkpoint": default,
            "weights_url": CHECKPOINTS.get(default) if default else None}
    Path(model_path).parent.mkdir(parents=True, exist_ok=True)
    Path(model_path).write_text(json.dumps(info, indent=2) + "\n")


def load_model(model_name: str, model_path: str | None = None, **kwargs: Any):
    """The `TrackerModel` of ``model_name`` with its weights loaded (`CheckpointError` naming
    the URL and how to pass a local file if they cannot be found)."""
    from pointtrack.fiftyone.model import TrackerModel
    from pointtrack.trackers import load_tracker

    model_kwargs = {k: kwargs.pop(k) for k in MODEL_OPTIONS if k in kwargs}
    tracker = load_tracker(_engine(model_name), **kwargs)
    # CoTracker3 engines load their weights on first use: now, so that a missing checkpoint
    # fails in load_zoo_model rather than half-way through apply_model.
    getattr(tracker, "model", None)
    return TrackerModel(tracker, **model_kwargs)


def _engine(model_name: str) -> str:
    return model_name.split("@")[0]
