"""The user's code for this dataset: features, the one preprocessing_fn, the model, the tuner."""
import os

# Keras 2 (tf_keras) everywhere, set before TensorFlow loads: Keras 3's fit() fails under
# MultiWorkerMirroredStrategy, and TFT's Keras layer and TFMA expect Keras 2 in TF 2.16.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
