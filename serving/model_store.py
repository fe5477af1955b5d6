"""The versions of one model under a TF Serving base path (`<base>/<version>/saved_model.pb`).

A new version is loaded and warmed up off the request path, then swapped in by replacing one
dict reference, so a request sees either the old or the new set of versions, never a
half-loaded one. A version that fails to load or to warm up is recorded (state END with its
error) and the versions already loaded keep serving: the rollback. Which versions stay
loaded is TF Serving's version policy (ModelStore), labels come from its model config file.
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
from serving.model_config import (
    ModelConfigError,
    VersionPolicy,
    file_stamp,
    read_model_config,
)
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
    """Watches `base_path` and holds the loaded versions, as the version `policy` says.

    latest {N}: the newest N versions on disk that load (a version that failed is passed
    over, so a restart with broken newest versions serves the newest one that loads);
    specific {versions} / all {}: those versions on disk that load. A version removed from
    disk is unloaded at the next poll, and only versions on disk are listed in the status.
    A failed version is retried only when its files change: an idle server loads nothing.

    `labels` (label -> version) come from the model config file (serving/model_config.py),
    re-read when the file changes."""

    def __init__(
        self,
        base_path: str,
        policy: Optional[VersionPolicy] = None,
        config_file: str = "",
        model_name: str = "",
    ):
        self.base_path = base_path
        self.config_file = config_file
        self.model_name = model_name
        self.policy = policy or VersionPolicy("latest", num_versions=1)
        self.labels: dict[str, int] = {}
        self._config_stamp: Optional[tuple] = None
        if config_file:
            self._read_config(startup=True)
        self._loaded: dict[int, LoadedVersion] = {}  # replaced whole, never mutated
        self.failed: dict[int, tuple[tuple, str]] = {}  # version -> (fingerprint, error)
        self.loading: Optional[int] = None
        self.loads = 0  # load attempts, for the status log and tests
        self._seen: dict[int, tuple] = {}
        self._warned_labels: dict[str, int] = {}
        self._lock = threading.Lock()  # one refresh at a time

    # ---- the model config file -----------------------------------------------------------
    def _read_config(self, startup: bool = False) -> None:
        """Policy and labels from the config file; an unreadable edit keeps the last good
        ones (a bad file at startup is an error), as TF Serving's config reload does."""
        stamp = file_stamp(self.config_file)
        try:
            config = read_model_config(self.config_file, self.model_name)
        except ModelConfigError as error:
            if startup:
                raise
            log.error("%s; keeping the previous policy and labels", error)
            self._config_stamp = stamp
            return
        self._config_stamp = stamp
        if config.policy != self.policy or config.version_labels != self.labels:
            log.info(
                "model config %s: version policy %s, labels %s",
                self.config_file,
                config.policy.describe(),
                config.version_labels or "none",
            )
        self.policy, self.labels = config.policy, config.version_labels

    def _check_labels(self) -> None:
        """TF Serving refuses a config whose label names a version not loaded
        (unless --allow_version_labels_for_unavailable_models): said, once per change."""
        unavailable = {k: v for k, v in self.labels.items() if v not in self._loaded}
        if unavailable and unavailable != self._warned_labels:
            log.warning(
                "labels %s name versions that are not loaded: requests through them get 404 "
                "here; TF Serving refuses such a config unless started with "
                "--allow_version_labels_for_unavailable_models",
                unavailable,
            )
        self._warned_labels = unavailable

    # ---- reading (request path) -------------------------------------------------------
    @property
    def versions(self) -> dict[int, LoadedVersion]:
        return self._loaded

    def get(self, version: Optional[int] = None) -> Optional[LoadedVersion]:
        loaded = self._loaded
        if version is None:
            return loaded[max(loaded)] if loaded else None
        return loaded.get(version)

    def label_version(self, label: str) -> int:
        """The version a label names in the model config file; RequestError(400) with TF
        Serving's message for a label it does not define."""
        version = self.labels.get(label)
        if version is None:
            raise RequestError(f"Unrecognized servable version label: {label}", 400)
        return version

    def label(self, label: str) -> Optional[LoadedVersion]:
        """The loaded version a label names; None if that version is not loaded (TF Serving
        then answers NOT_FOUND for Specific(name, version)); RequestError(400) for an
        unknown label."""
        return self._loaded.get(self.label_version(label))

    def status(self) -> list[dict]:
        """TF Serving's model_version_status list, newest first: loaded, failed and loading
        versions, those on disk only."""
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
        """One poll: re-reads the config file if it changed, loads the versions the policy
        wants (newest first, each once its files stopped changing), unloads the others and
        those gone from disk; returns the versions newly loaded."""
        with self._lock:
            if self.config_file and file_stamp(self.config_file) != self._config_stamp:
                self._read_config()
            on_disk = self._on_disk()
            # Forget what is gone from disk: its failure, its fingerprint, its loaded model.
            for table in (self.failed, self._seen):
                for version in [v for v in table if v not in on_disk]:
                    del table[version]
            gone = [v for v in self._loaded if v not in on_disk]
            if gone:
                self._loaded = {v: m for v, m in self._loaded.items() if v in on_disk}
                log.info(
                    "model version(s) %s removed from disk: unloaded (loaded: %s)",
                    gone,
                    sorted(self._loaded),
                )
            candidates, limit = self.policy.candidates(on_disk)
            kept: dict[int, LoadedVersion] = {}
            newly = []
            for version in candidates:
                if limit is not None and len(kept) >= limit:
                    break
                if version in self._loaded:
                    kept[version] = self._loaded[version]
                    continue
                loaded = self._try_load(version, on_disk[version], serving=bool(kept))
                if loaded is not None:
                    kept[version] = loaded
                    newly.append(version)
                    # Serve it at once, beside what still serves until this poll ends.
                    self._loaded = {**self._loaded, version: loaded}
            if set(kept) != set(self._loaded):
                dropped = sorted(set(self._loaded) - set(kept))
                self._loaded = kept  # the atomic swap
                log.info(
                    "model version(s) %s unloaded by the version policy %s (loaded: %s)",
                    dropped,
                    self.policy.describe(),
                    sorted(kept, reverse=True),
                )
            if self.labels:
                self._check_labels()
            return newly

    def _try_load(self, version: int, path: str, serving: bool) -> Optional[LoadedVersion]:
        """Loads one version if its files are complete; None if it is still being written,
        failed before with these very files, or fails now (recorded in `failed`)."""
        fingerprint = _fingerprint(path)
        stable = self._seen.get(version) == fingerprint
        self._seen[version] = fingerprint
        failed = self.failed.get(version)
        if failed and failed[0] == fingerprint:
            return None  # already failed with these files; retried when they change
        if not stable and (self._loaded or serving):
            return None  # still being written: look again at the next poll
        self.loading = version
        self.loads += 1
        log.info("loading model version %s", version)
        try:
            loaded = load_version(path, version)
        except Exception as error:  # noqa: BLE001 (any load failure means rollback)
            message = _without_paths(f"{type(error).__name__}: {error}", path)[:2000]
            log.error(
                "model version %s failed to load, still serving %s: %s",
                version,
                sorted(self._loaded) or "nothing",
                message,
            )
            self.failed[version] = (fingerprint, message)
            return None
        finally:
            self.loading = None
        self.failed.pop(version, None)
        log.info("serving model version %s", version)
        return loaded

    def describe(self) -> str:
        return json.dumps({"base_path": self.base_path, "status": self.status()})


def _without_paths(message: str, path: str) -> str:
    """A load error as the status may show it to clients: the version's folder named
    relatively (`<version>/...`), not by its absolute path."""
    parent = os.path.dirname(os.path.abspath(path))
    return message.replace(parent + os.sep, "").replace(parent, ".")
