"""A local model server speaking TensorFlow Serving's REST API (aiohttp).

    make serve     # tfx-template serve [--host H] [--port P]; settings: PIPELINE_SERVING_*

Endpoints, as TF Serving's (https://www.tensorflow.org/tfx/serving/api_rest):
    GET  /v1/models/{name}                                  version status
    GET  /v1/models/{name}/versions/{v}                     status of one version
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature_def
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    {"instances"} or {"inputs"}
    POST ...:classify | :regress      {"signature_name", "examples": [...], "context"}
    GET  /monitoring/hybrid                                 hybrid serving hit rate
    GET  /monitoring/prometheus/metrics                     Prometheus metrics (serving/metrics.py)
    GET  /healthz                                           200 while a version is loaded, else 503
TF Serving's gRPC API runs in the same process (serving/grpc_server.py, PIPELINE_SERVING_GRPC_PORT);
a bearer token guards both (serving/auth.py).
Paths, verbs and bodies are read as TF Serving reads them (serving/rest_routes.py,
serving/rest_json.py). Errors are {"error": "..."} with TF Serving's status: 4xx for client
mistakes, naming what is wrong; 5xx for the server's own faults, with a generic message (the
detail goes to the server log). Labels are those the model config file defines
(PIPELINE_SERVING_MODEL_CONFIG_FILE, TF Serving's version_labels). Each response carries the
version that answered in the `X-Model-Version` header.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import sys
import time
from typing import Optional

import numpy as np
from aiohttp import web

from pipeline import runtime
from pipeline.names import SERVING_DEFAULT_SIGNATURE, SERVING_KEYED_SIGNATURE
from pipeline.settings import PipelineSettings
from pipeline.settings_model import SettingsError
from serving import (
    auth,
    classify_regress,
    example_json,
    grpc_server,
    model_errors,
    paths,
    rest_json,
    rest_routes,
    workers,
)
from serving.batching import Batcher
from serving.hybrid import PredictionTable
from serving.metrics import HEALTH_PATH, METRICS_PATH, Metrics
from serving.model_config import ModelConfigError, VersionPolicy, read_model_config
from serving.model_store import LoadedVersion, ModelStore
from serving.request_log import RequestLogger
from serving.rest_routes import shown
from serving.settings import BatchPredictSettings, ServingSettings
from serving.tensors import RequestError, columnar_response, row_response

log = logging.getLogger("serving")


class App:
    def __init__(
        self,
        settings: ServingSettings,
        pipeline: PipelineSettings,
        store: ModelStore,
        table: Optional[PredictionTable] = None,
    ):
        self.settings = settings
        self.model_name = paths.model_name(settings, pipeline)
        self.store = store
        self.table = table
        self.batcher = Batcher(settings.max_batch_size, settings.max_batch_wait_ms / 1000)
        self.logger = RequestLogger(
            paths.request_log_path(settings, pipeline), settings.log_sampling_rate
        )
        self.token = auth.token(settings)
        self.metrics = Metrics(self.model_name, store)
        self.batcher.on_call = self.metrics.observe_batch

    # ---- routing -------------------------------------------------------------------------
    def web_app(self) -> web.Application:
        # Outermost first: every answer is counted, then the token is checked.
        guard = [auth.rest_middleware(self.token, [HEALTH_PATH])] if self.token else []
        app = web.Application(
            client_max_size=self.settings.max_body_bytes,
            middlewares=[self.metrics.rest_middleware(), *guard, self._errors],
        )
        app.router.add_get("/monitoring/hybrid", self.hybrid_stats)
        app.router.add_get(METRICS_PATH, self.metrics.metrics_page)
        app.router.add_get(HEALTH_PATH, self.metrics.health)
        # Paths outside /v1/ go above this line: every other path, any verb, is read as TF
        # Serving reads it (serving/rest_routes.py).
        app.router.add_route("*", "/{path:.*}", self.dispatch)
        app.on_startup.append(self._start_polling)
        app.on_cleanup.append(self._stop)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        """Every error as TF Serving's {"error": "..."}; the server keeps serving. A fault of
        the server's own is a 500 with a generic message, its detail in the server log."""
        try:
            return await handler(request)
        except RequestError as error:
            return _error(error.status, str(error))
        except web.HTTPRequestEntityTooLarge:
            return _error(413, self._too_large(request))
        except web.HTTPException as error:
            if error.status < 400:
                raise
            path = shown(request.raw_path)
            return _error(error.status, f"{error.reason}: {request.method} {path}")
        except Exception:
            log.exception("error answering %s %s", request.method, request.path)
            return _error(500, model_errors.SERVER_FAULT)

    def _too_large(self, request: web.Request) -> str:
        size = f"{request.content_length} bytes" if request.content_length else "larger"
        return (
            f"request body too large: {size}, the limit is {self.settings.max_body_bytes} "
            "bytes (PIPELINE_SERVING_MAX_BODY_BYTES)"
        )

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """TF Serving's REST dispatch (http_rest_api_handler.cc): /v1/ paths by verb and
        pattern, the rest 404."""
        raw_path = request.raw_path
        if not rest_routes.is_api(raw_path):
            raise RequestError(f"Not Found: {request.method} {shown(raw_path)}", 404)
        if request.method == "OPTIONS":  # CORS preflight, answered as TF Serving does
            if not re.match(r"https?://", request.headers.get("Origin", "")):
                raise RequestError("Origin header is missing in CORS preflight", 400)
            return web.Response(content_type="application/json")
        route = rest_routes.parse(request.method, raw_path)
        if route.http_method == "POST":
            return await self.call(request, route)
        if not route.name:
            raise RequestError("Missing model name in request.", 400)
        if route.metadata:
            return await self.metadata(route)
        return await self.status(route)

    def _model(self, route: rest_routes.Route) -> LoadedVersion:
        """The loaded version a request names, or TF Serving's error for it."""
        name, version, label = route.name, route.version, route.label
        if label is not None:  # a label the model config file defines, else 400
            try:
                if name != self.model_name:
                    raise RequestError("", 400)
                version = self.store.label_version(label)
            except RequestError:
                raise RequestError(
                    f"Unrecognized servable version label: {shown(label)}", 400
                ) from None
        model = None
        if name == self.model_name:
            model = self.store.get(version)
        if model is None:
            wanted = (
                f"Latest({shown(name)})"
                if version is None
                else f"Specific({shown(name)}, {version})"
            )
            raise RequestError(f"Servable not found for request: {wanted}", 404)
        return model

    # ---- GET ------------------------------------------------------------------------------
    async def status(self, route: rest_routes.Route) -> web.Response:
        """TF Serving's GetModelStatus: every version of the model, or the one of a version
        URL; a label URL lists every version too (TF Serving does not resolve labels there)."""
        name, version = route.name, route.version
        statuses = self.store.status() if name == self.model_name else []
        if version is not None:
            statuses = [s for s in statuses if s["version"] == str(version)]
            if not statuses:
                raise RequestError(f"Could not find version {version} of model {shown(name)}", 404)
        if not statuses:  # as TF Serving: NOT_FOUND until a version exists (readiness probe)
            raise RequestError(f"Could not find any versions of model {shown(name)}", 404)
        for entry in statuses:  # a load error names files of this machine: not for clients
            message = entry["status"]["error_message"]
            if message:
                entry["status"] = {**entry["status"], "error_message": public_message(message)}
        return web.json_response({"model_version_status": statuses})

    async def metadata(self, route: rest_routes.Route) -> web.Response:
        model = self._model(route)
        return web.json_response(
            {
                "model_spec": {
                    "name": self.model_name,
                    "signature_name": "",
                    "version": str(model.version),
                },
                "metadata": {"signature_def": model.signature_def},
            }
        )

    async def hybrid_stats(self, request: web.Request) -> web.Response:
        if self.table is None:
            raise RequestError("hybrid serving is off (PIPELINE_SERVING_HYBRID=1 turns it on)", 404)
        return web.json_response(self.table.stats())

    # ---- POST -----------------------------------------------------------------------------
    async def call(self, request: web.Request, route: rest_routes.Route) -> web.Response:
        """POST :predict, :classify, :regress; checked in TF Serving's order: the body's JSON,
        then the model, version or label, then the signature and the inputs."""
        started = time.perf_counter()
        method = route.method
        model, body, signature_name, status = None, None, None, 200
        try:
            body = rest_json.parse_body(await request.read())  # 413 past the body limit first
            signature_name = body.get("signature_name")
            if signature_name is not None and not isinstance(signature_name, str):
                raise RequestError("'signature_name' key must be a string value")
            # TF Serving's default for every method (:classify needs the classification one).
            signature_name = signature_name or SERVING_DEFAULT_SIGNATURE
            model = self._model(route)
            answer = await (
                self._predict(model, signature_name, body)
                if method == "predict"
                else self._classify_regress(model, signature_name, body, method)
            )
            response = web.Response(text=rest_json.dumps(answer), content_type="application/json")
            response.headers["X-Model-Version"] = str(model.version)
        except RequestError as error:
            status, answer = error.status, {"error": str(error)}
            response = _error(status, str(error))
        if self.logger.sampled():
            try:
                self.logger.log(
                    model=self.model_name,
                    version=model and model.version,
                    signature=signature_name,
                    method=method,
                    status=status,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    request=body,
                    response=answer,
                )
            except (ValueError, RecursionError, OSError):  # the answer matters more
                log.warning("request log: could not write a record", exc_info=True)
        return response

    async def _predict(self, model: LoadedVersion, signature_name: str, body: dict) -> dict:
        if signature_name not in model.signatures:
            raise RequestError(
                f'Serving signature name: "{signature_name}" not found in signature def'
                f" (signatures: {', '.join(sorted(model.signatures))})"
            )
        signature = model.signature(signature_name)
        if "instances" in body and "inputs" in body:
            raise RequestError(
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys "
                "to exist"
            )
        if "instances" not in body and "inputs" not in body:
            raise RequestError("Missing 'inputs' or 'instances' key")
        row_format = "instances" in body
        columns = (
            signature.columns_from_instances(body["instances"])
            if row_format
            else signature.columns_from_inputs(body["inputs"])
        )
        if self.table is not None and signature_name == SERVING_KEYED_SIGNATURE:
            outputs = await self._hybrid(model, signature, columns)
        else:
            outputs = await self.batcher.predict(model, signature, columns)
        return (
            {"predictions": row_response(outputs)}
            if row_format
            else {"outputs": columnar_response(outputs)}
        )

    async def _hybrid(self, model: LoadedVersion, signature, columns: dict) -> dict:
        """Table answers for known keys, the model for the rest; `source` says which."""
        keys = [k.decode("utf-8", "replace") for k in columns["key"]]
        found = self.table.lookup(keys)
        missing = [i for i, f in enumerate(found) if f is None]
        probabilities = np.zeros((len(keys), 1), dtype=np.float32)
        for i, f in enumerate(found):
            if f is not None:
                probabilities[i, 0] = f[0]
        if missing:
            outputs = await self.batcher.predict(
                model, signature, {k: [v[i] for i in missing] for k, v in columns.items()}
            )
            probabilities[missing] = outputs["probabilities"].reshape(len(missing), -1)
        return {
            "key": np.array(columns["key"], dtype=object),
            "probabilities": probabilities,
            "source": np.array([b"table" if f else b"model" for f in found], dtype=object),
        }

    async def _classify_regress(
        self, model: LoadedVersion, signature_name: str, body: dict, method: str
    ) -> dict:
        """TF Serving's :classify / :regress: {"context"?, "examples"} as tf.Examples through
        a signature TF Serving's Classify/Regress would accept (serving/classify_regress.py);
        {"results": [[[label, score], ...], ...]} or {"results": [value, ...]}."""
        context, examples = example_json.examples_from_body(body, method)
        examples = classify_regress.with_context(context, examples)
        if method == "regress":
            values = await classify_regress.regress(model, signature_name, examples, self.batcher)
            return {example_json.RESULTS_KEY: values.tolist()}
        classes, scores = await classify_regress.classify(
            model, signature_name, examples, self.batcher
        )
        return {
            example_json.RESULTS_KEY: [
                [[label.decode("utf-8", "replace"), score] for label, score in zip(ls, ss)]
                for ls, ss in zip(classes.tolist(), scores.tolist())
            ]
        }

    # ---- lifecycle ------------------------------------------------------------------------
    async def _start_polling(self, app: web.Application) -> None:
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                before = set(self.store.versions)
                await asyncio.to_thread(self.store.refresh)
                if set(self.store.versions) != before:
                    self.batcher.forget(set(self.store.versions))
            except Exception:  # keep watching whatever happens
                log.exception("refreshing %s", self.store.base_path)
            await asyncio.sleep(self.settings.poll_seconds)

    async def _stop(self, app: web.Application) -> None:
        self._poller.cancel()
        await self.batcher.close()
        self.logger.close()
        if self.table is not None:
            log.info("hybrid serving: %s", json.dumps(self.table.stats()))


