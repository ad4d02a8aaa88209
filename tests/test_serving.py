import json

import pytest

from conftest import make_task
from lifecycle.serving import Predictor
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
