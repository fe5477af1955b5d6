"""Micro-batching: concurrent requests for the same model version and signature are merged
into one model call.

One worker per (version, signature) takes the waiting requests (up to `max_batch_size` rows),
calls the model in a thread (TensorFlow releases the GIL, so the event loop keeps accepting
requests meanwhile; a lone request with nobody waiting is called on the loop itself, which
skips the hand-off), and splits the outputs back. While a call runs, new requests queue up
and form the next batch, so batches grow with the load. Only under concurrent load (the
previous batch merged several requests) does it also wait for others to join, until `max_wait`
after the batch's first request arrived (TF Serving's batch timeout): a lone client pays no
batching delay.

REST and gRPC requests (both served on the event loop) share the queues, and merge.

Isolation: a request fails only if it would fail alone. Before requests are merged, each is
checked where that is possible without the model (serialized tf.Examples against the spec the
signature parses them with, serving/example_check.py): one that certainly fails is answered on
its own and never joins the batch. If a merged call still fails, the batch is split in halves
and each half called again, down to single requests, so that only the requests that fail alone
get the error (serving/model_errors.py turns it into TF Serving's answer).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from typing import Callable, Optional

import numpy as np

from serving import model_errors
from serving.model_store import LoadedVersion
from serving.tensors import Signature, rows


@dataclasses.dataclass
class _Pending:
    columns: dict[str, list]
    rows: int
    future: asyncio.Future
    arrived: float  # loop time when it was queued: its batch's wait counts from the first's


class Batcher:
    def __init__(self, max_batch_size: int, max_wait_seconds: float, threads: int = 2):
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_seconds
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, "model")
        self._queues: dict[tuple[int, str], asyncio.Queue] = {}
        self._workers: dict[tuple[int, str], asyncio.Task] = {}
        self.calls = 0  # model calls made, for the benchmark and tests
        self.rows = 0
        self.isolations = 0  # merged calls that failed and were split
        # Called with (signature name, rows) for each model call: the batch-size metric.
        self.on_call: Optional[Callable[[str, int], None]] = None

    async def predict(
        self, model: LoadedVersion, signature: Signature, columns: dict[str, list]
    ) -> dict[str, np.ndarray]:
        """The request's outputs (on the event loop)."""
        n = rows(columns)
        if n >= self.max_batch_size or self.max_batch_size == 1:  # already a full batch
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            await self._run(signature, [_Pending(columns, n, future, loop.time())], on_loop=False)
            return await future
        key = (model.version, signature.name)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._workers[key] = asyncio.create_task(self._work(queue, signature))
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        await queue.put(_Pending(columns, n, future, loop.time()))
        return await future

    async def _work(self, queue: asyncio.Queue, signature: Signature) -> None:
        carry: Optional[_Pending] = None
        concurrent_load = False
        while True:
            batch = [carry or await queue.get()]
            carry = None
            total = batch[0].rows
            wait = self.max_wait if concurrent_load else 0.0
            # As TF Serving's batch_timeout_micros: from the arrival of the batch's first
            # request, so one that already waited through the previous call is not held again.
            deadline = batch[0].arrived + wait
            while total < self.max_batch_size:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if total + item.rows > self.max_batch_size:
                    carry = item  # starts the next batch
                    break
                batch.append(item)
                total += item.rows
            concurrent_load = len(batch) > 1 or carry is not None or not queue.empty()
            # A lone request with nobody waiting is called on the event loop itself: handing
            # it to a thread and back costs ~0.2 ms, a third of the model call. Under load the
            # loop stays free to take requests while the model runs.
            await self._run(signature, batch, on_loop=not concurrent_load)

    async def _run(self, signature: Signature, batch: list[_Pending], on_loop: bool) -> None:
        """Calls the model for the batch (on the loop, or in a model thread) and answers each
        request with its rows or its own error."""
        if on_loop:
            answers = self._answers(signature, batch)
        else:
            loop = asyncio.get_running_loop()
            answers = await loop.run_in_executor(self._executor, self._answers, signature, batch)
        for item, answer in zip(batch, answers):
            if item.future.done():  # the client went away
                continue
            if isinstance(answer, BaseException):
                item.future.set_exception(answer)
            else:
                item.future.set_result(answer)

    def _answers(self, signature: Signature, batch: list[_Pending]) -> list:
        """Each request's outputs or error (synchronous: runs in a model thread, or on the
        loop for a lone request)."""
        answers: list = [None] * len(batch)
        merged = list(range(len(batch)))
        if len(batch) > 1 and signature.example_specs:
            merged = []
            for i, item in enumerate(batch):
                problem = signature.problem(item.columns)
                if problem is None:
                    merged.append(i)
                elif problem.certain:
                    answers[i] = model_errors.request_error(
                        ValueError(problem.message), signature.name, problem.message
                    )
                else:  # called alone: its error, if any, stays its own
                    answers[i] = self._isolated(signature, [item])[0]
        for i, answer in zip(merged, self._isolated(signature, [batch[i] for i in merged])):
            answers[i] = answer
        return answers

    def _isolated(self, signature: Signature, batch: list[_Pending]) -> list:
        """One model call for the batch; if it fails, each half again, down to the single
        requests that fail alone (about 2 log2(n) calls for one bad request among n)."""
        if not batch:
            return []
        columns = (
            batch[0].columns
            if len(batch) == 1
            else {key: [v for item in batch for v in item.columns[key]] for key in batch[0].columns}
        )
        self.calls += 1
        self.rows += rows(columns)
        if self.on_call is not None:
            self.on_call(signature.name, rows(columns))
        try:
            outputs = signature(columns)
        except Exception as error:  # noqa: BLE001 (isolated below, answered per request)
            if len(batch) == 1:
                problem = signature.problem(batch[0].columns) if signature.example_specs else None
                explanation = problem.message if problem else ""
                return [model_errors.request_error(error, signature.name, explanation)]
            self.isolations += 1
            half = len(batch) // 2
            return self._isolated(signature, batch[:half]) + self._isolated(signature, batch[half:])
        answers, start = [], 0
        for item in batch:
            answers.append({k: value[start : start + item.rows] for k, value in outputs.items()})
            start += item.rows
        return answers

    def forget(self, versions: set[int]) -> None:
        """Stops the workers of versions no longer loaded."""
        for key in [k for k in self._workers if k[0] not in versions]:
            if self._queues[key].empty():
                self._workers.pop(key).cancel()
                self._queues.pop(key)

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
