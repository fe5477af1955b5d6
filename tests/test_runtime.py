"""pipeline/runtime.py, in a fresh interpreter: freezing is process-wide."""

import json
import subprocess
import sys

import pytest

from pipeline.settings import PROJECT_ROOT

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

SCRIPT = """
import gc, json
from pipeline import runtime

collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(1))
with runtime.paused_for_imports():
    kept_for_life = [[i] for i in range(200_000)]  # as module-level objects of an import
    collections_during_imports = len(collections)
after_imports = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
made_by_the_run = [[i] for i in range(50_000)]
collections_after = len(collections)
runtime.freeze_live_objects()
print(json.dumps({"during": collections_during_imports, "after_imports": after_imports,
                  "collections_after": collections_after, "frozen_at_end": gc.get_freeze_count()}))
"""


def test_imports_are_frozen_and_collection_resumes_for_the_run():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out)
    # 200,000 new lists would set off hundreds of young collections with the collector on.
    assert result["during"] == 0
    assert result["after_imports"]["enabled"] is True
    assert result["after_imports"]["frozen"] >= 200_000
    # The run's own objects are collected as usual, and frozen only at the very end.
    assert result["collections_after"] > 0
    assert result["frozen_at_end"] >= result["after_imports"]["frozen"] + 50_000
