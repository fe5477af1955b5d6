"""Micro-batching (serving/batching.py) with a real SavedModel signature: a lone request is
one model call, concurrent requests share calls and each gets its own rows back, and a
failing call fails every request it carried."""

import asyncio
import threading
import types

import pytest
import tensorflow as tf

from serving.batching import Batcher
from serving.tensors import Signature


class _Doubler(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        tf.debugging.assert_non_negative(x, message="x must not be negative")
        return {"y": x * 2.0}


@pytest.fixture(scope="module")
def signature(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("doubler"))
    module = _Doubler()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    loaded = tf.saved_model.load(path)
    signature = Signature("serving_default", loaded.signatures["serving_default"])
    signature.loaded = loaded  # keeps the variables alive
    return signature


MODEL = types.SimpleNamespace(version=1)


def test_lone_requests_are_one_call_each_and_concurrent_ones_share_calls(signature):
    batcher = Batcher(max_batch_size=256, max_wait_seconds=0.002)

    async def scenario():
        lone = [await batcher.predict(MODEL, signature, {"x": [1.5]}) for _ in range(3)]
        calls_alone = batcher.calls
        together = await asyncio.gather(
            *(batcher.predict(MODEL, signature, {"x": [float(i), i + 0.25]}) for i in range(50))
        )
        await batcher.close()
        return lone, calls_alone, together

    lone, calls_alone, together = asyncio.run(scenario())
    assert calls_alone == 3 and all(answer["y"].tolist() == [3.0] for answer in lone)
    for i, answer in enumerate(together):
        assert answer["y"].tolist() == [2.0 * i, 2.0 * i + 0.5]
    # 50 concurrent requests: the first finds the model idle, the rest queue behind it and
    # go in one merged call (at most 256 rows).
    assert batcher.calls - calls_alone <= 3
    assert batcher.rows == 3 + 100


class _ThreadRecordingSignature(Signature):
    """The real signature, noting which thread called the model."""

    def __init__(self, signature: Signature):
        super().__init__(signature.name, signature.function)
        self.threads: list[str] = []

    def __call__(self, columns):
        self.threads.append(threading.current_thread().name)
        return super().__call__(columns)


def test_a_lone_request_is_called_on_the_event_loop_and_a_merged_batch_in_a_thread(signature):
    recording = _ThreadRecordingSignature(signature)
    batcher = Batcher(max_batch_size=256, max_wait_seconds=0.002)

    async def scenario():
        lone = await batcher.predict(MODEL, recording, {"x": [4.0]})
        loop_thread = threading.current_thread().name
        await asyncio.gather(
            *(batcher.predict(MODEL, recording, {"x": [float(i)]}) for i in range(20))
        )
        await batcher.close()
        return lone, loop_thread

    lone, loop_thread = asyncio.run(scenario())
    assert lone["y"].tolist() == [8.0]
    # The hand-off to a thread and back costs more than a one-row call; under load the loop
    # must stay free, so merged batches run in the batcher's threads.
    assert recording.threads[0] == loop_thread
    assert any(name.startswith("model") for name in recording.threads[1:])


def test_a_failing_call_fails_every_request_it_carried(signature):
    batcher = Batcher(max_batch_size=256, max_wait_seconds=0.002)

    async def scenario():
        first = asyncio.ensure_future(batcher.predict(MODEL, signature, {"x": [1.0]}))
        await asyncio.sleep(0)  # the first one takes the model; the next two queue
        rest = [batcher.predict(MODEL, signature, {"x": [value]}) for value in (2.0, -1.0)]
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await batcher.close()
        return results

    first, good, bad = asyncio.run(scenario())
    assert first["y"].tolist() == [2.0]
    # 2.0 and -1.0 went in one call, which the negative value failed.
    assert isinstance(good, tf.errors.InvalidArgumentError)
    assert isinstance(bad, tf.errors.InvalidArgumentError)
    assert "x must not be negative" in str(bad)
