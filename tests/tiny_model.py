"""A tiny SavedModel in a TF Serving base path and the environment of a server over it, for
the model server's machinery tests (no pipeline run): `serving_default` takes `x` (DT_FLOAT,
one value per example) and returns `y` = 2x (0 for a missing, NaN, value) and `x_is_missing`
(DT_INT64)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import tensorflow as tf

NAME = "tiny"


class _Doubler(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        missing = tf.math.is_nan(x)
        return {"y": tf.where(missing, 0.0, x) * 2.0, "x_is_missing": tf.cast(missing, tf.int64)}


def base_path(tmp: Path) -> Path:
    """Where a server with `server_env(tmp)` looks for versions."""
    return tmp / "outputs" / "serving_model" / NAME


def write(tmp: Path, version: int = 1, module: Optional[tf.Module] = None) -> Path:
    """Version `version` of the model under `base_path(tmp)`, written beside and renamed into
    place (a server never sees half of it). `module` (a `serve` tf.function, the tiny model's
    by default) becomes its serving_default."""
    final = base_path(tmp) / str(version)
    staging = base_path(tmp).parent / f".{NAME}-{version}.tmp"
    module = module or _Doubler()
    tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve})
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, final)
    return final


def server_env(tmp: Path, **settings: str) -> dict[str, str]:
    """The environment of `tfx-template serve` over `base_path(tmp)` (no PIPELINE_* variable
    of the calling shell leaks in), with these PIPELINE_* settings added."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")},
        "PIPELINE_OUTPUT_DIR": str(tmp / "outputs"),
        "PIPELINE_NAME": NAME,
        "PIPELINE_SERVING_POLL_SECONDS": "0.3",
        "TF_USE_LEGACY_KERAS": "1",
        **settings,
    }
