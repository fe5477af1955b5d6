"""TensorFlow Serving's gRPC API (the `tensorflow-serving-api` package's services), served by
the REST server's process over the same ModelStore and Batcher: the same versions, labels and
micro-batching as REST.

grpc.aio serves the calls on the REST server's event loop, so gRPC requests go through the
same Batcher queues as REST's (and merge with them): a lone one is called on the loop at once,
concurrent ones merge while a call runs. Measured against grpc's synchronous server (a pool of
64 threads, Predict calls batched among those threads), the two alternating in one session on
the same model: at 32 clients 1,204 against 802 requests/s (medians of four rounds), at one
client a p50 of 2.31 against 2.20 ms. In the threads, each call cost thread hand-offs under
the GIL that grew with the clients; on the loop a call costs grpc's callbacks and no switch.

    PredictionService  Predict, Classify, Regress, GetModelMetadata
    ModelService       GetModelStatus
    (MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED: the server serves
    the versions under one base path, and its config is its settings.)

Model specs, defaults and error codes follow TF Serving's implementation (server_core.cc,
predict_util.cc, get_model_metadata_impl.cc, get_model_status_impl.cc): a missing model spec
or name is INVALID_ARGUMENT, an unknown model or version NOT_FOUND ("Servable not found for
request: Specific(name, 3)"), an unknown version label INVALID_ARGUMENT, an unknown Predict
signature FAILED_PRECONDITION, a tensor that does not fit the signature INVALID_ARGUMENT.
Tensors of one value per example are read straight from the proto's repeated field or packed
bytes (tf.make_ndarray for any other layout) and written as tf.make_tensor_proto writes them,
without its per-call overhead (tensor_proto below); messages are capped at 1024 characters as
TF Serving caps them. Every call is counted in the metrics, and
sampled Predict/Classify/Regress calls go to REST's request log in its JSON shapes.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from typing import Awaitable, Callable, Iterator, Optional

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.python.util import compat
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from pipeline.names import SERVING_DEFAULT_SIGNATURE
from serving import auth, classify_regress, model_errors, status_codes
from serving.batching import Batcher
from serving.metrics import Metrics
from serving.model_store import LoadedVersion, ModelStore
from serving.request_log import RequestLogger
from serving.tensors import RequestError

log = logging.getLogger("serving")

SIGNATURE_DEF = "signature_def"  # the one metadata field TF Serving knows
MESSAGE_LIMIT = 1024  # TF Serving's ToGRPCStatus truncates longer messages
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class BindError(OSError):
    """The gRPC port cannot be listened on."""


class Abort(Exception):
    """An answer with a non-OK status code."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class Services(
    prediction_service_pb2_grpc.PredictionServiceServicer,
    model_service_pb2_grpc.ModelServiceServicer,
):
    """Both services over the REST server's store and batcher."""

    def __init__(
        self,
        model_name: str,
        store: ModelStore,
        batcher: Batcher,
        metrics: Metrics,
        token: Optional[str] = None,
        logger: Optional[RequestLogger] = None,
    ):
        self.model_name = model_name
        self.store = store
        self.batcher = batcher
        self.metrics = metrics
        self.token = token
        self.logger = logger
        self._signature_maps: dict[tuple[int, str], get_model_metadata_pb2.SignatureDefMap] = {}

    # ---- the RPCs (coroutines on the event loop) --------------------------------------
    async def Predict(self, request, context):
        return await self._answer("Predict", request, context, self._predict)

    async def Classify(self, request, context):
        return await self._answer("Classify", request, context, self._classify)

    async def Regress(self, request, context):
        return await self._answer("Regress", request, context, self._regress)

    async def GetModelMetadata(self, request, context):
        return await self._answer("GetModelMetadata", request, context, _now(self._metadata))

    async def GetModelStatus(self, request, context):
        return await self._answer("GetModelStatus", request, context, _now(self._status))

    async def MultiInference(self, request, context):
        return await self._answer("MultiInference", request, context, _now(_unimplemented))

    async def HandleReloadConfigRequest(self, request, context):
        return await self._answer(
            "HandleReloadConfigRequest", request, context, _now(_unimplemented)
        )

    # ---- one answer: the token, errors as status codes, metrics ------------------------
    async def _answer(
        self,
        method: str,
        request,
        context: grpc.aio.ServicerContext,
        handler: Callable[[object], Awaitable[tuple[object, Optional[int]]]],
    ):
        started = time.perf_counter()
        code, message, version, response = grpc.StatusCode.OK, "", None, None
        try:
            if self.token and not auth.authorized(_metadata(context, "authorization"), self.token):
                raise Abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or wrong bearer token: send the metadata "
                    "'authorization: Bearer <token>'",
                )
            response, version = await handler(request)
        except Abort as error:
            code, message = error.code, str(error)
        except RequestError as error:
            code, message = status_codes.from_http(error.status), str(error)
        except tf.errors.OpError as error:  # the model rejected the input, as TF Serving's
            code = _CODES.get(error.error_code, grpc.StatusCode.UNKNOWN)
            message = model_error_message(error.message)
        except Exception:  # a server fault: logged here, never sent to the client
            log.exception("gRPC %s failed", method)
            code, message = grpc.StatusCode.INTERNAL, f"{method} failed; see the server's log"
        model = _model_name(request)
        seconds = time.perf_counter() - started
        self.metrics.observe(model, version, method, "GRPC", status_codes.name(code), seconds)
        if method in _LOGGED and self.logger is not None and self.logger.sampled():
            self._log(method, request, response, code, message, version, seconds)
        if code != grpc.StatusCode.OK:
            if len(message) > MESSAGE_LIMIT:
                message = message[:MESSAGE_LIMIT] + "...TRUNCATED"
            await context.abort(code, message)  # raises: grpc answers the status
        return response

    def _log(self, method, request, response, code, message, version, seconds) -> None:
        """The request in the request log, in REST's JSON shapes (what the skew and leakage
        checks read): Predict as {"inputs"}, Classify/Regress as {"instances": [{"b64"}]}."""
        try:
            body, answer = _LOGGED[method](request, response)
        except Exception:  # noqa: BLE001 (a tensor that does not decode: logged without it)
            body, answer = None, None
        try:
            self.logger.log(
                model=self.model_name,
                version=version,
                signature=request.model_spec.signature_name or SERVING_DEFAULT_SIGNATURE,
                method=method.lower(),
                status=status_codes.to_http(code),
                latency_ms=seconds * 1000,
                request=body,
                response=answer if code == grpc.StatusCode.OK else {"error": message},
            )
        except Exception:  # the answer still goes out
            log.exception("writing the request log")

    # ---- model specs -------------------------------------------------------------------
    def _model(self, request) -> LoadedVersion:
        """The version a request's model spec names, as TF Serving's ServerCore finds it."""
        if not request.HasField("model_spec"):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        if not spec.name:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            if spec.name != self.model_name:  # a model without labels
                raise Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {spec.version_label}",
                )
            # The model config file's label, then that version (a RequestError(400) for a
            # label it does not define).
            version = self.store.label_version(spec.version_label)
            model = self.store.get(version)
            request_text = f"Specific({spec.name}, {version})"
        elif choice == "version":
            model = self.store.get(spec.version.value) if spec.name == self.model_name else None
            request_text = f"Specific({spec.name}, {spec.version.value})"
        else:
            model = self.store.get() if spec.name == self.model_name else None
            request_text = f"Latest({spec.name})"
        if model is None:
            raise Abort(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request_text}"
            )
        return model

    def _response_spec(
        self, model: LoadedVersion, signature_name: Optional[str]
    ) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.model_name)
        spec.version.value = model.version
        if signature_name is not None:
            spec.signature_name = signature_name
        return spec

    # ---- Predict -----------------------------------------------------------------------
    async def _predict(self, request: predict_pb2.PredictRequest):
        model = self._model(request)
        name = request.model_spec.signature_name or SERVING_DEFAULT_SIGNATURE
        if name not in model.signatures:
            if name in model.signature_def.get("signature_def", {}):
                raise Abort(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f'Serving signature key "{name}" is not served here (its outputs are '
                    "sparse tensors); signatures served: " + ", ".join(sorted(model.signatures)),
                )
            raise Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{name}" not found.',
            )
        signature = model.signatures[name]
        wanted = _output_filter(list(request.output_filter), signature.outputs)
        columns = columns_from_tensors(signature, request.inputs)
        with _model_errors():
            outputs = await self.batcher.predict(model, signature, columns)
        response = predict_pb2.PredictResponse(model_spec=self._response_spec(model, name))
        for alias in wanted:
            tensor_proto(outputs[alias], response.outputs[alias])
        return response, model.version

    # ---- Classify and Regress ----------------------------------------------------------
    async def _classify(self, request: classification_pb2.ClassificationRequest):
        model = self._model(request)
        name = request.model_spec.signature_name or SERVING_DEFAULT_SIGNATURE
        with _model_errors():
            classes, scores = await classify_regress.classify(
                model, name, serialized_examples(request.input), self.batcher
            )
        response = classification_pb2.ClassificationResponse(
            model_spec=self._response_spec(model, name)
        )
        # A signature without `classes` gives b"" labels, one without `scores` 0 scores: the
        # fields TF Serving leaves unset, which read the same.
        for labels, values in zip(classes, scores):
            result = response.result.classifications.add()
            for label, score in zip(labels, values):
                result.classes.add(label=_text(label), score=float(score))
        return response, model.version

    async def _regress(self, request: regression_pb2.RegressionRequest):
        model = self._model(request)
        name = request.model_spec.signature_name or SERVING_DEFAULT_SIGNATURE
        with _model_errors():
            values = await classify_regress.regress(
                model, name, serialized_examples(request.input), self.batcher
            )
        response = regression_pb2.RegressionResponse(model_spec=self._response_spec(model, name))
        for value in np.asarray(values).reshape(-1):
            response.result.regressions.add(value=float(value))
        return response, model.version

    # ---- metadata and status -----------------------------------------------------------
    def _metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest):
        if not request.HasField("model_spec"):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        if not request.metadata_field:
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GetModelMetadataRequest must specify at least one metadata_field",
            )
        for field in request.metadata_field:
            if field != SIGNATURE_DEF:
                raise Abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported"
                )
        model = self._model(request)
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=self._response_spec(model, None)
        )
        response.metadata[SIGNATURE_DEF].Pack(self._signature_map(model))
        return response, model.version

    def _signature_map(self, model: LoadedVersion) -> get_model_metadata_pb2.SignatureDefMap:
        """The SavedModel's SignatureDefMap (every signature, as TF Serving lists them)."""
        key = (model.version, model.path)
        if key not in self._signature_maps:
            self._signature_maps = {
                k: v for k, v in self._signature_maps.items() if k[0] in self.store.versions
            }
            self._signature_maps[key] = json_format.ParseDict(
                {"signature_def": model.signature_def.get("signature_def", {})},
                get_model_metadata_pb2.SignatureDefMap(),
            )
        return self._signature_maps[key]

    def _status(self, request: get_model_status_pb2.GetModelStatusRequest):
        if not request.HasField("model_spec"):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        entries = self.store.status() if spec.name == self.model_name else []
        if spec.HasField("version"):
            entries = [e for e in entries if e["version"] == str(spec.version.value)]
            if not entries:
                raise Abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find version {spec.version.value} of model {spec.name}",
                )
        elif not entries:
            raise Abort(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}"
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in entries:
            status = response.model_version_status.add(
                version=int(entry["version"]),
                state=get_model_status_pb2.ModelVersionStatus.State.Value(entry["state"]),
            )
            codes = status.status.DESCRIPTOR.fields_by_name["error_code"].enum_type
            status.status.error_code = codes.values_by_name[entry["status"]["error_code"]].number
            status.status.error_message = entry["status"]["error_message"]
        return response, None


