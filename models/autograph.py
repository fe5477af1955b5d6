"""Keeps AutoGraph from re-compiling tf_keras's own code.

AutoGraph rewrites the Python of every function a `tf.function` calls, except in packages it
is told to leave alone; TensorFlow lists `keras` there but not `tf_keras`, the Keras 2 package
this template trains with (TF_USE_LEGACY_KERAS=1). Tracing `fit()`'s train step then rewrote
all of Keras's training loop, layers and metrics: 12 s of a 13 s three-epoch fit on the
shipped data, paid again by every Tuner trial. tf_keras is written for graph mode (as
`keras` is), so skipping it changes no result (measured: the same validation AUCs to the
last digit). Your own layers and train steps are still converted.
"""
from absl import logging

PACKAGE = "tf_keras"


def leave_tf_keras_alone() -> None:
    try:
        from tensorflow.python.autograph.core import config
    except ImportError:  # moved in a later TensorFlow: only slower tracing
        logging.warning("AutoGraph's config module is gone: tf_keras code will be converted")
        return
    rules = config.CONVERSION_RULES
    if not any(isinstance(r, config.DoNotConvert) and r.matches(PACKAGE) for r in rules):
        config.CONVERSION_RULES = (config.DoNotConvert(PACKAGE),) + tuple(rules)
