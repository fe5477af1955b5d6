"""Sets the method names of a saved model's signatures (SignatureDef.method_name).

TF2's saving writes every signature as a predict signature ("tensorflow/serving/predict");
TF Serving's Classify and Regress want "tensorflow/serving/classify" / ".../regress" when it
runs with --enable_signature_method_name_check (and our server always checks them:
serving/classify_regress.py). The graph is the same whatever the name, so the name is
rewritten in saved_model.pb after saving, and fingerprint.pb (a checksum of saved_model.pb)
written again to match.
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging
from tensorflow.core.protobuf import saved_model_pb2

SAVED_MODEL_FILE = "saved_model.pb"
FINGERPRINT_FILE = "fingerprint.pb"


def read_method_names(saved_model_dir: str) -> dict[str, str]:
    """Signature name -> method name, as saved."""
    proto = _read(saved_model_dir)
    return {
        name: signature.method_name
        for name, signature in proto.meta_graphs[0].signature_def.items()
    }


def set_method_names(saved_model_dir: str, method_names: dict[str, str]) -> None:
    """Rewrites saved_model.pb with `method_names` (signature name -> method name); every
    named signature must exist. The file is replaced whole (written beside, then renamed)."""
    proto = _read(saved_model_dir)
    signatures = proto.meta_graphs[0].signature_def
    missing = sorted(set(method_names) - set(signatures))
    if missing:
        raise ValueError(
            f"{saved_model_dir}: no signature {', '.join(missing)} to set a method name on "
            f"(it has {', '.join(sorted(signatures))})"
        )
    for meta_graph in proto.meta_graphs:
        for name, method_name in method_names.items():
            if name in meta_graph.signature_def:
                meta_graph.signature_def[name].method_name = method_name
    path = os.path.join(saved_model_dir, SAVED_MODEL_FILE)
    partial = path + ".partial"
    with tf.io.gfile.GFile(partial, "wb") as f:
        f.write(proto.SerializeToString(deterministic=True))
    tf.io.gfile.rename(partial, path, overwrite=True)
    _rewrite_fingerprint(saved_model_dir)
    logging.info("Signature method names set in %s: %s", saved_model_dir, method_names)


def _read(saved_model_dir: str) -> saved_model_pb2.SavedModel:
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(saved_model_dir, SAVED_MODEL_FILE), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def _rewrite_fingerprint(saved_model_dir: str) -> None:
    """fingerprint.pb holds a checksum of saved_model.pb: written again by TF's own function,
    or removed (it is optional) where this TF version lacks it, never left stale."""
    path = os.path.join(saved_model_dir, FINGERPRINT_FILE)
    if not tf.io.gfile.exists(path):
        return
    try:
        from tensorflow.python.saved_model import fingerprinting_utils

        fingerprinting_utils.write_fingerprint(saved_model_dir)
    except (ImportError, AttributeError, ValueError) as error:
        logging.warning("fingerprint.pb removed, not rewritten (%s)", error)
        tf.io.gfile.remove(path)
