"""The process set-up every entry point makes before TensorFlow, TFX or Beam load: import this
module first (`pipeline/__init__.py` and `models/__init__.py` do, so any import of the
project's code makes it). It imports nothing heavy.

- Keras 2 (`tf_keras`): Keras 3's `fit()` fails under MultiWorkerMirroredStrategy and
  parameter servers, and TFT's Keras layer and TFMA expect Keras 2 in TF 2.16.
- Garbage collection: importing TFX, TensorFlow and Beam leaves about 0.9 million objects
  that live until the process exits, and every full collection walks all of them again.
  Measured on a cold local run of the shipped data: full collections took 6.7 s of the run
  (2 s during the imports), and the interpreter's last collection at exit another 3.5 s.
- AutoGraph: see `leave_tf_keras_alone`.
- Google's cloud clients warn about this Python version on import, a page of FutureWarnings
  no user of this project can act on; other warnings still show.
"""

from __future__ import annotations

import contextlib
import gc
import os
import warnings
from typing import Iterator

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google(\.|$)")

# AutoGraph leaves this package's code unconverted (see leave_tf_keras_alone).
KERAS_PACKAGE = "tf_keras"


@contextlib.contextmanager
def paused_for_imports() -> Iterator[None]:
    """Imports without collections, then moves everything they created out of the collector's
    sight (`gc.freeze`): later collections only walk objects that the run itself creates."""
    gc.disable()
    try:
        yield
    finally:
        freeze_live_objects()
        gc.enable()


def freeze_live_objects() -> None:
    """Moves every object alive now out of the collector's sight. For objects that live until
    the process exits anyway: a command's imports and loaded model before its main work, or
    everything at the end of a run, where the interpreter's last full collection over them
    would be wasted work (the operating system frees the memory)."""
    gc.freeze()


def leave_tf_keras_alone() -> None:
    """Keeps AutoGraph from re-compiling tf_keras's own code.

    AutoGraph rewrites the Python of every function a `tf.function` calls, except in packages
    it is told to leave alone; TensorFlow lists `keras` there but not `tf_keras`. Tracing
    `fit()`'s train step then rewrote all of Keras's training loop, layers and metrics: 12 s
    of a 13 s three-epoch fit on the shipped data, paid again by every Tuner trial. tf_keras
    is written for graph mode (as `keras` is), so skipping it changes no result (measured: the
    same validation AUCs to the last digit). Your own layers and train steps are still
    converted. TensorFlow has no public switch for this: it edits AutoGraph's rule list, and
    only slows tracing down if a later TensorFlow moves that module.
    """
    from absl import logging

    try:
        from tensorflow.python.autograph.core import config
    except ImportError:
        logging.warning("AutoGraph's config module is gone: tf_keras code will be converted")
        return
    rules = config.CONVERSION_RULES
    if not any(isinstance(r, config.DoNotConvert) and r.matches(KERAS_PACKAGE) for r in rules):
        config.CONVERSION_RULES = (config.DoNotConvert(KERAS_PACKAGE),) + tuple(rules)
