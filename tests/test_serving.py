import asyncio
import json
import threading
import time
from typing import Any

import pytest
import torch

from conftest import make_task
from lifecycle.serving import Answer, MicroBatcher, Overloaded, Predictor
from lifecycle.stages.train import train


def test_predictor_answers_with_fixed_low_dimensional_embeddings(prepared, tiny_params):
    from lifecycle.data import rows_of_split

    tiny_params["classify"]["serve"] = {"embedding_dims": 5}
    train(make_task(tiny_params), prepared)
    first = Predictor.from_file(prepared.model, "local:1", "cpu")
    second = Predictor.from_file(prepared.model, "local:1", "cpu")
    rows = rows_of_split(prepared.split_manifest, "test")[:6]
    raw = [first.task.codec.load_input(prepared.raw / row["path"]) for row in rows]
    answers = first.infer([first.task.codec.prepare(x) for x in raw])
    again = second.infer([second.task.codec.prepare(x) for x in raw[:1]])
    assert [len(a.embedding) for a in answers] == [5] * 6
    assert again[0].embedding == pytest.approx(answers[0].embedding, abs=1e-4), "same projection in every process"
    assert [a.prediction for a in answers] == first.predict(raw)
    json.dumps([a.prediction for a in answers])
    described = first.describe([raw[0], torch.zeros(7), raw[1]])  # a 1-D input is no image: not described
    monitoring = first.task.monitoring
    assert described == [*monitoring.descriptors(raw[:1]), None, *monitoring.descriptors(raw[1:2])]


class SlowModel:
    """Stands in for a Predictor whose every call takes `seconds`, whatever the batch."""

    def __init__(self, seconds: float, tag: str = "slow") -> None:
        self.seconds = seconds
        self.tag = tag

    def infer(self, prepared: list[Any]) -> list[Answer]:
        time.sleep(self.seconds)
        return [Answer({"input": x}, []) for x in prepared]

    def describe(self, decoded: list[Any]) -> list[dict[str, float] | None]:
        return [{"size": float(len(str(x)))} for x in decoded]


def test_a_slow_model_is_waited_for_and_only_a_queue_beyond_capacity_is_refused():
    async def scenario() -> tuple[list[Any], list[Any], float]:
        batcher = MicroBatcher(SlowModel(0.2), max_batch_size=4, max_latency_ms=100)  # a batch: twice the bound
        await batcher.infer("first", "first")  # the batcher measures its batch time
        started = time.perf_counter()
        within_a_batch = await asyncio.gather(*(batcher.infer(i, str(i)) for i in range(4)), return_exceptions=True)
        took = time.perf_counter() - started
        beyond = await asyncio.gather(*(batcher.infer(i, str(i)) for i in range(12)), return_exceptions=True)
        return within_a_batch, beyond, took

    within_a_batch, beyond, took = asyncio.run(scenario())
    assert [answer.prediction for answer, _ in within_a_batch] == [{"input": i} for i in range(4)]
    assert [answer.descriptors for answer, _ in within_a_batch] == [{"size": 1.0}] * 4, "described beside the model"
    assert took < 0.1 + 2 * 0.2 + 0.2  # max_latency_ms plus two batch times, and slack for a loaded machine
    refused = [r for r in beyond if isinstance(r, Overloaded)]
    assert len(refused) == 8 and all(r.retry_after >= 1 for r in refused), beyond  # 4 queued: one batch ahead
    assert [answer.prediction for answer, _ in beyond[:4]] == [{"input": i} for i in range(4)]


def test_a_retired_batcher_answers_what_it_holds_then_ends_its_threads():
    def threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith(("infer-retiring", "describe-retiring"))]

    async def threads_ended() -> bool:
        for _ in range(100):
            if not threads():
                return True
            await asyncio.sleep(0.02)
        return False

    async def scenario() -> None:
        batcher = MicroBatcher(SlowModel(0.05, "retiring"), max_batch_size=4, max_latency_ms=1000)
        held = [asyncio.ensure_future(batcher.infer(i, str(i))) for i in range(6)]
        await asyncio.sleep(0.01)  # the first batch runs, the rest queue
        assert len(threads()) == 2
        batcher.retire()
        assert [a.prediction for a, _ in await asyncio.gather(*held)] == [{"input": i} for i in range(6)]
        assert await threads_ended(), threads()
        late, _ = await batcher.infer("late", "late")  # took the model just before the swap
        assert late.prediction == {"input": "late"}
        assert await threads_ended(), threads()

    asyncio.run(scenario())


class ModelFailingOn(SlowModel):
    """Fails every batch that holds `poison`; counts the inputs it describes."""

    def __init__(self, poison: Any) -> None:
        super().__init__(0.05, "failing")
        self.poison = poison
        self.described = 0

    def infer(self, prepared: list[Any]) -> list[Answer]:
        if self.poison in prepared:
            raise ValueError(f"cannot answer {self.poison!r}")
        return super().infer(prepared)

    def describe(self, decoded: list[Any]) -> list[dict[str, float] | None]:
        self.described += len(decoded)
        return super().describe(decoded)


def test_an_input_that_fails_its_batch_fails_alone_and_each_input_is_described_once():
    model = ModelFailingOn("bad")

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(model, max_batch_size=4, max_latency_ms=1000)
        return await asyncio.gather(*(batcher.infer(x, x) for x in ("a", "bad", "ccc")), return_exceptions=True)

    first, failed, third = asyncio.run(scenario())
    assert isinstance(failed, ValueError) and "bad" in str(failed)
    assert [first[0].prediction, third[0].prediction] == [{"input": "a"}, {"input": "ccc"}]
    assert [first[0].descriptors, third[0].descriptors] == [{"size": 1.0}, {"size": 3.0}]
    assert model.described == 3, "the batch's descriptors serve the inputs answered again alone"
