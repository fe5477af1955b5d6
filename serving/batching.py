"""Micro-batching: concurrent requests for the same model version and signature are merged
into one model call.

One worker per (version, signature) takes the waiting requests (up to `max_batch_size` rows),
calls the model in a thread (TensorFlow releases the GIL, so the event loop keeps accepting
requests meanwhile; a lone request with nobody waiting is called on the loop itself, which
skips the hand-off), and splits the outputs back. While a call runs, new requests queue up
and form the next batch, so batches grow with the load. Only under concurrent load (the
previous batch merged several requests) does it also wait up to `max_wait` for others to join: a
lone client pays no batching delay.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from typing import Callable, Optional

import numpy as np

from serving.model_store import LoadedVersion
from serving.tensors import Signature, rows


@dataclasses.dataclass
class _Pending:
    columns: dict[str, list]
    rows: int
    future: asyncio.Future


class Batcher:
    def __init__(self, max_batch_size: int, max_wait_seconds: float, threads: int = 2):
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_seconds
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, "model")
        self._queues: dict[tuple[int, str], asyncio.Queue] = {}
        self._workers: dict[tuple[int, str], asyncio.Task] = {}
        self.calls = 0  # model calls made, for the benchmark and tests
        self.rows = 0
        # Called with (signature name, rows) for each model call: the batch-size metric.
        self.on_call: Optional[Callable[[str, int], None]] = None

    async def predict(
        self, model: LoadedVersion, signature: Signature, columns: dict[str, list]
    ) -> dict[str, np.ndarray]:
        n = rows(columns)
        if n >= self.max_batch_size or self.max_batch_size == 1:
            return await self._call(signature, columns)  # already a full batch
        key = (model.version, signature.name)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._workers[key] = asyncio.create_task(self._work(queue, signature))
        future = asyncio.get_running_loop().create_future()
        await queue.put(_Pending(columns, n, future))
        return await future

    async def _call(self, signature: Signature, columns: dict[str, list], on_loop: bool = False):
        self.calls += 1
        self.rows += rows(columns)
        if self.on_call is not None:
            self.on_call(signature.name, rows(columns))
        if on_loop:
            return signature(columns)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, signature, columns)

    async def _work(self, queue: asyncio.Queue, signature: Signature) -> None:
        carry: Optional[_Pending] = None
        concurrent_load = False
        while True:
            batch = [carry or await queue.get()]
            carry = None
            total = batch[0].rows
            wait = self.max_wait if concurrent_load else 0.0
            deadline = asyncio.get_running_loop().time() + wait
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
        merged = {key: [v for item in batch for v in item.columns[key]] for key in batch[0].columns}
        try:
            outputs = await self._call(signature, merged, on_loop)
        except Exception as error:  # noqa: BLE001 (every waiting request gets the error)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        start = 0
        for item in batch:
            part = {key: value[start : start + item.rows] for key, value in outputs.items()}
            start += item.rows
            if not item.future.done():
                item.future.set_result(part)

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
