"""Micro-batching (serving/batching.py) with real SavedModel signatures: a lone request is
one model call, concurrent requests share calls and each gets its own rows back, and a
failing merged call fails only the requests that fail alone (bad tf.Examples are kept out of
merged calls altogether)."""

import asyncio
import threading
import time
import types

import pytest
import tensorflow as tf

from serving.batching import Batcher
from serving.tensors import RequestError, Signature


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


class _SlowSignature(Signature):
    """The real signature, each call taking `seconds` longer and noting when it started."""

    def __init__(self, signature: Signature, seconds: float):
        super().__init__(signature.name, signature.function)
        self.seconds = seconds
        self.calls: list[tuple[float, list]] = []  # (monotonic start, x)

    def __call__(self, columns):
        self.calls.append((time.monotonic(), list(columns["x"])))
        time.sleep(self.seconds)
        return super().__call__(columns)


def test_a_batch_waits_from_its_first_requests_arrival_not_from_the_previous_calls_end(
    signature,
):
    # As TF Serving's batch timeout: a request that arrived during a 1-s call has waited
    # past the 0.5-s batch wait when that call ends, so its batch is called at once, not
    # held another 0.5 s.
    slow = _SlowSignature(signature, seconds=1.0)
    batcher = Batcher(max_batch_size=256, max_wait_seconds=0.5)

    async def late():
        await asyncio.sleep(0.1)  # arrives while the first call runs
        return await batcher.predict(MODEL, slow, {"x": [5.0]})

    async def scenario():
        answers = await asyncio.gather(
            batcher.predict(MODEL, slow, {"x": [1.0]}),
            batcher.predict(MODEL, slow, {"x": [2.0]}),
            late(),
        )
        await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    assert [a["y"].tolist() for a in answers] == [[2.0], [4.0], [10.0]]
    (first_start, first_x), (second_start, second_x) = slow.calls
    assert first_x == [1.0, 2.0] and second_x == [5.0]
    # Called about when the first call ended (start + 1 s), well before the 0.5 s a wait
    # counted from then would add.
    assert second_start - first_start < 1.0 + 0.3, second_start - first_start


def test_a_failing_merged_call_fails_only_the_requests_that_fail_alone(signature):
    batcher = Batcher(max_batch_size=256, max_wait_seconds=0.002)
    values = [2.0, -1.0, 3.0, 4.0, -5.0, 6.0, 7.0]

    async def scenario():
        first = asyncio.ensure_future(batcher.predict(MODEL, signature, {"x": [1.0]}))
        await asyncio.sleep(0)  # the first one takes the model; the others queue
        rest = [batcher.predict(MODEL, signature, {"x": [value]}) for value in values]
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await batcher.close()
        return results

    first, *results = asyncio.run(scenario())
    assert first["y"].tolist() == [2.0]
    for value, result in zip(values, results):
        if value < 0:
            # The model's own error, as TF Serving answers an INVALID_ARGUMENT: 400, without
            # the node names and Python stack TensorFlow puts around it.
            assert isinstance(result, RequestError) and result.status == 400, result
            assert "x must not be negative" in str(result)
            assert "node" not in str(result) and "File" not in str(result)
        else:
            assert result["y"].tolist() == [2.0 * value]
    # The seven went in one call, which failed; it was split down to the two bad ones.
    assert batcher.isolations >= 1


class _Parser(tf.Module):
    """A signature on serialized tf.Examples, as serving_default: a float `x` (fixed length,
    required) and any number of strings `s`."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        spec = {"x": tf.io.FixedLenFeature([], tf.float32), "s": tf.io.VarLenFeature(tf.string)}
        parsed = tf.io.parse_example(examples, spec)
        lengths = tf.strings.length(tf.sparse.to_dense(parsed["s"], ""))
        return {"y": parsed["x"] * 2.0, "s_length": tf.reduce_sum(lengths, axis=1)}


def _example(**features) -> bytes:
    example = tf.train.Example()
    for key, values in features.items():
        feature = example.features.feature[key]
        for value in values:
            if isinstance(value, bytes):
                feature.bytes_list.value.append(value)
            elif isinstance(value, float):
                feature.float_list.value.append(value)
            else:
                feature.int64_list.value.append(value)
    return example.SerializeToString()


@pytest.fixture(scope="module")
def parser(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("parser"))
    module = _Parser()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    loaded = tf.saved_model.load(path)
    signature = Signature("serving_default", loaded.signatures["serving_default"])
    signature.loaded = loaded
    return signature


def test_the_example_spec_is_read_from_the_signature_graph(parser):
    spec = parser.example_specs["examples"]
    assert spec[b"x"].kind == "float_list" and spec[b"x"].size == 1 and spec[b"x"].required
    assert spec[b"s"].kind == "bytes_list" and spec[b"s"].size is None
    good = _example(x=[1.0], s=[b"a", b"b"])
    assert parser.problem({"examples": [good]}) is None
    cases = {
        _example(x=[b"one"]): "feature 'x': data types don't match, expected float values, "
        "got bytes",
        _example(x=[1.0, 2.0]): "feature 'x': 2 float value(s), expected 1",
        _example(s=[b"a"]): "feature 'x' (float) is required but could not be found",
        _example(x=[1.0], s=[3]): "feature 's': data types don't match",
        b"\xff\xfe not a proto": "is not a serialized tf.Example",
    }
    for serialized, message in cases.items():
        problem = parser.problem({"examples": [good, serialized]})
        assert problem is not None and message in problem.message, (message, problem)
        assert problem.message.startswith("input 'examples' row 1: ")


def test_bad_examples_never_join_a_merged_call(parser):
    batcher = Batcher(max_batch_size=256, max_wait_seconds=0.002)
    good = [_example(x=[float(i)]) for i in range(6)]
    bad = _example(x=[b"not a float"])

    async def scenario():
        first = asyncio.ensure_future(batcher.predict(MODEL, parser, {"examples": [good[0]]}))
        await asyncio.sleep(0)
        calls = batcher.calls
        rest = [batcher.predict(MODEL, parser, {"examples": [e]}) for e in [*good[1:3], bad]]
        rest += [batcher.predict(MODEL, parser, {"examples": [e]}) for e in good[3:]]
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await batcher.close()
        return results, batcher.calls - calls

    (first, *results), calls = asyncio.run(scenario())
    assert first["y"].tolist() == [0.0]
    answers = [r["y"].tolist() for r in results[:2] + results[3:]]
    assert answers == [[2.0], [4.0], [6.0], [8.0], [10.0]]
    assert isinstance(results[2], RequestError) and results[2].status == 400
    assert "input 'examples' row 0: feature 'x': data types don't match" in str(results[2])
    # The bad example was answered without a model call: the first request's call, then one
    # merged call for the five good ones.
    assert calls == 2 and batcher.isolations == 0


def test_a_lone_bad_example_gets_the_checks_message(parser):
    batcher = Batcher(max_batch_size=256, max_wait_seconds=0.002)

    async def scenario():
        try:
            return await batcher.predict(MODEL, parser, {"examples": [b"\xff\xfe\x00junk"]})
        except RequestError as error:
            return error
        finally:
            await batcher.close()

    error = asyncio.run(scenario())
    assert isinstance(error, RequestError) and error.status == 400
    assert "input 'examples' row 0: is not a serialized tf.Example" in str(error)
