"""Serving benchmark: the local server and the batch job against the in-process SavedModel call,
all measured in one run on the same machine.

    make benchmark-serving          # needs a pushed model (make run); PIPELINE_* settings apply

Measures: in-process serving_raw call for 1 and 256 rows (the one-row reference builds its
input tensors from Python values inside the timed call, as the server must); in --rounds
rounds, that reference and then single-row latency p50/p99 and throughput at concurrency 1 and
32, over REST and over gRPC, with micro-batching (each goal's ratio taken within a round, the
median round reported); concurrency 8 once; 31 good clients and 1 poisoning client
(tf.Examples whose numeric feature is bytes) against 32 good ones, over both protocols, a pair
per round; the same gRPC client against a server that answers at once
(benchmarks/grpc_transport.py: the transport's own ceiling on this machine); batch job rows/s
into the SQLite table vs the in-process batched rate measured just before. Each load also
reports the CPU time the server's processes and the clients spent per request. Prints goals vs
measured.

The clients run in this process, on the server's cores: their cost is kept small so that what
is measured is the server. REST: a minimal HTTP/1.1 keep-alive client on asyncio streams, one
connection per simulated client, bodies serialized before the clock starts (aiohttp's client
cost 0.1-0.6 ms more per call on the same requests). gRPC: grpc.aio with the official
tensorflow-serving-api stubs, a channel per simulated client (sending pre-serialized bytes
instead measured no different). The server runs --workers processes (default one per core).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pipeline.runtime  # noqa: F401 (first: Keras 2 before TensorFlow loads)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import numpy as np
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from analysis import skew
from benchmarks import process_tree
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


def tensors(batch: list[dict]) -> dict:
    """serving_raw's input tensors for rows of JSON instances (None: missing)."""
    return {
        k: tf.constant([i[k] or "" for i in batch])
        if k in features.STRING_FEATURES
        else tf.constant([np.nan if i[k] is None else i[k] for i in batch], tf.float64)
        for k in batch[0]
    }


def one_row(signature, instances: list[dict], repeats: int) -> float:
    """The reference: the median one-row serving_raw call as a program holding the SavedModel
    makes it, from Python values to tensors to the answer, the tensors built inside the timed
    call (the server has to build them too, so leaving that out would charge it to the
    server)."""
    return statistics.median(timed_calls(lambda: signature(**tensors(instances[:1])), repeats))


def fastest(fn, repeats: int, rounds: int = 5) -> float:
    """The fastest of `rounds` medians of `repeats` timed calls."""
    return min(statistics.median(timed_calls(fn, repeats)) for _ in range(rounds))


def batched_rate(signature, instances: list[dict], repeats: int) -> float:
    """Rows/s of 256-row calls on tensors built beforehand: what the batch job is held to."""
    many = tensors(instances[:256])
    return 256 / fastest(lambda: signature(**many), repeats)


def in_process(signature, instances: list[dict], repeats: int) -> dict:
    """The one-row reference, and for the record the same call on tensors built beforehand;
    each the fastest median of five rounds."""
    one = tensors(instances[:1])
    return {
        "one": fastest(lambda: signature(**tensors(instances[:1])), repeats),
        "one_prebuilt": fastest(lambda: signature(**one), repeats),
    }


def paired_rounds(rounds: int, signature, instances: list[dict], repeats: int, loads) -> list:
    """`rounds` rounds of: the in-process one-row reference, then each protocol at concurrency
    1 and 32 (`loads[protocol](concurrency)`). A goal's ratio is taken within a round, whose
    parts run seconds apart: measured in separate phases, the reference first, the machine's
    drift over the run (up to a third) landed in the ratios."""
    results = []
    for _ in range(rounds):
        round_ = {"reference": one_row(signature, instances, repeats)}
        for protocol, load in loads.items():
            round_[protocol] = {c: load(c) for c in (1, 32)}
        results.append(round_)
    return results


def with_cpu(load, server_pid: int) -> dict:
    """`load()`'s result (a coroutine, run here), with the CPU time the server's processes
    (its workers too) and this process (the clients) spent per good request meanwhile: what
    bounds throughput once the cores are busy."""
    server, client = process_tree.tree_cpu_seconds(server_pid), time.process_time()
    result = asyncio.run(load())
    requests = max(result["requests"], 1)
    result["server_cpu"] = (process_tree.tree_cpu_seconds(server_pid) - server) / requests
    result["client_cpu"] = (time.process_time() - client) / requests
    return result


