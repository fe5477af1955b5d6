"""The fingerprint of the user's code, which keys the pipeline cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def models_fingerprint() -> str:
    """A hash of the user's code in models/: it goes into the components' custom config,
    so editing the preprocessing or the model invalidates the pipeline cache."""
    digest = hashlib.sha256()
    for path in sorted(MODELS_DIR.rglob("*.py")):
        digest.update(path.relative_to(MODELS_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
