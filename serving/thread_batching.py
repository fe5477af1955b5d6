"""Micro-batching of requests that arrive on threads (the gRPC server's), without an event loop:
a leader and its followers.

A request that finds its (version, signature) idle becomes the leader and calls the model in
its own thread at once: a lone client pays no hand-off and no wait. Requests that arrive while
a call runs wait; when the call ends, the first of them becomes the next leader and takes
itself and everyone waiting (up to the batch size) into one call, so batches grow with the
load, as on the event loop (serving/batching.py). A follower costs one wake-up: handing each
gRPC call to the event loop's queue and back cost two thread switches and two loop turns, and
the calls reached the queue too spread out to merge (8 rows a call under 32 clients, against
31 over REST).
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Optional

Answer = Any  # a request's outputs, or the exception it fails with


class _Waiting:
    __slots__ = ("request", "rows", "done", "answer", "leads")

    def __init__(self, request: Any, rows: int):
        self.request, self.rows = request, rows
        self.done: Optional[threading.Event] = None  # set once answered or made leader
        self.answer: Answer = None
        self.leads = False


class ThreadBatches:
    """The requests of one (version, signature) arriving on threads. `call` answers a batch:
    one answer (outputs or an exception) per request, in order."""

    def __init__(self, max_rows: int, call: Callable[[list], list[Answer]]):
        self.max_rows = max_rows
        self._call = call
        self._lock = threading.Lock()
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._busy = False

    @property
    def busy(self) -> bool:
        return self._busy

    def answer(self, request: Any, rows: int) -> Answer:
        """The request's answer, once a call (this thread's or a leader's) has made it."""
        me = _Waiting(request, rows)
        with self._lock:
            if self._busy:
                me.done = threading.Event()
                self._waiting.append(me)
            else:
                self._busy = True
                me.leads = True
        if not me.leads:
            me.done.wait()
            if not me.leads:
                return me.answer
        return self._lead(me)

    def _lead(self, me: _Waiting) -> Answer:
        batch, total = [me], me.rows
        with self._lock:
            while self._waiting and total + self._waiting[0].rows <= self.max_rows:
                follower = self._waiting.popleft()
                batch.append(follower)
                total += follower.rows
        try:
            answers = self._call([w.request for w in batch])
        except BaseException as error:  # noqa: BLE001 (every waiting thread gets an answer)
            answers = [error] * len(batch)
        finally:
            with self._lock:  # the next leader, or idle
                if self._waiting:
                    successor = self._waiting.popleft()
                    successor.leads = True
                    successor.done.set()
                else:
                    self._busy = False
        for follower, answer in zip(batch[1:], answers[1:]):
            follower.answer = answer
            follower.done.set()
        return answers[0]