async def client_load(calls, concurrency: int, seconds: float, bad_clients: int = 0) -> dict:
    """`concurrency` clients, each calling `calls(client, i)` (True when answered OK) in a loop
    for `seconds`; the first `bad_clients` of them send poisoned requests. Latencies and
    failures of the good clients, and the bad clients' answers."""
    latencies, errors, bad = [], 0, {"ok": 0, "rejected": 0}
    deadline = time.perf_counter() + seconds

    async def client(n: int):
        nonlocal errors
        i = n
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            ok = await calls(n < bad_clients, i)
            if n < bad_clients:
                bad["ok" if ok else "rejected"] += 1
                continue
            latencies.append(time.perf_counter() - started)
            errors += not ok
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
        "bad": bad,
    }


class HttpClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: what a load generator needs and
    no more, so that the client sharing the server's cores costs as little as it can (aiohttp's
    client added about 0.1-0.3 ms per call, measured). Same requests on the wire as any HTTP
    client: POST, Content-Length, JSON body; the answer is read whole (Content-Length)."""

    def __init__(self, url: str):
        self.host, port_path = url[len("http://") :].split(":", 1)
        port, _, path = port_path.partition("/")
        self.port, self.path = int(port), "/" + path
        self.reader = self.writer = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        length = int(next(v for k, v in headers.items() if k.lower() == "content-length"))
        answer = await self.reader.readexactly(length)
        return int(lines[0].split()[1]), answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def rest_load(
    url: str, good: list[dict], concurrency: int, seconds: float, poison=None, bad_clients=0
) -> dict:
    """Single-request JSON bodies over REST: good[i % len], or `poison` from bad clients; one
    keep-alive connection per client, bodies serialized before the clock starts."""
    bodies = [json.dumps(b).encode() for b in good]
    bad_body = json.dumps(poison).encode() if poison is not None else b""
    clients = [HttpClient(url) for _ in range(concurrency)]

    async def calls(is_bad: bool, i: int) -> bool:
        status, _ = await clients[i % concurrency].post(
            bad_body if is_bad else bodies[i % len(bodies)]
        )
        return status == 200

    try:
        return await client_load(calls, concurrency, seconds, bad_clients)
    finally:
        for client in clients:
            client.close()


async def grpc_load(
    target: str, good: list, concurrency: int, seconds: float, poison=None, bad_clients=0
) -> dict:
    """PredictRequests over gRPC (grpc.aio with the official stubs), as rest_load: a channel
    and connection per client (a subchannel pool of its own: channels to one target otherwise
    share one connection), as separate client programs would have."""
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(concurrency)
    ]
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]

    async def calls(is_bad: bool, i: int) -> bool:
        try:
            request = poison if is_bad else good[i % len(good)]
            await stubs[i % concurrency].Predict(request, timeout=60)
            return True
        except grpc.aio.AioRpcError:
            return False

    try:
        return await client_load(calls, concurrency, seconds, bad_clients)
    finally:
        for channel in channels:
            await channel.close()


def transport_ceiling(requests: list, seconds: float) -> dict:
    """The same gRPC client against a server that answers every Predict at once with an empty
    response (benchmarks/grpc_transport.py), at concurrency 1 and 32: the transport's own
    requests/s on this machine, the bound of the model server's."""
    port = process.free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.grpc_transport", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the empty gRPC server exited with {server.wait()}")
        target = f"127.0.0.1:{port}"
        asyncio.run(grpc_load(target, requests, 1, 1.0))  # warm-up
        return {
            c: with_cpu(lambda c=c: grpc_load(target, requests, c, seconds), server.pid)
            for c in (1, 32)
        }
    finally:
        server.kill()
        server.wait()


def rest_bodies(instances: list[dict]) -> list[dict]:
    return [{"signature_name": "serving_raw", "instances": [i]} for i in instances]


def grpc_requests(model_path: str, name: str, instances: list[dict]) -> list:
    """serving_raw PredictRequests of one row each, typed as the signature's inputs."""
    signature = tf.saved_model.load(model_path).signatures["serving_raw"]
    _, specs = signature.structured_input_signature
    requests = []
    for instance in instances:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = "serving_raw"
        for key, spec in specs.items():
            value = instance[key]
            if spec.dtype == tf.string:
                value = (value or "").encode()
            elif value is None:
                value = np.nan
            request.inputs[key].CopyFrom(tf.make_tensor_proto([value], dtype=spec.dtype))
        requests.append(request)
    return requests


def example_requests(settings: PipelineSettings, instances: list[dict]) -> tuple:
    """serving_default's serialized tf.Examples: one good example per row, and a poisoned one
    (a numeric feature given as bytes), which fails any merged model call it joins."""
    schema = tfdv.load_schema_text(settings.data.schema_path)
    good = [skew.to_example(i, schema).SerializeToString() for i in instances]
    numeric = next(f.name for f in schema.feature if f.type == schema_pb2.FLOAT)
    poisoned = skew.to_example(instances[0], schema)
    poisoned.features.feature[numeric].Clear()
    poisoned.features.feature[numeric].bytes_list.value.append(b"not a number")
    return good, poisoned.SerializeToString()


