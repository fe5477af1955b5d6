"""`tfx-template generate-data` (scripts/generate_data.py): larger taxi-like data,
reproducible, in the shipped layout."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from scripts import generate_data
from tests.pipeline_run import ROOT, read_csv

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration


def _label(row: dict[str, str]) -> bool:
    return bool(row["tips"]) and bool(row["fare"]) and float(row["tips"]) > 0.2 * float(row["fare"])


def test_spans_rows_markers_and_chronology(tmp_path: Path):
    manifest = generate_data.generate(tmp_path / "a", rows=1203, num_spans=12, seed=3)
    assert [m["span"] for m in manifest] == list(range(1, 13))
    assert sum(m["rows"] for m in manifest) == 1203
    assert [m["source_span"] for m in manifest[:3]] == [1, 1, 2]
    previous_last = 0
    for span in range(1, 13):
        folder = tmp_path / "a" / f"span-{span}"
        assert (folder / "_COMPLETE").is_file()
        rows = read_csv(folder / "data.csv")
        stamps = [int(r["trip_start_timestamp"]) for r in rows]
        assert stamps == sorted(stamps) and stamps[0] >= previous_last
        previous_last = stamps[-1]
    header = next(csv.reader(open(ROOT / "data" / "span-1" / "data.csv")))
    assert next(csv.reader(open(tmp_path / "a" / "span-1" / "data.csv"))) == header


def test_same_seed_same_files_and_jitter_keeps_labels_and_domains(tmp_path: Path):
    generate_data.generate(tmp_path / "a", rows=3000, num_spans=6, seed=5)
    generate_data.generate(tmp_path / "b", rows=3000, num_spans=6, seed=5)
    generate_data.generate(tmp_path / "c", rows=3000, num_spans=6, seed=6)
    first = (tmp_path / "a" / "span-6" / "data.csv").read_bytes()
    assert first == (tmp_path / "b" / "span-6" / "data.csv").read_bytes()
    assert first != (tmp_path / "c" / "span-6" / "data.csv").read_bytes()

    rows = read_csv(tmp_path / "a" / "span-6" / "data.csv")
    shipped = read_csv(ROOT / "data" / "span-6" / "data.csv")
    # Jittered, not copied: most fares differ from every shipped fare string.
    shipped_fares = {r["fare"] for r in shipped}
    assert sum(r["fare"] not in shipped_fares for r in rows) > 0.5 * len(rows)
    # The label rate stays that of the source span (tips and fare share one factor).
    rate = sum(map(_label, rows)) / len(rows)
    assert rate == pytest.approx(sum(map(_label, shipped)) / len(shipped), abs=0.04)
    for row in rows:
        assert row["trip_seconds"] == "" or row["trip_seconds"].isdigit()
        for column, (low, high) in generate_data.COORDINATE_DOMAINS.items():
            assert row[column] == "" or low <= float(row[column]) <= high


def test_bad_arguments_are_named(tmp_path: Path):
    with pytest.raises(ValueError, match="--spans 3: at least 6"):
        generate_data.generate(tmp_path, rows=100, num_spans=3, seed=1)
    with pytest.raises(ValueError, match="shipped data directory"):
        generate_data.generate(ROOT / "data", rows=100, num_spans=6, seed=1)


def test_a_span_cut_into_files_holds_the_same_rows_in_order(tmp_path: Path):
    generate_data.generate(tmp_path / "one", rows=900, num_spans=6, seed=2)
    generate_data.generate(tmp_path / "three", rows=900, num_spans=6, seed=2, files_per_span=3)
    for span in range(1, 7):
        whole = read_csv(tmp_path / "one" / f"span-{span}" / "data.csv")
        folder = tmp_path / "three" / f"span-{span}"
        names = sorted(p.name for p in folder.glob("*.csv"))
        assert names == [f"part-0000{i}-of-00003.csv" for i in range(3)]
        parts = [read_csv(folder / name) for name in names]
        assert all(len(part) == 50 for part in parts)  # 150 rows per span, cut evenly
        assert [row for part in parts for row in part] == whole
        assert (folder / "_COMPLETE").is_file()
    with pytest.raises(ValueError, match="--files-per-span 0: at least 1"):
        generate_data.generate(tmp_path / "zero", rows=900, num_spans=6, seed=2, files_per_span=0)
