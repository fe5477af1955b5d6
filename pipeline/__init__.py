"""Pipeline machinery: settings, the one `create_pipeline`, its components and the runners'
helpers. Importing it first sets up the process (pipeline/runtime.py: Keras 2, ...)."""

from pipeline import runtime  # noqa: F401 (before anything imports TensorFlow)