def b64(serialized: bytes) -> dict:
    return {"instances": [{"b64": base64.b64encode(serialized).decode()}]}


def examples_request(name: str, serialized: bytes):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([serialized], dtype=tf.string))
    return request


def print_load(label: str, result: dict) -> None:
    bad = result["bad"]
    poisoned = (
        f", poison: {bad['rejected']} rejected, {bad['ok']} answered" if sum(bad.values()) else ""
    )
    cpu = (
        f"; CPU/request: server {result['server_cpu'] * 1000:.2f} ms, clients "
        f"{result['client_cpu'] * 1000:.2f} ms"
        if "server_cpu" in result
        else ""
    )
    print(
        f"{label:<34}{result['rps']:7.0f} req/s, p50 {result['p50'] * 1000:6.2f} ms, "
        f"p99 {result['p99'] * 1000:6.2f} ms, {result['errors']} errors / "
        f"{result['requests']}{poisoned}{cpu}",
        flush=True,
    )


def batch_job(settings: PipelineSettings, rows: list[dict], copies: int, tmp: str) -> dict:
    """The batch job over one span of `copies` x the shipped rows, into a fresh SQLite file."""
    data_dir = Path(tmp) / f"data-{copies}"
    spans.write_csv(data_dir / "span-1" / "data.csv", rows * copies)
    job_settings = PipelineSettings.load(data_dir=str(data_dir), span_pattern="span-{SPAN}/*.csv")
    if job_settings.data.span_complete_marker:  # the batch job takes complete spans only
        (data_dir / "span-1" / job_settings.data.span_complete_marker).touch()
    batch = BatchPredictSettings.load(sqlite_path=os.path.join(tmp, f"predictions-{copies}.db"))
    result = batch_predict.run(batch, job_settings, span=1)
    return {"rows": result.rows, "seconds": result.seconds, "rps": result.rows / result.seconds}


