"""The versions of one model under a TF Serving base path (`<base>/<version>/saved_model.pb`).

A new version is loaded and warmed up off the request path, then swapped in by replacing one
dict reference, so a request sees either the old or the new set of versions, never a
half-loaded one. A version that fails to load or to warm up is recorded (state END with its
error) and the versions already loaded keep serving: the rollback. The newest
`keep_versions` loaded versions stay loaded, as TF Serving's latest-N version policy does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
from typing import Optional

import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from pipeline.names import TRANSFORM_SIGNATURE
from serving.tensors import RequestError, Signature

log = logging.getLogger(__name__)

# Signatures the server calls; transform_features returns sparse tensors, which TF Serving's
# REST API cannot return either.
SKIPPED_SIGNATURES = (TRANSFORM_SIGNATURE,)


@dataclasses.dataclass
class LoadedVersion:
    version: int
    path: str
    signatures: dict[str, Signature]
    signature_def: dict  # the SignatureDefMap as TF Serving's metadata endpoint returns it
    loaded: object  # keeps the SavedModel (and its variables) alive

    def signature(self, name: str) -> Signature:
        if name not in self.signatures:
            raise RequestError(
                f"signature_name '{name}' not found in model version "
                f"{self.version}; available: {', '.join(sorted(self.signatures))}"
            )
        return self.signatures[name]


def _fingerprint(path: str) -> tuple:
    """Names and sizes of the files of a version directory: unchanged between two polls means
    the Pusher (or a copy) has finished writing it."""
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                entries.append((os.path.relpath(full, path), os.path.getsize(full)))
            except OSError:
                pass
    return tuple(sorted(entries))


def load_version(path: str, version: int) -> LoadedVersion:
    """Loads a SavedModel and warms up every signature with one all-missing row."""
    loaded = tf.saved_model.load(path)
    signatures = {
        name: Signature(name, fn)
        for name, fn in loaded.signatures.items()
        if name not in SKIPPED_SIGNATURES
    }
    if not signatures:
        raise ValueError(f"{path} has no servable signatures")
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    signature_defs = proto.meta_graphs[0].signature_def
    for name, signature in signatures.items():
        # What TF Serving's Classify/Regress check (serving/classify_regress.py).
        signature.method_name = signature_defs[name].method_name
    for signature in signatures.values():
        outputs = signature(
            {
                key: [signature.convert(key, _warmup_value(signature, key))]
                for key in signature.inputs
            }
        )
        for key, value in outputs.items():
            if value.dtype.kind == "f" and not all(math.isfinite(v) for v in value.ravel()):
                raise ValueError(
                    f"warm-up of signature '{signature.name}': output '{key}' "
                    f"is not finite: {value.ravel()[:4]}"
                )
    signature_def = {
        "signature_def": json_format.MessageToDict(
            proto.meta_graphs[0],
            preserving_proto_field_name=True,
            including_default_value_fields=True,
        ).get("signature_def", {})
    }
    return LoadedVersion(version, path, signatures, signature_def, loaded)


def _warmup_value(signature: Signature, key: str):
    dtype = signature.inputs[key]
    if key == "examples" and dtype == tf.string:
        return {"b64": ""}  # an empty serialized tf.Example: every feature missing
    return 0 if dtype.is_integer else None


class ModelStore:
    """Watches `base_path` and holds the loaded versions."""

    def __init__(self, base_path: str, keep_versions: int = 2):
        self.base_path = base_path
        self.keep_versions = keep_versions
        self._loaded: dict[int, LoadedVersion] = {}  # replaced whole, never mutated
        self.failed: dict[int, tuple[tuple, str]] = {}  # version -> (fingerprint, error)
        self.loading: Optional[int] = None
        self._seen: dict[int, tuple] = {}
        self._lock = threading.Lock()  # one refresh at a time

    # ---- reading (request path) -------------------------------------------------------
    @property
    def versions(self) -> dict[int, LoadedVersion]:
        return self._loaded

    def get(self, version: Optional[int] = None) -> Optional[LoadedVersion]:
        loaded = self._loaded
        if version is None:
            return loaded[max(loaded)] if loaded else None
        return loaded.get(version)

    def label(self, label: str) -> Optional[LoadedVersion]:
        """`latest` is the newest loaded version, `previous` the one before it."""
        ordered = sorted(self._loaded, reverse=True)
        index = {"latest": 0, "previous": 1}.get(label)
        if index is None or index >= len(ordered):
            return None
        return self._loaded[ordered[index]]

    def status(self) -> list[dict]:
        """TF Serving's model_version_status list, newest first."""
        entries = {v: ("AVAILABLE", "OK", "") for v in self._loaded}
        for version, (_, error) in self.failed.items():
            entries.setdefault(version, ("END", "UNKNOWN", error))
        if self.loading is not None and self.loading not in entries:
            entries[self.loading] = ("LOADING", "OK", "")
        return [
            {
                "version": str(v),
                "state": state,
                "status": {"error_code": code, "error_message": message},
            }
            for v, (state, code, message) in sorted(entries.items(), reverse=True)
        ]

    # ---- refreshing (background) ------------------------------------------------------
    def _on_disk(self) -> dict[int, str]:
        if not os.path.isdir(self.base_path):
            return {}
        found = {}
        for name in os.listdir(self.base_path):
            path = os.path.join(self.base_path, name)
            if name.isdigit() and os.path.exists(os.path.join(path, "saved_model.pb")):
                found[int(name)] = path
        return found

    def refresh(self) -> list[int]:
        """Loads versions that appeared (newest first, only those that would be kept) once
        their files stopped changing; returns the versions newly loaded."""
        with self._lock:
            on_disk = self._on_disk()
            wanted = sorted(on_disk, reverse=True)[: self.keep_versions]
            newly = []
            for version in wanted:
                if version in self._loaded:
                    continue
                fingerprint = _fingerprint(on_disk[version])
                stable = self._seen.get(version) == fingerprint
                self._seen[version] = fingerprint
                failed = self.failed.get(version)
                if failed and failed[0] == fingerprint:
                    continue  # already failed with these files; retried when they change
                if not stable and self._loaded:
                    continue  # still being written: look again at the next poll
                self.loading = version
                try:
                    loaded = load_version(on_disk[version], version)
                except Exception as error:  # noqa: BLE001 (any load failure means rollback)
                    message = f"{type(error).__name__}: {error}"[:2000]
                    log.error(
                        "model version %s failed to load, still serving %s: %s",
                        version,
                        sorted(self._loaded) or "nothing",
                        message,
                    )
                    self.failed[version] = (fingerprint, message)
                    continue
                finally:
                    self.loading = None
                self.failed.pop(version, None)
                newly.append(version)
                kept = {**self._loaded, version: loaded}
                keep = sorted(kept, reverse=True)[: self.keep_versions]
                self._loaded = {v: kept[v] for v in keep}  # the atomic swap
                log.info("serving model version %s (loaded: %s)", version, keep)
            return newly

    def describe(self) -> str:
        return json.dumps({"base_path": self.base_path, "status": self.status()})