def public_message(text: str) -> str:
    """A message written for the server log, fit for a client: no file paths of this machine,
    no Python exception class in front."""
    text = re.sub(r"^[A-Z]\w*(Error|Exception|Warning): ", "", text)
    return model_errors.readable(text)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def model_store(settings: ServingSettings, pipeline: PipelineSettings) -> ModelStore:
    """The store of the pushed versions: the version policy and labels of the model config
    file if one is set, else the newest keep_versions versions and no labels."""
    name = paths.model_name(settings, pipeline)
    if not settings.model_config_file:
        policy = VersionPolicy("latest", num_versions=settings.keep_versions)
        return ModelStore(pipeline.serving_model_dir, policy, model_name=name)
    try:
        config = read_model_config(settings.model_config_file, name)
    except ModelConfigError as error:
        raise SettingsError(f"PIPELINE_SERVING_MODEL_CONFIG_FILE: {error}") from None
    log.info(
        "model config %s: version policy %s, labels %s (its base_path %s is not read: "
        "this server serves %s)",
        settings.model_config_file,
        config.policy.describe(),
        config.version_labels or "none",
        config.base_path or "unset",
        pipeline.serving_model_dir,
    )
    return ModelStore(pipeline.serving_model_dir, config.policy, settings.model_config_file, name)


