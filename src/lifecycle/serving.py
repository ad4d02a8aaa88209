"""A model loaded for answering: prepared inputs in, post-processed predictions and input embeddings out; decoded
inputs in, their monitoring descriptors out.
The BentoML service, batch inference (`lifecycle predict`) and the promotion's serving check all go through
this class, so what is checked is what is served."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from lifecycle.devices import autocast, resolve_device, resolve_precision, to_device
from lifecycle.models import load_model
from lifecycle.registry import StoredModel
from lifecycle.tasks import Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    prediction: dict[str, Any]  # the task's JSON answer for one input
    embedding: list[float]  # a low-dimensional view of the model's features of that input, for drift monitoring
    descriptors: dict[str, float] | None = None  # the input's own monitored numbers (the service's batches)


class Predictor:
    def __init__(self, task: Task, model: torch.nn.Module, device: torch.device, tag: str) -> None:
        self.task = task
        self.model = model.eval()
        self.device = device
        self.tag = tag
        self.embedding_dims = task.cfg.serve.embedding_dims  # as trained: the model's drift reference uses it
        self.precision = resolve_precision(task.cfg.train.precision, device)
        self._projections: dict[int, torch.Tensor] = {}

    @classmethod
    def from_file(cls, model_file: Path, tag: str, device: str = "auto") -> Predictor:
        resolved = resolve_device(device)
        task, model, _ = load_model(model_file, resolved)
        return cls(task, model, resolved, tag)

    @classmethod
    def from_store(cls, stored: StoredModel, device: str = "auto") -> Predictor:
        return cls.from_file(stored.model_file, stored.tag, device)

    @torch.no_grad()
    def infer(self, prepared: Sequence[Any]) -> list[Answer]:
        """Answers for a batch of prepared inputs (`Codec.prepare` of decoded inputs), without descriptors."""
        batch = to_device(self.task.codec.batch_inputs(prepared), self.device)
        with autocast(self.device, self.precision):
            outputs, features = self.task.network.forward(self.model, batch)
        embeddings = self._project(features.float().flatten(1).cpu())
        predictions = self.task.outputs.predict(outputs)
        return [Answer(p, e) for p, e in zip(predictions, embeddings.tolist(), strict=True)]

    def describe(self, decoded: Sequence[Any]) -> list[dict[str, float] | None]:
        """The monitoring descriptors of a batch of decoded inputs, described together; None for an input they
        cannot be computed for (it is answered all the same: monitoring never fails an answer)."""
        try:
            return list(self.task.monitoring.descriptors(decoded))
        except Exception:  # noqa: BLE001 - see the docstring
            if len(decoded) > 1:  # the other inputs of the batch are described without the one that fails
                return [d for x in decoded for d in self.describe([x])]
            logger.exception("could not describe an input of %s for monitoring", self.tag)
            return [None]

    def predict(self, raw_inputs: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        """Predictions for decoded inputs (as `Codec.decode` returns them), one batch."""
        return [a.prediction for a in self.infer([self.task.codec.prepare(x) for x in raw_inputs])]

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        """A fixed random orthonormal projection (Johnson-Lindenstrauss) to `embedding_dims`: the same matrix in
        every process, so served embeddings and the training reference are comparable."""
        dims = features.shape[1]
        if dims <= self.embedding_dims:
            return features
        if dims not in self._projections:
            gaussian = torch.randn(dims, self.embedding_dims, generator=torch.Generator().manual_seed(dims))
            self._projections[dims] = torch.linalg.qr(gaussian).Q
        return features @ self._projections[dims]


class Overloaded(Exception):
    """More requests are waiting than can be answered within the latency bound; try again after `retry_after` s."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Waiting:
    prepared: Any
    decoded: Any
    answer: asyncio.Future[tuple[Answer, int]]


