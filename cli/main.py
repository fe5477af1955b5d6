"""`tfx-template`: the project's commands, one CLI (typer). The make targets call it
(`make serve` is `tfx-template serve`, `make serving-skew ARGS="--log F"` is
`tfx-template skew --log F`); `tfx-template COMMAND --help` shows a command's options and
examples.

Each command is a thin layer over one plain function of the project (`serving.server.serve`,
`analysis.skew.run_skew`, ...), imported only when the command runs, so `--help` is quick.
Settings come from `PIPELINE_*` variables, as for the runners; an option left out falls back
to its setting where the help says so. A mistake on the command line (an unknown option, a
value of the wrong type) is one `error: ...` line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

PROG = "tfx-template"


class _Group(TyperGroup):
    """A mistake on the command line (click's usage errors: an unknown option, a bad value, a
    missing argument) as one `error: ...` line on stderr, exit status 2; a command's
    `SystemExit("error: ...")` on stderr too (click's test runner would print it to stdout)."""

    def main(
        self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as error:  # click's ClickException, UsageError, ...
            context = getattr(error, "ctx", None)
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            typer.echo(f"error: {error.format_message()}{hint}", err=True)
            sys.exit(error.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        except SystemExit as error:
            if isinstance(error.code, str):
                typer.echo(error.code, err=True)
                sys.exit(1)
            raise
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name=PROG,
    cls=_Group,
    help="The TFX production pipeline template's commands. Settings: PIPELINE_* variables "
    "(docs/settings.md). `make <target>` calls these (docs/quickstart.md).",
    epilog="Run `tfx-template COMMAND --help` for a command's options and examples.",
    rich_markup_mode=None,
    add_completion=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _help_without_a_command(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


def _examples(*lines: str) -> str:
    """An "Examples:" section, kept as written (click rewraps a paragraph unless it starts
    with \\b), with the `# ...` comments of the shorter commands lined up."""
    split = [line.split("  # ", 1) if "  # " in line else [line] for line in lines]
    width = max(
        (
            len(parts[0].rstrip())
            for parts in split
            if len(parts) == 2 and len(parts[0].rstrip()) <= 48
        ),
        default=0,
    )
    return "\b\nExamples:\n" + "\n".join(
        f"  {parts[0].rstrip():<{width}}  # {parts[1].strip()}"
        if len(parts) == 2
        else f"  {parts[0]}"
        for parts in split
    )


def _given(**values: Any) -> dict[str, Any]:
    """The options that were given: the rest keep the function's own defaults."""
    return {name: value for name, value in values.items() if value is not None}


def _exit(code: Optional[int]) -> None:
    """Ends the command with the function's exit status (also what `app(...,
    standalone_mode=False)` returns)."""
    raise typer.Exit(code or 0)


# ------------------------------------------------------------------ the pipeline


@app.command(
    epilog=_examples(
        "make run                        # the whole pipeline on data/ (the newest span)",
        "make run ARGS=--verbose         # the full log on the console too",
        "tfx-template run --verbose      # the same",
        "PIPELINE_ENABLE_TUNING=0 tfx-template run     # settings: PIPELINE_* variables",
    )
)
def run(
    verbose: bool = typer.Option(
        False,
        "--verbose",
        help="stream the whole log (TFX, Beam, TensorFlow) to the console "
        "as well as to the run's log file",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="run the pipeline even when nothing changed since the last successful run "
        "(every component is then cached)",
    ),
) -> None:
    """Run the pipeline on this machine (local_runner.py: TFX's LocalDagRunner, SQLite MLMD).

    Ingests the newest complete span (the earlier spans of the training window first, on a
    new pipeline), trains, evaluates on the new span's hold-out and pushes a blessed model.
    The console shows one line per component and a summary; the full log is in
    <PIPELINE_OUTPUT_DIR>/logs/. When the data, code and settings are those of the last
    successful run, it says so at once, with that run's summary (--force runs anyway).
    """
    import runpy
    import sys

    from pipeline.settings import PROJECT_ROOT

    runner = str(PROJECT_ROOT / "local_runner.py")
    sys.argv = [runner, *(["--verbose"] if verbose else []), *(["--force"] if force else [])]
    try:
        runpy.run_path(runner, run_name="__main__")
    except SystemExit as stop:
        if isinstance(stop.code, str):
            raise
        _exit(stop.code)


@app.command(
    "airflow-trigger",
    epilog=_examples(
        "make airflow-trigger                          # a run now, with the DAG's defaults",
        'make airflow-trigger ARGS="--train-steps 2000"',
        "tfx-template airflow-trigger --force --no-wait   # even with no new span; just start it",
        "tfx-template airflow-trigger --conf '{\"eval_steps\": 20}'",
        "PIPELINE_AIRFLOW_API_URL=https://airflow.example.com tfx-template airflow-trigger",
    ),
)
def airflow_trigger(
    train_steps: Optional[int] = typer.Option(None, min=1, help="the Trainer's steps"),
    eval_steps: Optional[int] = typer.Option(None, min=1, help="evaluation steps"),
    tuner_max_trials: Optional[int] = typer.Option(
        None, min=1, help="the Tuner's trials (when the DAG has a Tuner)"
    ),
    tuner_train_steps: Optional[int] = typer.Option(None, min=1, help="steps of each trial"),
    force: bool = typer.Option(False, "--force", help="run even when no new span arrived"),
    conf: Optional[str] = typer.Option(
        None, metavar="JSON", help="more of the run's conf, a JSON object"
    ),
    unpause: bool = typer.Option(
        False, "--unpause", help="unpause the DAG first (a paused DAG's runs wait)"
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="wait for the run, showing each task's progress"
    ),
) -> None:
    """Start a training run now on Airflow, through its REST API (basic auth), and wait.

    Triggers a run of the pipeline's DAG (PIPELINE_NAME) at PIPELINE_AIRFLOW_API_URL as
    PIPELINE_AIRFLOW_API_USER, whose password is in PIPELINE_AIRFLOW_API_PASSWORD_FILE
    (`make airflow-up` sets all three up). The options are the run's parameters (the DAG's
    Params, the same as the UI's trigger form); Airflow checks them. Prints each task's state
    as it changes; exit status 0 when the run succeeds, 1 when it fails.
    """
    import json
    import time

    from pipeline.airflow_api import TASK_FAILED, AirflowApi, ApiError
    from pipeline.settings import PipelineSettings

    run_conf: dict[str, Any] = {}
    if conf:
        try:
            run_conf = json.loads(conf)
        except ValueError as error:
            raise SystemExit(f"error: --conf is not JSON: {error}") from None
        if not isinstance(run_conf, dict):
            raise SystemExit("error: --conf must be a JSON object, e.g. '{\"train_steps\": 500}'")
    run_conf.update(
        _given(
            train_steps=train_steps,
            eval_steps=eval_steps,
            tuner_max_trials=tuner_max_trials,
            tuner_train_steps=tuner_train_steps,
        )
    )
    if force:
        run_conf["force"] = True
    settings = PipelineSettings.load(orchestrator="airflow")
    dag_id = settings.name
    try:
        api = AirflowApi.from_settings(settings)
        if api.dag(dag_id)["is_paused"]:
            if not unpause:
                raise ApiError(
                    f"the DAG {dag_id!r} is paused, so its runs would wait: unpause it in the UI "
                    "or pass --unpause (it then also runs on its schedule)"
                )
            api.unpause(dag_id)
            typer.echo(f"unpaused {dag_id}")
        run_id = api.trigger(dag_id, run_conf)
        typer.echo(f"triggered {dag_id} run {run_id} with conf {json.dumps(run_conf)}")
        typer.echo(f"  {api.url}/dags/{dag_id}/grid?dag_run_id={run_id}")
        if not wait:
            return
        started = time.monotonic()

        def show(task: str, state: Optional[str]) -> None:
            typer.echo(f"  [{time.monotonic() - started:6.0f} s] {task}: {state}")

        def show_run(state: str) -> None:
            # The DAG runs one run at a time: say which one this run waits for.
            ahead = [r for r in api.running_runs(dag_id) if r != run_id]
            waits = (
                f" (after {', '.join(ahead)}: one run at a time)"
                if state == "queued" and ahead
                else ""
            )
            show("this run", f"{state}{waits}")

        state = api.wait(dag_id, run_id, on_change=show, on_run_state=show_run)
        failed = [t for t, s in api.task_states(dag_id, run_id).items() if s in TASK_FAILED]
    except ApiError as error:
        raise SystemExit(f"error: {error}") from None
    seconds = time.monotonic() - started
    if state != "success":
        raise SystemExit(
            f"error: run {run_id} {state} after {seconds:.0f} s; failed tasks: "
            f"{', '.join(failed) or 'none'} (their logs: the UI's grid view)"
        )
    typer.echo(f"run {run_id} succeeded in {seconds:.0f} s")


# ------------------------------------------------------------------ continuous training


@app.command(
    epilog=_examples(
        "make watch                      # a look every PIPELINE_WATCH_INTERVAL_SECONDS",
        "make watch ARGS=--once          # one look: a run if there is a new span",
        "tfx-template watch --once       # the same",
        "tfx-template watch --interval 600             # a look every 10 minutes",
        "PIPELINE_DATA_DIR=/mnt/spans tfx-template watch   # another data location",
    )
)
def watch(
    once: bool = typer.Option(False, "--once", help="look once, then exit"),
    interval: Optional[float] = typer.Option(
        None,
        metavar="SECONDS",
        help="seconds between looks (default: PIPELINE_WATCH_INTERVAL_SECONDS)",
    ),
) -> None:
    """Run the pipeline whenever a new complete span lands in the data location.

    A span is new when its folder holds the completion marker and no run has ingested it.
    Each run is `python local_runner.py` in a process of its own. With --once the exit status
    is the run's (0 when nothing is new); a watch that fails a run goes on with the next span.
    """
    from pipeline import watch as trigger

    _exit(trigger.run_trigger(once=once, interval=interval))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog=_examples(
        "make stream ARGS=\"--input 'events/*.jsonl'\"   # local files, then stop",
        "tfx-template stream --input 'events/*.jsonl'     # the same",
        "tfx-template stream --subscription projects/P/subscriptions/S \\",
        "    --runner DataflowRunner --project P --region R --temp_location gs://B/tmp",
    ),
)
def stream(
    ctx: typer.Context,
    input_pattern: Optional[str] = typer.Option(
        None, "--input", metavar="GLOB", help="JSON-lines files (a glob), e.g. 'events/*.jsonl'"
    ),
    subscription: Optional[str] = typer.Option(
        None, metavar="SUBSCRIPTION", help="a Pub/Sub subscription (production)"
    ),
) -> None:
    """Streaming ingestion: events (JSON lines or Pub/Sub) in, complete spans out.

    Events are windowed by event time (PIPELINE_STREAMING_*); each closed window becomes a
    span (span-N/data.csv, then its completion marker), bad or late events go to the dead
    letter. Pass exactly one of --input and --subscription; every other option is Beam's
    (--runner, --project, ...).
    """
    if bool(input_pattern) == bool(subscription):
        raise typer.BadParameter(
            "pass exactly one of them", ctx, param_hint="--input/--subscription"
        )
    from streaming import job

    job.run_job(input_pattern=input_pattern, subscription=subscription, beam_args=ctx.args)


@app.command(
    epilog=_examples(
        "make replay                    # six spans, every row: an hour or more",
        'make replay ARGS="--spans 3 --rows-per-span 400"    # a quick look',
        "tfx-template replay --spans 3 --rows-per-span 400   # the same",
    )
)
def replay(
    source: Optional[Path] = typer.Option(
        None, metavar="DIR", help="the spans to replay, span-N/data.csv (default: data/)"
    ),
    spans: int = typer.Option(6, metavar="N", help="replay spans 1..N"),
    rows_per_span: int = typer.Option(
        0, metavar="N", help="the first N rows of each span; 0 = every row"
    ),
    out: Optional[Path] = typer.Option(
        None,
        metavar="DIR",
        help="both pipelines and the report (emptied first; default: outputs/replay)",
    ),
) -> None:
    """Replay the spans one at a time through the trigger, warm vs fresh start.

    Two pipelines (PIPELINE_WARM_START=1 and 0) get the same spans in order; per span: the
    served model's AUC on the new span, the candidate's, blessed or not, and the Trainer's
    time. Writes <out>/report.md and <out>/replay.png.
    """
    from scripts import replay as replay_script

    replay_script.replay(**_given(source=source, out=out), spans=spans, rows_per_span=rows_per_span)


# ---------------------------------------------------------------------------- serving


@app.command(
    epilog=_examples(
        "make serve                      # http://127.0.0.1:8501, gRPC on 127.0.0.1:8500",
        "tfx-template serve --port 8601  # another port",
        "PIPELINE_SERVING_HYBRID=1 tfx-template serve      # batch predictions first",
        "curl http://127.0.0.1:8501/v1/models/taxi-tips    # the loaded versions",
    )
)
def serve(
    host: Optional[str] = typer.Option(
        None, metavar="HOST", help="overrides PIPELINE_SERVING_HOST"
    ),
    port: Optional[int] = typer.Option(
        None, metavar="PORT", help="overrides PIPELINE_SERVING_PORT"
    ),
    grpc_port: Optional[int] = typer.Option(
        None, "--grpc-port", metavar="PORT", help="overrides PIPELINE_SERVING_GRPC_PORT (0: none)"
    ),
) -> None:
    """Serve the pushed model with TensorFlow Serving's REST and gRPC APIs (until Ctrl-C).

    The same endpoints as TF Serving's (/v1/models/<name>, :predict, :classify, :regress on
    8501; PredictionService and ModelService on 8500); new versions load as the Pusher writes
    them. Metrics at /monitoring/prometheus/metrics, health at /healthz. Listening beyond
    loopback needs PIPELINE_SERVING_AUTH_TOKEN. Settings: PIPELINE_SERVING_*.
    """
    from serving import server

    server.serve(host=host, port=port, grpc_port=grpc_port)


@app.command(
    "batch-predict",
    epilog=_examples(
        "make batch-predict              # the newest complete span, the newest pushed model",
        'make batch-predict ARGS="--span 3 --version 1234"',
        "tfx-template batch-predict --span 3 --version 1234    # the same",
    ),
)
def batch_predict(
    span: Optional[int] = typer.Option(
        None,
        metavar="N",
        help="default: PIPELINE_BATCH_PREDICT_SPAN, else the newest complete span",
    ),
    version: Optional[int] = typer.Option(
        None, metavar="VERSION", help="model version; default: the newest pushed version that loads"
    ),
) -> None:
    """Batch predictions of one span into the warehouse table.

    A Beam job (PIPELINE_BEAM_PRESET): every row of the span, keyed `<span>:<file>:<row>`,
    through the pushed model's keyed signature, into SQLite locally (BigQuery with
    PIPELINE_GCP_PROJECT); the table is replaced only once all rows are written.
    """
    from serving import batch_predict as job

    job.batch_predict(span=span, version=version)


def _request_log_option():
    return typer.Option(
        None,
        metavar="FILE",
        help="the request log (default: PIPELINE_SERVING_LOG_PATH, "
        "else <output dir>/serving_logs/requests.jsonl)",
    )


@app.command(
    epilog=_examples(
        "make serving-skew               # the request log vs the newest training statistics",
        'make serving-skew ARGS="--log requests.jsonl"',
        "tfx-template skew --log requests.jsonl    # the same",
        "tfx-template skew --training-statistics FeatureStats.pb --schema schema.pbtxt",
    )
)
def skew(
    log: Optional[str] = _request_log_option(),
    training_statistics: Optional[str] = typer.Option(
        None,
        metavar="FILE",
        help="FeatureStats.pb (default: the newest StatisticsGen train split in MLMD)",
    ),
    schema: Optional[str] = typer.Option(
        None, metavar="FILE", help="the schema (default: PIPELINE_SCHEMA_PATH)"
    ),
) -> None:
    """Serving skew: the logged requests against the training statistics.

    TFDV statistics of the logged requests, checked against the schema's SERVING environment
    and, with the schema's skew comparators, against the training statistics. Exit status 0:
    no skew; 1: skew, each feature named; 2: an error (no log, no statistics).
    """
    from analysis import skew as skew_check

    _exit(skew_check.run_skew(log=log, training_statistics=training_statistics, schema=schema))


@app.command(
    "serving-strategy",
    epilog=_examples(
        "make serving-strategy           # the request log: static, dynamic or hybrid?",
        'make serving-strategy ARGS="--span 6"',
        "tfx-template serving-strategy --span 6    # the same: a span's rows as the workload",
        "tfx-template serving-strategy --log requests.jsonl --key COLUMN --json",
    ),
)
def serving_strategy(
    log: Optional[str] = _request_log_option(),
    span: Optional[int] = typer.Option(
        None, metavar="N", help="a span's rows as the workload instead of the log"
    ),
    key: Optional[list[str]] = typer.Option(
        None,
        metavar="COLUMN",
        help="a column making up the request key (repeat for several; default: the keyed "
        "signature's key, else every model input)",
    ),
    top_k: Optional[list[int]] = typer.Option(
        None,
        "--top-k",
        metavar="K",
        min=1,
        help="report the share of rows of the K most frequent keys (repeat; "
        "default: 1, 10, 100, 1000, 10000)",
    ),
    as_json: bool = typer.Option(False, "--json", help="the figures as JSON"),
) -> None:
    """Static, dynamic or hybrid serving, from the workload's cardinality and peakedness.

    Counts the request keys of the logged requests (or of a span's rows): distinct keys,
    the share of rows of the top-k keys, the fewest keys covering 80/90/95% of rows. Then the
    seed's rule: very low cardinality -> static (precompute every key); high and flat ->
    dynamic; high and peaked -> hybrid (precompute the head), with the table's size and the
    expected hit rate. Thresholds: PIPELINE_SERVING_STRATEGY_*. Exit status 0, or 2 on an
    error (no log, no such span or column).
    """
    from analysis import serving_strategy as strategy

    _exit(
        strategy.run_serving_strategy(
            log=log, span=span, key=key or None, top_k=top_k or None, as_json=as_json
        )
    )


# ---------------------------------------------------------------------- exploring results


@app.command(
    epilog=_examples(
        "make report                     # outputs/report/<pipeline>.html",
        'make report ARGS="--out /tmp/report.html"',
        "tfx-template report --out /tmp/report.html          # the same",
        "PIPELINE_OUTPUT_DIR=/elsewhere tfx-template report  # another checkout's runs",
    )
)
def report(
    out: Optional[str] = typer.Option(
        None,
        metavar="FILE",
        help="the HTML file (default: PIPELINE_REPORT_PATH, else "
        "<output dir>/report/<pipeline>.html)",
    ),
) -> None:
    """Write the HTML report of the latest run: one self-contained file.

    Data summary, anomalies, leakage, drift, evaluation and the served model's lineage, as
    the notebooks show them. Exit status 1 when there is no run to report on.
    """
    from analysis import report as run_report

    _exit(run_report.write_report(out=out))


@app.command(
    epilog=_examples(
        "make lineage                    # the model being served",
        "make lineage MODEL=outputs/serving_model/taxi-tips/1234   # a pushed version",
        "tfx-template lineage outputs/serving_model/taxi-tips/1234 # the same",
    )
)
def lineage(
    model: Optional[str] = typer.Argument(
        None,
        metavar="MODEL",
        help="a pushed model version directory or a Trainer model "
        "artifact (default: the model being served)",
    ),
) -> None:
    """Where a model came from, read from MLMD.

    The run that trained it, the spans, schema, statistics, transform graph and
    hyperparameters it was trained with, its evaluation and blessing, and when it was
    pushed. Exit status 1 when the model is unknown.
    """
    from analysis import lineage as model_lineage

    _exit(model_lineage.print_lineage(model))


# -------------------------------------------------------------------------------- data


@app.command(
    "new-dataset",
    epilog=_examples(
        "make new-dataset ARGS=\"--csv flights.csv --label 'arr_delay > 15' \\",
        '    --time-column time_hour --span-by month"',
        "tfx-template new-dataset --csv flights.csv --label 'arr_delay > 15' \\",
        "    --time-column time_hour --span-by month --na-values NA \\",
        "    --known-after arr_time,air_time",
        "tfx-template new-dataset --csv orders.csv --label \"status == 'late'\" \\",
        "    --time-column created_at --span-by rows:5000 --drop order_id",
    ),
)
def new_dataset(
    csv: Path = typer.Option(..., metavar="FILE", help="the raw CSV, with a header row"),
    label: str = typer.Option(
        ...,
        metavar="EXPRESSION",
        help="the label expression, e.g. 'arr_delay > 15' or \"status == 'late'\"",
    ),
    time_column: str = typer.Option(..., metavar="COLUMN", help="the event time of a row"),
    span_by: str = typer.Option("month", metavar="PERIOD", help="month, week, day or rows:N"),
    drop: list[str] = typer.Option(
        [], metavar="COLUMNS", help="columns left out of the spans (repeatable or comma list)"
    ),
    known_after: list[str] = typer.Option(
        [], metavar="COLUMNS", help="columns known only after the label: kept, never features"
    ),
    na_values: list[str] = typer.Option(
        [], metavar="TOKENS", help="tokens meaning missing, e.g. NA,n/a (empty cells always are)"
    ),
    name: Optional[str] = typer.Option(
        None, metavar="NAME", help="pipeline name (default: from the CSV name)"
    ),
    min_span_rows: int = typer.Option(200, metavar="N", help="the fewest rows a span may have"),
    time_zone: Optional[str] = typer.Option(
        None, metavar="ZONE", help="calendar of times written with an offset, e.g. America/New_York"
    ),
    project_dir: Optional[Path] = typer.Option(None, hidden=True),
) -> None:
    """From a raw CSV to a ready project: spans in data/, models/features.py, the schema.

    Checks the CSV first and refuses (one message naming the file, the column and what was
    expected; exit status 2; nothing written) when the label or time column is missing, the
    label is not valid or constant, times do not parse, or a span would be too small. Then
    cuts the rows into chronological spans, writes models/features.py and infers
    schema/schema.pbtxt. Next: make run.
    """
    from pipeline import new_dataset as dataset

    options = dataset.Options(
        csv=csv,
        label=label,
        time_column=time_column,
        span_by=span_by,
        drop=drop,
        known_after=known_after,
        na_values=na_values,
        name=name,
        min_span_rows=min_span_rows,
        time_zone=time_zone,
        **_given(project_dir=project_dir),
    )
    _exit(dataset.new_dataset(options))


@app.command(
    epilog=_examples(
        "make data                       # data/span-1..6 from the tfx wheel's taxi sample",
        "tfx-template data               # the same",
        "tfx-template data --spans 12 --out /tmp/taxi-12   # twelve spans elsewhere",
    )
)
def data(
    source: Optional[Path] = typer.Option(
        None, metavar="FILE", help="the CSV to cut (default: the tfx wheel's taxi sample)"
    ),
    out: Optional[Path] = typer.Option(
        None, metavar="DIR", help="where span-N/ go (default: data/)"
    ),
    spans: int = typer.Option(6, metavar="N", help="number of spans"),
) -> None:
    """Re-create data/span-*/ from the Chicago taxi sample shipped inside the tfx wheel.

    The trips are cut by trip_start_timestamp into chronological spans of about the same
    size, each ending at a UTC midnight, each with its completion marker; data/spans.json
    lists them. The same on every run.
    """
    from scripts import split_data

    split_data.recreate_data(**_given(source=source, out=out), spans=spans)


@app.command(
    "generate-data",
    epilog=_examples(
        "make data-large                 # 1.5M rows in outputs/data-1500000",
        'make data-large ROWS=150000 DIR=/tmp/taxi-150k ARGS="--spans 12"',
        "tfx-template generate-data /tmp/taxi-150k --rows 150000 --spans 12   # the same",
        "PIPELINE_DATA_DIR=/tmp/taxi-150k make run    # then train on it",
    ),
)
def generate_data(
    out_dir: Path = typer.Argument(
        ..., metavar="OUT_DIR", help="where span-N/data.csv are written"
    ),
    rows: int = typer.Option(150_000, metavar="N", help="total rows"),
    spans: int = typer.Option(6, metavar="N", help="number of spans"),
    seed: int = typer.Option(7, metavar="N", help="random seed"),
    files_per_span: int = typer.Option(1, metavar="N", help="CSV files per span (1: data.csv)"),
    source: Optional[Path] = typer.Option(
        None, metavar="DIR", help="the spans to resample (default: data/)"
    ),
) -> None:
    """Generate a larger taxi-like dataset from the shipped spans (growth benchmarks).

    Rows are resampled with replacement and jittered (amounts, coordinates), so the columns,
    schema and distributions are the shipped ones; chronology is kept; the same arguments
    give the same files. Exit status 2 on impossible arguments.
    """
    from scripts import generate_data as generator

    _exit(
        generator.generate_data(
            out_dir,
            rows=rows,
            spans=spans,
            seed=seed,
            files_per_span=files_per_span,
            **_given(source=source),
        )
    )


@app.command(
    epilog=_examples(
        "PIPELINE_INFER_SCHEMA=1 make run   # first: SchemaGen infers a schema",
        "make schema                     # then: schema/schema.pbtxt from it",
        "make schema ARGS=--force        # replace an existing schema",
        "tfx-template schema --out /tmp/schema.pbtxt    # write it elsewhere",
    )
)
def schema(
    out: Optional[str] = typer.Option(
        None, metavar="FILE", help="the schema file (default: PIPELINE_SCHEMA_PATH)"
    ),
    force: bool = typer.Option(False, "--force", help="replace an existing file"),
) -> None:
    """Write a starting schema from the latest SchemaGen output.

    Adds TRAINING and SERVING environments, with the label's columns and the columns known
    only after the label left out of SERVING. Curate it before you rely on it. An existing
    file is only replaced with --force.
    """
    from scripts import export_schema

    export_schema.export_schema(out=out, force=force)


if __name__ == "__main__":  # `python -m cli.main`: the same as the tfx-template script
    app(prog_name=PROG)
