"""A local model server speaking TensorFlow Serving's REST API (aiohttp).

    make serve     # tfx-template serve [--host H] [--port P]; settings: PIPELINE_SERVING_*

Endpoints, as TF Serving's (https://www.tensorflow.org/tfx/serving/api_rest):
    GET  /v1/models/{name}                                  version status
    GET  /v1/models/{name}/versions/{v}                     status of one version
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature_def
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    {"instances"} or {"inputs"}
    POST ...:classify | :regress                            {"examples": [...], "context"}
    GET  /monitoring/hybrid                                 hybrid serving hit rate
Paths, verbs and bodies are read as TF Serving reads them (serving/rest_routes.py,
serving/rest_json.py). Errors are {"error": "..."} with TF Serving's status: 4xx for client
mistakes, naming what is wrong; 5xx for the server's own faults, with a generic message (the
detail goes to the server log). Labels: `latest` (the newest loaded version) and `previous`.
Each predict response carries the version that answered in the `X-Model-Version` header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from typing import Optional

import numpy as np
from aiohttp import web

from pipeline import runtime
from pipeline.names import SERVING_DEFAULT_SIGNATURE, SERVING_KEYED_SIGNATURE, SERVING_RAW_SIGNATURE
from pipeline.settings import PipelineSettings
from serving import model_errors, paths, rest_json, rest_routes
from serving.batching import Batcher
from serving.hybrid import PredictionTable
from serving.model_store import LoadedVersion, ModelStore
from serving.request_log import RequestLogger
from serving.rest_routes import shown
from serving.settings import BatchPredictSettings, ServingSettings
from serving.tensors import RequestError, columnar_response, row_response, rows

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

    # ---- routing -------------------------------------------------------------------------
    def web_app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.max_body_bytes, middlewares=[self._errors]
        )
        app.router.add_get("/monitoring/hybrid", self.hybrid_stats)
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
        if label is not None:
            model = self.store.label(label) if name == self.model_name else None
            if model is None:
                raise RequestError(f"Unrecognized servable version label: {shown(label)}", 400)
            return model
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
            signature_name = signature_name or (
                SERVING_DEFAULT_SIGNATURE if method == "predict" else SERVING_RAW_SIGNATURE
            )
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
        """tf.Example-style feature dicts (plus shared `context`) through a raw-value
        signature. classify returns [["0", 1-p], ["1", p]] per example, regress p."""
        signature = model.signature(signature_name)
        examples, context = body.get("examples"), body.get("context") or {}
        if not isinstance(examples, list) or not examples:
            raise RequestError("'examples' must be a non-empty list of feature objects")
        if not isinstance(context, dict):
            raise RequestError("'context' must be an object of features")
        instances = []
        for i, example in enumerate(examples):
            if not isinstance(example, dict):
                raise RequestError(f"example {i} must be an object of features")
            merged = {**context, **example}
            # tf.Example features are lists; one value (or none = missing) per feature here.
            for key, value in merged.items():
                if isinstance(value, list):
                    if len(value) > 1:
                        raise RequestError(
                            f"example {i}: feature '{key}' has {len(value)} "
                            "values; the model takes one"
                        )
                    merged[key] = value[0] if value else None
            instances.append(merged)
        columns = signature.columns_from_instances(instances)
        outputs = await self.batcher.predict(model, signature, columns)
        if "probabilities" not in outputs:
            raise RequestError(
                f"signature '{signature_name}' has no 'probabilities' output for :{method}"
            )
        scores = outputs["probabilities"].reshape(rows(columns), -1)[:, 0].tolist()
        if method == "regress":
            return {"result": scores}
        return {"result": [[["0", 1.0 - p], ["1", p]] for p in scores]}

    # ---- lifecycle ------------------------------------------------------------------------
    async def _start_polling(self, app: web.Application) -> None:
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                newly = await asyncio.to_thread(self.store.refresh)
                if newly:
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


def build(
    settings: ServingSettings, pipeline: PipelineSettings, batch: BatchPredictSettings
) -> App:
    """The server of the models the pipeline pushes (hybrid: and of the batch table)."""
    store = ModelStore(pipeline.serving_model_dir, settings.keep_versions)
    store.refresh()  # serve at once if a model is pushed; the poller picks up later ones
    table = None
    if settings.hybrid:
        table = PredictionTable(paths.predictions_db_path(batch, pipeline), batch.table)
    return App(settings, pipeline, store, table)


def serve(host: Optional[str] = None, port: Optional[int] = None) -> None:
    """`tfx-template serve`: serves until stopped, on `host` and `port` (default
    PIPELINE_SERVING_HOST and PIPELINE_SERVING_PORT)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings, pipeline = ServingSettings.load(**overrides), PipelineSettings.load()
    app = build(settings, pipeline, BatchPredictSettings.load())
    # TensorFlow and the loaded models live as long as the server: full collections that
    # walk them again would stall requests.
    runtime.freeze_live_objects()
    if not app.store.versions:
        log.warning(
            "no model version under %s yet; waiting for the Pusher", pipeline.serving_model_dir
        )
    print(
        f"serving '{app.model_name}' from {pipeline.serving_model_dir} on "
        f"http://{settings.host}:{settings.port}",
        file=sys.stderr,
        flush=True,
    )
    # TF Serving's HTTP server reads request lines and headers of any length: a long URL gets
    # the API's JSON answer, not the HTTP parser's plain-text 400, up to the body limit.
    web.run_app(
        app.web_app(),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        max_line_size=settings.max_body_bytes,
        max_field_size=settings.max_body_bytes,
    )
