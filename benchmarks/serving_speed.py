"""Serving benchmark: the local server and the batch job against the in-process SavedModel call,
all measured in one run on the same machine.

    make benchmark-serving          # needs a pushed model (make run); PIPELINE_* settings apply

Measures: in-process serving_raw call for 1 and 256 rows (the reference: the fastest median
of 5 rounds); single-row HTTP latency p50/p99 at concurrency 1; throughput at concurrency 1, 8
and 32 with micro-batching; batch job rows/s into the SQLite table vs the in-process batched
rate. Prints goals vs measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pipeline.runtime  # noqa: F401 (first: Keras 2 before TensorFlow loads)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import aiohttp
import numpy as np
import tensorflow as tf

from models import features
from pipeline import runtime, spans
from pipeline.settings import PipelineSettings
from serving import batch_predict, paths, process
from serving.settings import BatchPredictSettings, ServingSettings


def span_rows(settings: PipelineSettings) -> list[dict]:
    rows = []
    for span in spans.available_spans(settings):
        for path in sorted(tf.io.gfile.glob(spans.span_files_pattern(settings, span))):
            rows += spans.read_csv(Path(path))
    return rows


def json_instances(rows: list[dict]) -> list[dict]:
    return [
        batch_predict.json_instance(batch_predict.raw_values(r, f"row {i}"))
        for i, r in enumerate(rows)
    ]


def timed_calls(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def in_process(model_path: str, instances: list[dict], repeats: int, rounds: int = 5) -> dict:
    signature = tf.saved_model.load(model_path).signatures["serving_raw"]

    def tensors(batch):
        return {
            k: tf.constant([i[k] or "" for i in batch])
            if k in features.STRING_FEATURES
            else tf.constant([np.nan if i[k] is None else i[k] for i in batch], tf.float64)
            for k in batch[0]
        }

    one, many = tensors(instances[:1]), tensors(instances[:256])
    # The fastest of several rounds' medians: a round slowed by other work on the machine
    # would flatter the goals measured against it.
    return {
        "one": min(
            statistics.median(timed_calls(lambda: signature(**one), repeats)) for _ in range(rounds)
        ),
        "batch256": min(
            statistics.median(timed_calls(lambda: signature(**many), repeats))
            for _ in range(rounds)
        ),
    }


async def http_load(url: str, instances: list[dict], concurrency: int, seconds: float) -> dict:
    """Single-row requests from `concurrency` clients for `seconds`: latencies and errors."""
    latencies, errors = [], 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(n: int):
            nonlocal errors
            i = n
            while time.perf_counter() < deadline:
                body = {
                    "signature_name": "serving_raw",
                    "instances": [instances[i % len(instances)]],
                }
                started = time.perf_counter()
                async with session.post(url, json=body) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
    }


def batch_job(settings: PipelineSettings, rows: list[dict], copies: int, tmp: str) -> dict:
    """The batch job over one span of `copies` x the shipped rows, into a fresh SQLite file."""
    data_dir = Path(tmp) / f"data-{copies}"
    spans.write_csv(data_dir / "span-1" / "data.csv", rows * copies)
    job_settings = PipelineSettings.load(data_dir=str(data_dir), span_pattern="span-{SPAN}/*.csv")
    batch = BatchPredictSettings.load(sqlite_path=os.path.join(tmp, f"predictions-{copies}.db"))
    result = batch_predict.run(batch, job_settings, span=1)
    return {"rows": result.rows, "seconds": result.seconds, "rps": result.rows / result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput level")
    parser.add_argument("--repeats", type=int, default=300)
    # A batch job scores a warehouse table, not a request: 40 copies = 600k rows, where the
    # job's fixed costs (Beam start-up, loading the SavedModel: about 1 s) stop dominating.
    parser.add_argument(
        "--batch-copies",
        type=int,
        default=40,
        help="the batch job reads the shipped rows this many times",
    )
    args = parser.parse_args()
    settings = PipelineSettings.load()
    version = batch_predict.newest_version(settings.serving_model_dir)
    model_path = os.path.join(settings.serving_model_dir, str(version))
    rows = span_rows(settings)
    instances = json_instances(rows[:2000])
    # As the batch job's command does (serving/batch_predict.py main): the job runs in this
    # process, whose imports would otherwise be walked by every full collection.
    runtime.freeze_live_objects()
    print(
        f"model {model_path}; {len(rows)} rows in {settings.data.data_dir}; {os.cpu_count()} CPUs",
        flush=True,
    )

    reference = in_process(model_path, instances, args.repeats)
    batched_rate = 256 / reference["batch256"]
    print(
        f"in-process serving_raw: 1 row {reference['one'] * 1000:.3f} ms, 256 rows "
        f"{reference['batch256'] * 1000:.3f} ms ({batched_rate:,.0f} rows/s)",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PIPELINE_SERVING_LOG_SAMPLING_RATE": "0"}
        with process.running_server(env, os.path.join(tmp, "server.log")) as url:
            name = paths.model_name(ServingSettings.load(env), settings)
            predict = f"{url}/v1/models/{name}:predict"
            asyncio.run(http_load(predict, instances, 1, 1.0))  # warm-up
            load = {
                c: asyncio.run(http_load(predict, instances, c, args.seconds)) for c in (1, 8, 32)
            }
        for c, result in load.items():
            print(
                f"HTTP single-row, concurrency {c:2d}: {result['rps']:7.0f} req/s, "
                f"p50 {result['p50'] * 1000:6.2f} ms, p99 {result['p99'] * 1000:6.2f} ms, "
                f"{result['errors']} errors / {result['requests']}",
                flush=True,
            )
        small = batch_job(settings, rows, 1, tmp)
        job = batch_job(settings, rows, args.batch_copies, tmp)
        marginal = (job["rows"] - small["rows"]) / max(job["seconds"] - small["seconds"], 1e-9)
        for result in (small, job):
            print(
                f"batch job: {result['rows']} rows in {result['seconds']:.1f} s = "
                f"{result['rps']:,.0f} rows/s (whole Beam job: start-up, model load, reading "
                "CSV, SQLite writes)",
                flush=True,
            )
        print(f"batch job, marginal rate (start-up excluded): {marginal:,.0f} rows/s", flush=True)

    p50_ratio = load[1]["p50"] / reference["one"]
    scaling = load[32]["rps"] / load[1]["rps"]
    batch_share = job["rps"] / batched_rate
    errors = sum(r["errors"] for r in load.values())
    print("\ngoal                                              measured        met")
    for goal, measured, met in (
        ("HTTP p50 (c=1) within 3x in-process one-row", f"{p50_ratio:.1f}x", p50_ratio <= 3),
        (
            "throughput c=32 >= 3x c=1, zero errors",
            f"{scaling:.1f}x, {errors} err",
            scaling >= 3 and errors == 0,
        ),
        ("batch job >= 25% of in-process batched rate", f"{batch_share:.1%}", batch_share >= 0.25),
        (
            "  same, start-up excluded (marginal rate)",
            f"{marginal / batched_rate:.1%}",
            marginal / batched_rate >= 0.25,
        ),
    ):
        print(f"{goal:<50}{measured:<16}{'yes' if met else 'NO'}")


if __name__ == "__main__":
    sys.exit(main())
