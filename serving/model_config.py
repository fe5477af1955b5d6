"""The served model's entry in a TF Serving model config file (--model_config_file, the text
proto deploy/kubernetes/models.config holds): its version policy and its version labels.

The local server reads the entry whose `name` is the served model's name. Read from it:
`model_version_policy` (latest {num_versions}, specific {versions}, all {}; unset = latest 1,
TF Serving's default) and `version_labels` (label -> version). Not read: `base_path` (the local
server serves the pipeline's serving_model_dir), `model_platform`, `logging_config`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2


class ModelConfigError(ValueError):
    """The model config file cannot be used: the message says which part and why."""


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ServableVersionPolicy: which versions on disk should be loaded."""

    kind: str = "latest"  # latest | specific | all
    num_versions: int = 1  # latest
    versions: frozenset[int] = frozenset()  # specific

    def candidates(self, on_disk: Iterable[int]) -> tuple[list[int], Optional[int]]:
        """(versions to try, newest first; how many of them to keep loaded, None = all)."""
        newest_first = sorted(on_disk, reverse=True)
        if self.kind == "specific":
            return [v for v in newest_first if v in self.versions], None
        if self.kind == "all":
            return newest_first, None
        return newest_first, self.num_versions

    def describe(self) -> str:
        if self.kind == "specific":
            return f"specific {{versions: {sorted(self.versions)}}}"
        if self.kind == "all":
            return "all {}"
        return f"latest {{num_versions: {self.num_versions}}}"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    policy: VersionPolicy
    version_labels: dict[str, int]


def read_model_config(path: str, model_name: str) -> ModelConfig:
    """The entry of `model_name` in the ModelServerConfig text proto at `path`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise ModelConfigError(f"model config file {path}: {error.strerror}") from None
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as error:
        raise ModelConfigError(
            f"model config file {path} is not a ModelServerConfig text proto: {error}"
        ) from None
    if config.WhichOneof("config") != "model_config_list":
        raise ModelConfigError(f"model config file {path}: no model_config_list")
    entries = {entry.name: entry for entry in config.model_config_list.config}
    if model_name not in entries:
        raise ModelConfigError(
            f"model config file {path} has no config for model '{model_name}' "
            f"(it names: {', '.join(sorted(entries)) or 'none'})"
        )
    entry = entries[model_name]
    return ModelConfig(
        name=entry.name,
        base_path=entry.base_path,
        policy=_policy(entry, path),
        version_labels=dict(entry.version_labels),
    )


def _policy(entry: model_server_config_pb2.ModelConfig, path: str) -> VersionPolicy:
    policy = entry.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "specific":
        if not policy.specific.versions:
            raise ModelConfigError(
                f"model config file {path}: model_version_policy specific lists no versions"
            )
        return VersionPolicy("specific", versions=frozenset(policy.specific.versions))
    if choice == "all":
        return VersionPolicy("all")
    # latest, or unset (TF Serving's default: the newest one); num_versions 0 counts as 1.
    return VersionPolicy("latest", num_versions=max(policy.latest.num_versions, 1))


def file_stamp(path: str) -> Optional[tuple]:
    """What changes when the file is edited (to re-read it only then)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