@contextlib.contextmanager
def _model_errors() -> Iterator[None]:
    """Around a model call: TensorFlow fails to build the error message of some bad inputs
    (bytes that are not a tf.Example: UnicodeDecodeError instead of its InvalidArgument)."""
    try:
        yield
    except UnicodeDecodeError:
        raise Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "the model rejected the input: a serialized value could not be parsed "
            "(is every string input that takes tf.Examples a serialized tf.Example?)",
        ) from None


def _now(handler: Callable[[object], tuple]) -> Callable[[object], Awaitable[tuple]]:
    """A handler that answers at once, as a coroutine."""

    async def answer(request):
        return handler(request)

    return answer


def _unimplemented(request):
    raise Abort(
        grpc.StatusCode.UNIMPLEMENTED,
        "not served here: this server serves the versions under one base path and takes its "
        "configuration from PIPELINE_SERVING_* settings",
    )


# ---- the request log ---------------------------------------------------------------------
def _json_values(array: np.ndarray) -> list:
    """A tensor's values as JSON: numbers as numbers (NaN stays NaN), text as strings, other
    bytes (serialized tf.Examples: their tags are not printable) as {"b64": ...}."""

    def value(v):
        if isinstance(v, list):
            return [value(x) for x in v]
        if isinstance(v, bytes):
            try:
                text = v.decode("utf-8")
                if text.isprintable():
                    return text
            except UnicodeDecodeError:
                pass
            return {"b64": base64.b64encode(v).decode("ascii")}
        return v

    return [value(v) for v in array.tolist()] if array.dtype == object else array.tolist()