class MicroBatcher:
    """Concurrent requests of one event loop merged into one `Predictor.infer` call (adaptive batching): while a
    batch runs, the requests that arrive queue, and the next batch takes all of them, up to `max_batch_size`. So a
    lone request waits for nothing and a busy service makes big batches. The model runs in one thread of its own,
    the batch's monitoring descriptors in another beside it; the event loop keeps accepting meanwhile. A request that
    would queue longer than `max_latency_ms` behind the batches already waiting (from the measured batch time) is
    refused with `Overloaded` at once."""

    def __init__(self, predictor: Predictor, max_batch_size: int, max_latency_ms: int) -> None:
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000
        self._queue: deque[_Waiting] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._threads: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None  # the model's, the descriptors'
        self._batch_s = 0.0  # a moving average of the time one batch takes
        self._retired = False
        self.running = 0  # inputs in the batch being run

    def expected_wait_s(self) -> float:
        """How long a request arriving now queues behind the full batches already waiting. The rest of the running
        batch and its own batch come on top, so an admitted request is answered within `max_latency_ms` plus two
        batch times: a slow model alone never turns requests away, only a queue that grows beyond capacity."""
        return (len(self._queue) // self.max_batch_size) * self._batch_s

    def pending(self) -> int:
        return len(self._queue) + self.running

    async def infer(self, prepared: Any, decoded: Any) -> tuple[Answer, int]:
        """The answer to one prepared input (with the descriptors of its `decoded` form) and the size of the batch
        it was answered in."""
        if self._worker is None or self._worker.done():
            self._start()
        wait = self.expected_wait_s()
        if wait > self.max_latency_s:
            raise Overloaded(
                f"{self.pending()} requests are waiting for the model (about {wait * 1000:.0f} ms, over the "
                f"{self.max_latency_s * 1000:.0f} ms bound)",
                max(1, math.ceil(wait)),
            )
        waiting = _Waiting(prepared, decoded, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        assert self._arrived is not None
        self._arrived.set()
        return await waiting.answer

    def _start(self) -> None:
        if self._threads is None:
            tag = self.predictor.tag
            self._threads = (
                ThreadPoolExecutor(1, thread_name_prefix=f"infer-{tag}"),
                ThreadPoolExecutor(1, thread_name_prefix=f"describe-{tag}"),
            )
        self._arrived = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.predictor.tag}")

    async def _run(self) -> None:
        assert self._arrived is not None
        while True:
            if not self._queue:
                if self._retired:  # its threads end; a request that took this model before the swap starts anew
                    self._stop_threads()
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(self.max_batch_size, len(self._queue)))]
            batch = [w for w in batch if not w.answer.done()]  # a client that went away cancels its wait
            self.running = len(batch)
            try:
                await self._answer(batch)
            finally:
                self.running = 0

    async def _answer(self, batch: list[_Waiting], described: list[dict[str, float] | None] | None = None) -> None:
        """Answer a batch; `described` holds its descriptors where they are known already (a failed batch's inputs,
        answered again one by one)."""
        loop = asyncio.get_running_loop()
        assert self._threads is not None
        model_thread, describe_thread = self._threads
        started = time.perf_counter()
        describing: asyncio.Future[list[dict[str, float] | None]]
        if described is None:  # described beside the model (a clip's audio descriptors take a millisecond or more)
            describing = loop.run_in_executor(describe_thread, self.predictor.describe, [w.decoded for w in batch])
        else:
            describing = loop.create_future()
            describing.set_result(described)
        try:
            answers = await loop.run_in_executor(model_thread, self.predictor.infer, [w.prepared for w in batch])
            answers = [replace(a, descriptors=d) for a, d in zip(answers, await describing, strict=True)]
        except Exception as e:  # noqa: BLE001 - delivered to the waiting requests, never lost
            if len(batch) == 1:
                _settle(batch[0].answer, error=e)
                return
            # inference is pure: one input's failure must not fail its batch mates, so each runs again alone
            logger.warning("a batch of %d failed (%s); answering its inputs one by one", len(batch), e)
            for waiting, descriptors in zip(batch, await describing, strict=True):
                await self._answer([waiting], [descriptors])
            return
        took = time.perf_counter() - started
        self._batch_s = took if self._batch_s == 0 else 0.8 * self._batch_s + 0.2 * took
        for waiting, answer in zip(batch, answers, strict=True):
            _settle(waiting.answer, (answer, len(batch)))

    def retire(self) -> None:
        """Stop once the queue is empty, and end its threads: a swapped-out model answers every request it accepted,
        then holds no thread."""
        self._retired = True
        if self._arrived is not None:
            self._arrived.set()

    def _stop_threads(self) -> None:
        if self._threads is not None:
            for executor in self._threads:
                executor.shutdown(wait=False)
            self._threads = None


def _settle(
    future: asyncio.Future[tuple[Answer, int]], result: tuple[Answer, int] | None = None, error: Exception | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    elif result is not None:
        future.set_result(result)