def cpu_bound(rounds: list, protocol: str) -> float:
    """The requests/s the machine's cores could serve at concurrency 32 if fully busy, from the
    CPU time server and clients spent per request (the median round): the ceiling of any
    batching or scheduling."""
    per_request = statistics.median(
        r[protocol][32]["server_cpu"] + r[protocol][32]["client_cpu"] for r in rounds
    )
    return (os.cpu_count() or 1) / per_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput level")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of reference, c=1 and c=32 per protocol"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="server processes (PIPELINE_SERVING_WORKERS); default: one per core",
    )
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
    version, _ = batch_predict.choose_version(settings.serving_model_dir, None)
    model_path = os.path.join(settings.serving_model_dir, str(version))
    rows = span_rows(settings)
    instances = json_instances(rows[:2000])
    # As the batch job's command does (serving/batch_predict.py main): the job runs in this
    # process, whose imports would otherwise be walked by every full collection.
    runtime.freeze_live_objects()
    print(
        f"model {model_path}; {len(rows)} rows in {settings.data.data_dir}; {os.cpu_count()} CPUs; "
        f"{args.workers} server worker(s)",
        flush=True,
    )

    signature = tf.saved_model.load(model_path).signatures["serving_raw"]
    reference = in_process(signature, instances, args.repeats)
    print(
        f"in-process serving_raw: 1 row {reference['one'] * 1000:.3f} ms (tensors built "
        f"outside the timed call: {reference['one_prebuilt'] * 1000:.3f} ms), 256 rows "
        f"{batched_rate(signature, instances, args.repeats):,.0f} rows/s",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "PIPELINE_SERVING_LOG_SAMPLING_RATE": "0",
            "PIPELINE_SERVING_WORKERS": str(args.workers),
        }
        name = paths.model_name(ServingSettings.load(env), settings)
        bodies = rest_bodies(instances)
        protos = grpc_requests(model_path, name, instances)
        good_examples, poisoned = example_requests(settings, instances)
        with process.running_server(env, os.path.join(tmp, "server.log")) as url:
            predict = f"{url}/v1/models/{name}:predict"
            seconds = args.seconds
            asyncio.run(rest_load(predict, bodies, 1, 1.0))  # warm-up
            asyncio.run(grpc_load(url.grpc, protos, 1, 1.0))
            loads = {
                "REST": lambda c: with_cpu(lambda: rest_load(predict, bodies, c, seconds), url.pid),
                "gRPC": lambda c: with_cpu(
                    lambda: grpc_load(url.grpc, protos, c, seconds), url.pid
                ),
            }
            rounds = paired_rounds(args.rounds, signature, instances, args.repeats, loads)
            eight = {protocol: load(8) for protocol, load in loads.items()}
            # Poisoning: serving_default (tf.Examples), 32 good clients, then 31 + 1 bad.
            rest_bodies_ex = [b64(e) for e in good_examples]
            grpc_ex = [examples_request(name, e) for e in good_examples]
            poison_loads = {
                "REST": lambda bad: asyncio.run(
                    rest_load(predict, rest_bodies_ex, 32, seconds, b64(poisoned), int(bad))
                ),
                "gRPC": lambda bad: asyncio.run(
                    grpc_load(
                        url.grpc, grpc_ex, 32, seconds, examples_request(name, poisoned), int(bad)
                    )
                ),
            }
            # Clean and poisoned runs alternate, a pair per round, as the loads above.
            poison = {
                protocol: [(load(False), load(True)) for _ in range(args.rounds)]
                for protocol, load in poison_loads.items()
            }
        for i, round_ in enumerate(rounds, 1):
            print(f"round {i}: in-process one row {round_['reference'] * 1000:.3f} ms", flush=True)
            for protocol in loads:
                for c in (1, 32):
                    print_load(f"  {protocol} single-row, concurrency {c:2d}:", round_[protocol][c])
        for protocol, result in eight.items():
            print_load(f"{protocol} single-row, concurrency  8:", result)
        for protocol, pairs in poison.items():
            for clean, poisoned_run in pairs:
                print_load(f"{protocol} tf.Examples, 32 good:", clean)
                print_load(f"{protocol} tf.Examples, 31 good + 1 bad:", poisoned_run)
        transport = transport_ceiling(protos, seconds)
        for c, result in transport.items():
            print_load(f"gRPC empty server, concurrency {c:2d}:", result)
        # The batched reference just before the job it is compared with.
        batched = batched_rate(signature, instances, args.repeats)
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
        print(
            f"batch job, marginal rate (start-up excluded): {marginal:,.0f} rows/s; in-process "
            f"256 rows just before: {batched:,.0f} rows/s",
            flush=True,
        )

    rows_goals = []
    for protocol in ("REST", "gRPC"):
        # Each ratio within its round (the reference and both loads a few seconds apart), then
        # the median round: the machine's speed drifts by up to a third over a run.
        ratio = statistics.median(r[protocol][1]["p50"] / r["reference"] for r in rounds)
        scaling = statistics.median(r[protocol][32]["rps"] / r[protocol][1]["rps"] for r in rounds)
        errors = sum(r[protocol][c]["errors"] for r in rounds for c in (1, 32))
        errors += eight[protocol]["errors"]
        rows_goals += [
            (f"{protocol} p50 (c=1) within 2x in-process one-row", f"{ratio:.1f}x", ratio <= 2),
            (
                f"{protocol} throughput c=32 >= 5x c=1, zero errors",
                f"{scaling:.1f}x, {errors} err",
                scaling >= 5 and errors == 0,
            ),
            (
                f"  {protocol} c=32 CPU bound: cores / CPU per request",
                f"{cpu_bound(rounds, protocol):,.0f} req/s",
                None,
            ),
        ]
    ceiling = transport[32]["rps"] / transport[1]["rps"]
    empty_cpu = transport[32]["server_cpu"] + transport[32]["client_cpu"]
    rows_goals.append(
        (
            "  gRPC transport alone (empty server) c32/c1",
            f"{ceiling:.1f}x, {transport[32]['rps']:.0f} req/s, {empty_cpu * 1000:.2f} ms CPU",
            None,  # a reference, not a goal
        )
    )
    for protocol, pairs in poison.items():
        share = statistics.median(bad["rps"] / clean["rps"] for clean, bad in pairs)
        failed = sum(bad["errors"] + clean["errors"] for clean, bad in pairs)
        answered = sum(bad["bad"]["ok"] for _, bad in pairs)
        rows_goals.append(
            (
                f"{protocol} 1 bad of 32: 0 good failed, >= 80% rps",
                f"{failed} failed, {share:.0%}",
                failed == 0 and share >= 0.8 and answered == 0,
            )
        )
    batch_share = job["rps"] / batched
    rows_goals += [
        ("batch job >= 25% of in-process batched rate", f"{batch_share:.1%}", batch_share >= 0.25),
        (
            "  same, start-up excluded (marginal rate)",
            f"{marginal / batched:.1%}",
            marginal / batched >= 0.25,
        ),
    ]
    print("\ngoal                                              measured                 met")
    for goal, measured, met in rows_goals:
        print(f"{goal:<50}{measured:<25}{'ref' if met is None else 'yes' if met else 'NO'}")


if __name__ == "__main__":
    sys.exit(main())