def _predict_record(request, response) -> tuple[dict, Optional[dict]]:
    body = {"inputs": {k: _json_values(tf.make_ndarray(v)) for k, v in request.inputs.items()}}
    if response is None:
        return body, None
    return body, {
        "outputs": {k: _json_values(tf.make_ndarray(v)) for k, v in response.outputs.items()}
    }


def _examples(request) -> dict:
    return {
        "instances": [
            {"b64": base64.b64encode(e).decode("ascii")} for e in serialized_examples(request.input)
        ]
    }


def _classify_record(request, response) -> tuple[dict, Optional[dict]]:
    if response is None:
        return _examples(request), None
    results = [[[c.label, c.score] for c in r.classes] for r in response.result.classifications]
    return _examples(request), {"results": results}


def _regress_record(request, response) -> tuple[dict, Optional[dict]]:
    if response is None:
        return _examples(request), None
    return _examples(request), {"results": [r.value for r in response.result.regressions]}


_LOGGED = {"Predict": _predict_record, "Classify": _classify_record, "Regress": _regress_record}


# ---- tensors and examples --------------------------------------------------------------
def columns_from_tensors(signature, inputs) -> dict[str, list]:
    """A PredictRequest's TensorProtos as the Batcher's columns (one list per input), checked
    against the signature as TF Serving checks them: the same set of inputs, each of the
    input's dtype, one value per example ([n]) and the same n for all."""
    expected, given = set(signature.inputs), set(inputs)
    if given != expected:
        raise Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(given)}!={len(expected)} "
            f"len({{{','.join(sorted(given))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(given - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - given))}}}.",
        )
    columns, rows = {}, None
    for key in sorted(inputs):
        proto, dtype = inputs[key], signature.inputs[key]
        if proto.dtype != dtype.as_datatype_enum:
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{key}' expects a tensor of {_dtype_name(dtype.as_datatype_enum)}, "
                f"got {_dtype_name(proto.dtype)}",
            )
        values = _plain_values(proto)
        if values is not None:  # the common case, read straight from the proto's repeated field
            if rows is not None and len(values) != rows:
                raise Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{key}' has {len(values)} values, the other inputs {rows}",
                )
            rows = len(values)
            columns[key] = values
            continue
        try:
            array = tf.make_ndarray(proto)
        except Exception:  # noqa: BLE001 (any undecodable tensor is the client's)
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {key}") from None
        if array.ndim != 1:
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{key}' must have shape [n] (one value per example), got "
                f"{list(array.shape)}",
            )
        if rows is not None and len(array) != rows:
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{key}' has {len(array)} values, the other inputs {rows}",
            )
        rows = len(array)
        columns[key] = array.tolist()
    if not rows:
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "the inputs hold no values: send n >= 1")
    return columns


