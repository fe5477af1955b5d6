"""The Pusher's executor, with the push into `<base>/<version>/` made atomic.

TFX's Pusher copies the model file by file into `<base>/<version>/` (saved_model.pb last), so a
model server scanning the base path can see the version folder before its files are all there.
This executor runs TFX's own push (blessing check, version number, archive copy, the
PushedModel's properties) into a staging folder beside the versions, `<base>/.push-<host>-<pid>-
<random>/`, then renames `<version>/` from there into the base path: one rename within one
directory, which POSIX file systems make atomic, so the version appears with all its files at
once. The staging name is not a number, so TF Serving's version scan (and serving/'s) skips it.

Where a folder cannot be renamed atomically (gs:// and other object stores, where a "rename"
copies object by object), the push is TFX's as it is: in place, saved_model.pb last, which is
what TF Serving waits for before it loads a version.

An existing version is never touched: if `<base>/<version>/` exists already (as TFX's Pusher,
which then skips the copy), the staged copy is discarded. Staging folders a killed push left
(their process gone) are removed by the next push.

The pipeline's Pusher stays the standard component (node id Pusher, same inputs, outputs and
blessing semantics) with this class as its executor, on every runner.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from typing import Any

from absl import logging
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

STAGING_PREFIX = ".push-"
# The PushedModel artifact's custom properties, as TFX's Pusher writes them.
PUSHED_PROPERTY = "pushed"
PUSHED_VERSION_PROPERTY = "pushed_version"
PUSHED_DESTINATION_PROPERTY = "pushed_destination"


def renames_atomically(path: str) -> bool:
    """A local POSIX path: renaming a folder within it is atomic. Not gs://, s3://, hdfs://."""
    return os.name == "posix" and "://" not in path


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def stale_staging_dirs(base: str) -> list[str]:
    """Staging folders under `base` whose push process (on this host) is gone."""
    pattern = re.compile(re.escape(f"{STAGING_PREFIX}{_host()}-") + r"(\d+)-")
    if not os.path.isdir(base):
        return []
    return sorted(
        os.path.join(base, name)
        for name in os.listdir(base)
        if (match := pattern.match(name)) and not _process_alive(int(match.group(1)))
    )


def publish(staged: str, final: str) -> bool:
    """Renames the complete `staged` folder to `final` in one step; False (nothing changed)
    if `final` exists already: an existing version is never replaced."""
    if os.path.lexists(final):
        return False
    try:
        os.rename(staged, final)  # fails on a non-empty `final` created meanwhile
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    # The rename itself durable: sync the base folder's entry.
    descriptor = os.open(os.path.dirname(final), os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return True


class AtomicPushExecutor(pusher_executor.Executor):
    """TFX's Pusher executor, pushing through a staging folder and one rename (see above)."""

    def Do(  # TFX's name
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        key = standard_component_specs.PUSH_DESTINATION_KEY
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[key], destination)
        base = destination.filesystem.base_directory
        if destination.WhichOneof("destination") != "filesystem" or not renames_atomically(base):
            logging.info(
                "Pusher: %s cannot rename a folder atomically; pushing in place, "
                "saved_model.pb last (TFX's Pusher)",
                base or "the destination",
            )
            super().Do(input_dict, output_dict, exec_properties)
            return
        os.makedirs(base, exist_ok=True)
        for stale in stale_staging_dirs(base):
            logging.warning("Pusher: removing %s, left by a push that was killed", stale)
            shutil.rmtree(stale, ignore_errors=True)
        staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{_host()}-{os.getpid()}-", dir=base)
        try:
            destination.filesystem.base_directory = staging
            super().Do(
                input_dict,
                output_dict,
                {**exec_properties, key: proto_utils.proto_to_json(destination)},
            )
            pushed = artifact_utils.get_single_instance(
                output_dict[standard_component_specs.PUSHED_MODEL_KEY]
            )
            if not pushed.get_int_custom_property(PUSHED_PROPERTY):
                return  # not blessed: nothing was copied
            version = pushed.get_string_custom_property(PUSHED_VERSION_PROPERTY)
            final = os.path.join(base, version)
            if publish(os.path.join(staging, version), final):
                logging.info("Pusher: version %s published at %s in one rename", version, final)
            else:
                logging.warning(
                    "Pusher: %s exists already; kept as it is, this push's copy discarded",
                    final,
                )
            pushed.set_string_custom_property(PUSHED_DESTINATION_PROPERTY, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
