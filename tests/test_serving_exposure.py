"""Safe exposure (serving/auth.py): a server on a non-loopback host needs a bearer token or
the explicit insecure flag, and with a token both protocols reject calls without it. The
rules are unit-tested; the guarded server is a real process called over HTTP and gRPC."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from pipeline.settings_model import SettingsError
from serving import auth, process
from serving.settings import ServingSettings
from tests import tiny_model

TOKEN = "s3cret-token-0123456789abcdef"


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.1.2.3", False),
        ("server.example.com", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert auth.is_loopback(host) is loopback


def _settings(**values) -> ServingSettings:
    return ServingSettings.load({}, **values)


def test_exposure_rules(tmp_path, caplog):
    caplog.set_level("INFO", logger="serving")
    assert auth.check_exposure(_settings()) is None  # loopback: no token needed
    assert auth.check_exposure(_settings(host="0.0.0.0", auth_token=TOKEN)) == TOKEN
    assert auth.check_exposure(_settings(host="0.0.0.0", allow_insecure=True)) is None
    assert "WITHOUT authentication" in caplog.text
    with pytest.raises(SettingsError, match="refusing to listen on 0.0.0.0") as refused:
        auth.check_exposure(_settings(host="0.0.0.0"))
    for remedy in ("PIPELINE_SERVING_AUTH_TOKEN", "PIPELINE_SERVING_ALLOW_INSECURE=1"):
        assert remedy in str(refused.value)

    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")  # a mounted secret ends with a newline
    assert auth.token(_settings(auth_token_file=str(token_file))) == TOKEN
    with pytest.raises(SettingsError, match="PIPELINE_SERVING_AUTH_TOKEN_FILE: cannot read"):
        auth.token(_settings(auth_token_file=str(tmp_path / "missing")))
    with pytest.raises(SettingsError, match="not both"):
        auth.token(_settings(auth_token=TOKEN, auth_token_file=str(token_file)))
    with pytest.raises(SettingsError, match="at least 16 printable ASCII"):
        auth.token(_settings(auth_token="short"))
    with pytest.raises(SettingsError, match="without spaces"):
        auth.token(_settings(auth_token="a token with spaces in it"))


def test_authorization_header():
    assert auth.authorized(f"Bearer {TOKEN}", TOKEN)
    assert auth.authorized(f"bearer {TOKEN}", TOKEN)  # the scheme is case-insensitive
    for header in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "):
        assert not auth.authorized(header, TOKEN)


@pytest.mark.integration
def test_an_open_host_without_a_token_is_refused_at_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "--host", "0.0.0.0"]
        + ["--port", str(process.free_port()), "--grpc-port", str(process.free_port())],
        env=tiny_model.server_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: refusing to listen on 0.0.0.0")
    assert "PIPELINE_SERVING_AUTH_TOKEN" in message
    assert "PIPELINE_SERVING_ALLOW_INSECURE=1" in message


def _predict(stub, metadata=None) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = tiny_model.NAME
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.5], dtype=tf.float32))
    return stub.Predict(request, metadata=metadata, timeout=30)


@pytest.mark.integration
def test_with_a_token_both_protocols_need_it(tmp_path):
    tiny_model.write(tmp_path, 1)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    env = tiny_model.server_env(
        tmp_path,
        PIPELINE_SERVING_HOST="0.0.0.0",
        PIPELINE_SERVING_AUTH_TOKEN_FILE=str(token_file),
    )
    log = tmp_path / "server.log"
    with process.running_server(env, str(log)) as url:
        assert "listening on 0.0.0.0: every request needs the bearer token" in log.read_text()
        predict_url = f"{url}/v1/models/{tiny_model.NAME}:predict"
        body = {"instances": [2.5]}
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"X": TOKEN}):
            status, answer, response_headers = process.call(predict_url, body, headers=headers)
            assert status == 401
            assert answer == {
                "error": "missing or wrong bearer token: send 'Authorization: Bearer <token>'"
            }
            assert response_headers["WWW-Authenticate"] == "Bearer"
        good = {"Authorization": f"Bearer {TOKEN}"}
        status, answer, _ = process.call(predict_url, body, headers=good)
        assert (status, answer) == (200, {"predictions": [{"y": 5.0, "x_is_missing": 0}]})
        # Metrics need the token (they describe the traffic), the health probe does not.
        assert process.call(f"{url}/monitoring/prometheus/metrics")[0] == 401
        metrics_url = f"{url}/monitoring/prometheus/metrics"
        request = urllib.request.Request(metrics_url, headers=good)
        with urllib.request.urlopen(request, timeout=30) as page:
            assert 'status="UNAUTHENTICATED"' in page.read().decode()
        assert process.call(f"{url}/healthz")[0] == 200

        with grpc.insecure_channel(url.grpc) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for metadata in (None, [("authorization", "Bearer not-the-token-0123")]):
                with pytest.raises(grpc.RpcError) as raised:
                    _predict(stub, metadata)
                assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "bearer token" in raised.value.details()
            answer = _predict(stub, [("authorization", f"Bearer {TOKEN}")])
            assert tf.make_ndarray(answer.outputs["y"]).tolist() == [5.0]


@pytest.mark.integration
def test_the_insecure_flag_serves_without_a_token_and_says_so(tmp_path):
    tiny_model.write(tmp_path, 1)
    env = tiny_model.server_env(
        tmp_path, PIPELINE_SERVING_HOST="0.0.0.0", PIPELINE_SERVING_ALLOW_INSECURE="1"
    )
    log = tmp_path / "server.log"
    with process.running_server(env, str(log)) as url:
        assert "listening on 0.0.0.0 WITHOUT authentication" in log.read_text()
        status, answer, _ = process.call(
            f"{url}/v1/models/{tiny_model.NAME}:predict", {"instances": [1.0]}
        )
        assert (status, answer["predictions"][0]["y"]) == (200, 2.0)
        with grpc.insecure_channel(url.grpc) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert tf.make_ndarray(_predict(stub).outputs["y"]).tolist() == [5.0]