# dtype -> the TensorProto field that holds its values one per element.
_VALUE_FIELDS = {
    types_pb2.DT_STRING: "string_val",
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_INT32: "int_val",
}
_PACKED = {
    types_pb2.DT_FLOAT: np.dtype("<f4"),
    types_pb2.DT_DOUBLE: np.dtype("<f8"),
    types_pb2.DT_INT64: np.dtype("<i8"),
    types_pb2.DT_INT32: np.dtype("<i4"),
}


def _plain_values(proto) -> Optional[list]:
    """A [n] tensor's values as a list, read straight from the proto when it holds them one
    per element or packed in tensor_content; None for anything else (a value repeated to fill
    the shape, another rank or dtype), which tf.make_ndarray reads. make_ndarray and tolist
    cost ~13 us a tensor: 0.2 ms for a one-row call of 15 inputs."""
    field = _VALUE_FIELDS.get(proto.dtype)
    shape = proto.tensor_shape
    if field is None or shape.unknown_rank or len(shape.dim) != 1:
        return None
    if proto.tensor_content:  # numbers packed as bytes (tf.make_tensor_proto's way)
        dtype = _PACKED.get(proto.dtype)
        content = proto.tensor_content
        if dtype is None or len(content) != shape.dim[0].size * dtype.itemsize:
            return None
        return np.frombuffer(content, dtype).tolist()
    values = getattr(proto, field)
    if shape.dim[0].size != len(values) or not values:
        return None
    return list(values)


