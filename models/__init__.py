"""The user's code for this dataset: features, the one preprocessing_fn, the model, the tuner."""

from pipeline import runtime  # noqa: F401 (Keras 2 before TensorFlow loads, in any process)