def build(
    settings: ServingSettings, pipeline: PipelineSettings, batch: BatchPredictSettings
) -> App:
    """The server of the models the pipeline pushes (hybrid: and of the batch table)."""
    store = model_store(settings, pipeline)
    store.refresh()  # serve at once if a model is pushed; the poller picks up later ones
    table = None
    if settings.hybrid:
        table = PredictionTable(paths.predictions_db_path(batch, pipeline), batch.table)
    return App(settings, pipeline, store, table)


def serve(
    host: Optional[str] = None, port: Optional[int] = None, grpc_port: Optional[int] = None
) -> None:
    """`tfx-template serve`: serves REST and gRPC until stopped, on `host`, `port` and
    `grpc_port` (default PIPELINE_SERVING_HOST, _PORT and _GRPC_PORT; gRPC port 0: REST only)."""
    worker = workers.worker_index()
    tag = "" if worker is None else f" [worker {worker}]"
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(name)s{tag} %(message)s")
    overrides = {
        k: v for k, v in (("host", host), ("port", port), ("grpc_port", grpc_port)) if v is not None
    }
    try:
        settings, pipeline = ServingSettings.load(**overrides), PipelineSettings.load()
        auth.check_exposure(settings)  # before loading anything: refuse an open server at once
        if settings.workers > 1 and worker is None:
            raise SystemExit(workers.supervise(settings))
    except (SettingsError, workers.PortInUse) as error:
        raise SystemExit(f"error: {error}") from None
    app = build(settings, pipeline, BatchPredictSettings.load())
    # TensorFlow and the loaded models live as long as the server: full collections that
    # walk them again would stall requests.
    runtime.freeze_live_objects()
    if not app.store.versions:
        log.warning(
            "no model version under %s yet; waiting for the Pusher", pipeline.serving_model_dir
        )
    web_app = app.web_app()
    addresses = f"http://{settings.host}:{settings.port} (REST)"
    shared = worker is not None  # the workers listen on the same ports
    if settings.grpc_port:
        _serve_grpc_too(web_app, app, settings, shared)
        addresses += f" and {grpc_server.address_host(settings.host)}:{settings.grpc_port} (gRPC)"
    print(
        f"serving{tag} '{app.model_name}' from {pipeline.serving_model_dir} on {addresses}",
        file=sys.stderr,
        flush=True,
    )
    try:
        # TF Serving's HTTP server reads request lines and headers of any length: a long URL
        # gets the API's JSON answer, not the HTTP parser's plain-text 400, up to the body limit.
        web.run_app(
            web_app,
            host=settings.host,
            port=settings.port,
            print=None,
            access_log=None,
            max_line_size=settings.max_body_bytes,
            max_field_size=settings.max_body_bytes,
            reuse_port=shared or None,
        )
    except grpc_server.BindError as error:
        raise SystemExit(f"error: {error}") from None


def _serve_grpc_too(
    web_app: web.Application, app: App, settings: ServingSettings, shared: bool
) -> None:
    """The gRPC server starts and stops with the REST app, on its event loop and batcher."""
    services = grpc_server.Services(
        app.model_name, app.store, app.batcher, app.metrics, app.token, app.logger
    )
    running = []

    async def start(_: web.Application) -> None:
        running.append(
            await grpc_server.start(
                services, settings.host, settings.grpc_port, settings.max_body_bytes, shared
            )
        )

    async def stop(_: web.Application) -> None:
        while running:  # calls in flight finish
            await running.pop().stop(grace=1)
        # Collected now, on the loop, not at interpreter exit, where grpc's Cython objects
        # print an empty "Error in sys.excepthook" (github.com/grpc/grpc/issues/38679).
        gc.collect()

    web_app.on_startup.append(start)
    web_app.on_cleanup.insert(0, stop)  # before the batcher it uses closes