# numpy dtype -> TensorProto dtype, for the numbers tensor_proto writes itself.
_NUMERIC = {
    np.dtype("float32"): types_pb2.DT_FLOAT,
    np.dtype("float64"): types_pb2.DT_DOUBLE,
    np.dtype("int64"): types_pb2.DT_INT64,
    np.dtype("int32"): types_pb2.DT_INT32,
}


def tensor_proto(array: np.ndarray, proto: tensor_pb2.TensorProto) -> None:
    """Fills `proto` with `array` exactly as tf.make_tensor_proto(array) writes it (more than
    one number: packed in tensor_content; one: in its repeated field; text: string_val), for
    the dtypes models answer with; any other dtype through make_tensor_proto. make_tensor_proto
    spends its time on checks a model's own numpy output does not need (one [1, 1] output into
    a response: 20.7 us, here 5.1 us)."""
    dtype = _NUMERIC.get(array.dtype)
    if dtype is None and array.dtype != object:
        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = dtype or types_pb2.DT_STRING
    proto.tensor_shape.SetInParent()  # a scalar's empty shape is set too
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add(size=size)
    if dtype is None:
        proto.string_val.extend([compat.as_bytes(value) for value in array.ravel()])
    elif array.size > 1:
        proto.tensor_content = array.tobytes()
    else:
        getattr(proto, _VALUE_FIELDS[dtype]).extend(array.ravel().tolist())


def serialized_examples(input_proto) -> list[bytes]:
    """An Input's tf.Examples, serialized (none: Classify/Regress answer "Input is empty."
    after checking the signature, as TF Serving does); with a context, merged into each as
    TF Serving merges it."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        listed = input_proto.example_list_with_context
        return classify_regress.with_context(
            listed.context.SerializeToString() if listed.HasField("context") else None,
            [e.SerializeToString() for e in listed.examples],
        )
    return []


def _output_filter(wanted: list[str], outputs: list[str]) -> list[str]:
    seen = set()
    for alias in wanted:
        if alias not in outputs:
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(outputs))}}}.",
            )
        if alias in seen:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return wanted or list(outputs)


def _model_name(request) -> Optional[str]:
    """The model a request names (requests without a model spec name none)."""
    if "model_spec" in request.DESCRIPTOR.fields_by_name and request.HasField("model_spec"):
        return request.model_spec.name
    return None


def _dtype_name(value: int) -> str:
    try:
        return types_pb2.DataType.Name(value)
    except ValueError:
        return f"unknown dtype {value}"


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _metadata(context: grpc.ServicerContext, key: str) -> Optional[str]:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def model_error_message(message: str) -> str:
    """A TensorFlow error's message without its graph trace, node names or file paths
    (model_errors.readable, as REST answers): what went wrong with the input."""
    text = model_errors.readable(message)
    return f"the model rejected the input: {text}" if text else "the model rejected the input"


# ---- the server --------------------------------------------------------------------------
async def start(
    services: Services, host: str, port: int, max_message_bytes: int, shared: bool = False
) -> grpc.aio.Server:
    """A started grpc.aio server on the running event loop; `shared`: the port is shared with
    the other workers (serving/workers.py checked it was free)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            # Alone, a port in use is an error, not a shared port.
            ("grpc.so_reuseport", int(shared)),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(services, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(services, server)
    address = f"{address_host(host)}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise BindError(
            f"cannot listen for gRPC on {address} (in use?): set another "
            "PIPELINE_SERVING_GRPC_PORT, or 0 for no gRPC"
        )
    await server.start()
    return server


def address_host(host: str) -> str:
    """`host` as a gRPC address's host: IPv6 in brackets; every interface for an empty host."""
    if not host:
        return "[::]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
