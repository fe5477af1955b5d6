"""The machinery (pipeline/, analysis/, serving/, streaming/) names no dataset column: every
dataset fact lives in models/, schema/ and data/, so a new dataset needs no edit elsewhere."""

from __future__ import annotations

import ast
import csv
import re
from pathlib import Path

from models import features

ROOT = Path(__file__).resolve().parents[1]
MACHINERY = ("pipeline", "analysis", "serving", "streaming")
# The shipped sample's columns and words; the machinery must not mention them even in comments.
SAMPLE_WORDS = (
    "taxi",
    "trip",
    "trips",
    "tips",
    "tip",
    "fare",
    "fares",
    "payment_type",
    "company",
    "trip_miles",
    "trip_seconds",
    "trip_start_hour",
    "trip_start_day",
    "trip_start_month",
    "trip_start_timestamp",
    "pickup_latitude",
    "pickup_longitude",
    "dropoff_latitude",
    "dropoff_longitude",
    "pickup_community_area",
    "dropoff_community_area",
    "pickup_census_tract",
    "dropoff_census_tract",
    "big_tipper",
)


def machinery_files() -> list[Path]:
    return sorted(p for package in MACHINERY for p in (ROOT / package).rglob("*.py"))


def active_columns() -> set[str]:
    """The active dataset's raw columns (models/features.py and the first span's header)."""
    columns = set(features.raw_feature_keys()) | set(features.label_columns())
    columns |= {features.LABEL_KEY, features.TIME_COLUMN, *features.UNUSED_FEATURES}
    first = sorted((ROOT / "data").glob("span-*/*.csv"))
    if first:
        with open(first[0], newline="") as f:
            columns |= set(next(csv.reader(f)))
    return columns


def string_literals(path: Path) -> list[tuple[int, str]]:
    """String constants in code (docstrings left out: prose may give examples)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_machinery_has_no_string_naming_an_active_column():
    columns = active_columns()
    assert len(columns) >= 3, columns
    # Compound names only: a plain word ('distance', 'day') may be a column and also the
    # machinery's own vocabulary (a drift distance), which names no column.
    found = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for path in machinery_files()
        for line, value in string_literals(path)
        if value in columns and "_" in value
    ]
    assert not found, "the machinery names dataset columns:\n" + "\n".join(found)


def test_machinery_never_mentions_the_shipped_sample():
    pattern = re.compile(r"\b(" + "|".join(SAMPLE_WORDS) + r")\b", re.IGNORECASE)
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in machinery_files()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "the machinery mentions the taxi sample:\n" + "\n".join(found)
