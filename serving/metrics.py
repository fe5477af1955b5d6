"""Prometheus metrics of the server, served where TF Serving serves its own
(`/monitoring/prometheus/metrics` on the REST port), and the JSON health probe's answer.

    serving_requests_total{model, version, method, protocol, status}   requests answered
    serving_request_latency_seconds{model, method, protocol}           histogram
    serving_batch_size_rows{signature}                                 rows per model call
    serving_loaded_versions{model}                                     versions loaded now
    serving_model_version_state{model, version, state}                 1 per version known

`method` is TF Serving's API name (Predict, Classify, Regress, GetModelMetadata,
GetModelStatus), `protocol` REST or GRPC, `status` the canonical code both protocols map to
(OK, INVALID_ARGUMENT, NOT_FOUND, ...: serving/status_codes.py), as TF Serving's own
`:tensorflow:serving:request_count{model_name, status}` counts them. A model name the server
does not serve is counted as `model="unknown"` and a version only when one answered, so
clients cannot grow the label sets without bound.
"""

from __future__ import annotations

import os
import re
import time
from typing import Callable, Optional

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from serving import status_codes
from serving.model_store import ModelStore
from serving.workers import METRICS_DIR_ENV, worker_index

METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's
HEALTH_PATH = "/healthz"

METHODS = ("Predict", "Classify", "Regress", "GetModelMetadata", "GetModelStatus")
UNKNOWN = "unknown"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
BATCH_BUCKETS = tuple(2**i for i in range(13))  # 1 .. 4096 rows

# TF Serving's REST paths: /v1/models/<name>[/versions/<v>|/labels/<l>][/metadata|:<method>]
_REST_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/[^/:]+)?"
    r"(?P<tail>/metadata|:[A-Za-z]+)?/?$",
    re.IGNORECASE,  # as TF Serving's routes (serving/rest_routes.py); method names are not
)
_REST_METHODS = {":predict": "Predict", ":classify": "Classify", ":regress": "Regress"}


class _Versions:
    """Collected at each scrape from the store, so the gauges are never stale."""

    def __init__(self, model_name: str, store: ModelStore):
        self.model_name, self.store = model_name, store

    def collect(self):
        loaded = GaugeMetricFamily(
            "serving_loaded_versions", "Model versions loaded and serving.", labels=["model"]
        )
        loaded.add_metric([self.model_name], len(self.store.versions))
        states = GaugeMetricFamily(
            "serving_model_version_state",
            "1 for each version the server knows, by its state (AVAILABLE, LOADING, END).",
            labels=["model", "version", "state"],
        )
        for entry in self.store.status():
            states.add_metric([self.model_name, entry["version"], entry["state"]], 1)
        return [loaded, states]


class Metrics:
    """The server's metrics in a registry of its own."""

    def __init__(self, model_name: str, store: ModelStore):
        self.model_name = model_name
        self.store = store
        self.worker = worker_index()
        self.registry = CollectorRegistry()
        # Workers sharing the ports (serving/workers.py) count into files of one directory,
        # and every worker's page sums them; the process's own metrics are one worker's then.
        multiprocess_dir = os.environ.get(METRICS_DIR_ENV)
        if multiprocess_dir:
            self.exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.exposed, multiprocess_dir)
        else:
            self.exposed = self.registry
            ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "serving_requests",
            "Requests answered, by model, version, TF Serving API method, protocol and "
            "canonical status code.",
            ["model", "version", "method", "protocol", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "serving_request_latency_seconds",
            "Time from a request's arrival to its answer.",
            ["model", "method", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "serving_batch_size_rows",
            "Rows per model call after micro-batching.",
            ["signature"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.exposed.register(_Versions(model_name, store))
        # (model, version, method, protocol, status) -> the counter's and histogram's
        # children: labels() validates and locks on every call. Keyed by the labels as
        # counted, which clients cannot grow without bound (see the module's docstring).
        self._children: dict[tuple, tuple] = {}

    # ---- recording ---------------------------------------------------------------------
    def model_label(self, name: Optional[str]) -> str:
        return name if name == self.model_name else UNKNOWN

    def observe(
        self,
        model: Optional[str],
        version: Optional[int | str],
        method: str,
        protocol: str,
        status: str,
        seconds: float,
    ) -> None:
        model = self.model_label(model)
        method = method if method in METHODS else UNKNOWN
        key = (model, version, method, protocol, status)
        children = self._children.get(key)
        if children is None:
            version = str(version) if version is not None else ""
            children = self._children[key] = (
                self.requests.labels(model, version, method, protocol, status),
                self.latency.labels(model, method, protocol),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, signature_name: str, rows: int) -> None:
        """The Batcher's hook: one model call of `rows` rows."""
        self.batch_size.labels(signature_name).observe(rows)

    # ---- REST ----------------------------------------------------------------------------
    def rest_middleware(self) -> Callable:
        """Counts and times every request to a model path (/v1/models/...), whatever answers
        it (the handler, an error, the token check)."""

        @web.middleware
        async def count(request: web.Request, handler):
            if request.path[:4].lower() != "/v1/":
                return await handler(request)
            match = _REST_PATH.match(request.path)
            started = time.perf_counter()
            status = 500
            response = None
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as error:
                status = error.status
                raise
            finally:
                self.observe(
                    match and match["name"],
                    _rest_version(match, response, status),
                    _rest_method(match, request.method),
                    "REST",
                    status_codes.name(status_codes.from_http(status)),
                    time.perf_counter() - started,
                )

        return count

    async def metrics_page(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.exposed), headers={"Content-Type": content_type})

    async def health(self, request: web.Request) -> web.Response:
        """200 while a version is loaded, 503 before (or if none loads): for probes."""
        versions = sorted(self.store.versions)
        body = {
            "status": "ok" if versions else "unavailable",
            "model": self.model_name,
            "versions": [str(v) for v in versions],
        }
        if self.worker is not None:  # which of the workers sharing the port answered
            body["worker"] = self.worker
        return web.json_response(body, status=200 if versions else 503)


def _rest_method(match: Optional[re.Match], http_method: str) -> str:
    if match is None:
        return UNKNOWN
    tail = match["tail"]
    if tail is None:
        return "GetModelStatus" if http_method == "GET" else UNKNOWN
    if tail.lower() == "/metadata":
        return "GetModelMetadata" if http_method == "GET" else UNKNOWN
    return _REST_METHODS.get(tail, UNKNOWN) if http_method == "POST" else UNKNOWN


def _rest_version(
    match: Optional[re.Match], response: Optional[web.StreamResponse], status: int
) -> Optional[str]:
    """The version that answered: the X-Model-Version header, else the one in the path."""
    if response is not None and response.headers.get("X-Model-Version", "").isdigit():
        return response.headers["X-Model-Version"]
    if match is not None and match["version"] and status < 400:
        return match["version"]
    return None
