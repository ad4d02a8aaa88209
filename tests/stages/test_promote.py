import json

import pytest
import yaml

from conftest import make_task
from lifecycle import registry
from lifecycle.atomic import read_jsonl, write_jsonl
from lifecycle.paths import TaskPaths
from lifecycle.stages.evaluate import evaluate
from lifecycle.stages.promote import promote
from lifecycle.stages.train import train
from pages import assert_offline

pytestmark = pytest.mark.slow


@pytest.fixture
def empty_store(tmp_path):
    """No classify model in the session's store during the test; the session's models (other tests' production
    models, whichever test built them first) are put back afterwards."""
    import bentoml

    kept = []
    for n, model in enumerate(registry.versions("classify")):
        kept.append(bentoml.models.export_model(model.tag, str(tmp_path / f"kept-{n}.bentomodel")))
        bentoml.models.delete(model.tag)
    yield
    for model in registry.versions("classify"):
        bentoml.models.delete(model.tag)
    for path in kept:
        bentoml.models.import_model(path)


def trained(paths: TaskPaths, params: dict, **train_overrides) -> dict:
    params["classify"]["train"].update(train_overrides)
    task = make_task(params)
    train(task, paths)
    return evaluate(task, paths)


def test_first_promoted_worse_rejected_better_promoted_then_rollback(prepared, tiny_params, empty_store):
    weak = trained(prepared, tiny_params, epochs=1, lr=1e-5)
    first = promote(make_task(tiny_params), prepared)
    assert first["promoted"] and "first production model" in first["summary"]
    stored = registry.production("classify")
    assert stored.tag == first["stored_as"]
    assert stored.metadata["metrics"]["accuracy"] == pytest.approx(weak["accuracy"])
    assert json.loads(stored.metadata["params"])["train"]["epochs"] == 1 and "git_revision" in stored.metadata
    assert (prepared.reports("promote") / "decision.md").read_text().startswith("# classify: PROMOTED")
    card = prepared.model_card.read_text()
    assert card.startswith(f"# Model card: classify model {first['stored_as']}\n")
    for heading in (
        "What it does",
        "Inputs",
        "Data versions",
        "Test metrics",
        "Test metrics per group",
        "Largest confusions and error examples",
        "Promotion decision",
        "Serving contract",
        "Known limits",
        "Params it was trained with",
    ):
        assert f"\n## {heading}\n" in card, heading
    assert f"| accuracy | {weak['accuracy']:.4f} |" in card and first["summary"] in card
    assert "POST /classify" in card and "field 'image'" in card and "never on photographs" in card
    trained_with = card.split("## Params it was trained with\n\n```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(trained_with)["train"]["epochs"] == 1
    assert (stored.path / "model_card.md").read_text() == card, "the card travels with the stored model"
    assert (stored.path / "model_card.html").read_text() == prepared.model_card.with_suffix(".html").read_text()
    site = (prepared.root / "reports" / "index.html").read_text()
    assert "promote/model_card.html" in site and f"production {first['stored_as']}" in site
    assert {p.name for p in assert_offline(prepared.root / "reports")} >= {"index.html", "model_card.html"}

    again = promote(make_task(tiny_params), prepared)
    assert not again["promoted"] and "does not beat production" in again["summary"]
    assert registry.production("classify").tag == first["stored_as"]

    tiny_params["classify"]["promote"] = {"min": {"accuracy": 0.99}}
    strong = trained(prepared, tiny_params, epochs=8, lr=0.01, batch_size=16)
    gated = promote(make_task(tiny_params), prepared)
    assert not gated["promoted"] and f"test accuracy {strong['accuracy']:.4f} is below 0.99" in gated["summary"]

    tiny_params["classify"]["promote"] = {"min": {"accuracy": strong["accuracy"] - 0.01}}  # now it passes
    better = promote(make_task(tiny_params), prepared)
    assert strong["accuracy"] > weak["accuracy"] + 0.1
    assert better["promoted"], better["summary"]
    assert better["production_before"] == first["stored_as"]
    assert better["production_metric"] == pytest.approx(weak["accuracy"], abs=1e-6), "re-measured on today's test set"
    stages = {m.tag: m.stage for m in registry.versions("classify")}
    assert stages == {first["stored_as"]: "archived", better["stored_as"]: "production"}

    restored, demoted = registry.rollback("classify")
    assert (restored.tag, demoted.tag) == (first["stored_as"], better["stored_as"])
    assert registry.production("classify").tag == first["stored_as"]
    assert registry.get(better["stored_as"]).stage == "rolled_back"
    with pytest.raises(LookupError, match="no archived model"):
        registry.rollback("classify")


def test_candidate_failing_the_serving_check_is_not_promoted(prepared, tiny_params, empty_store):
    trained(prepared, tiny_params)
    predictions_file = prepared.reports("evaluate") / "predictions.jsonl"
    rows = read_jsonl(predictions_file)
    for row in rows:  # offline answers the served model will not reproduce
        row["prediction"]["confidence"] = min(1.0, row["prediction"]["confidence"] + 0.01)
    write_jsonl(predictions_file, rows)

    decision = promote(make_task(tiny_params), prepared)

    assert not decision["promoted"] and "serving check failed" in decision["summary"]
    assert decision["serving_check"]["mismatch_count"] == decision["serving_check"]["checked"] > 0
    assert registry.production("classify") is None
    assert registry.get(decision["stored_as"]).stage == "rejected", "kept in the store, never deleted"
    report = json.loads((prepared.reports("promote") / "decision.json").read_text())
    assert report["promoted"] is False


def test_a_production_model_this_code_cannot_load_is_noted_and_replaced(prepared, tiny_params, empty_store):
    """After a change to a task's network, the production model's file no longer loads: the candidate is judged on
    the absolute gates, the decision says why production was not re-measured, and the old version is archived."""
    import torch

    trained(prepared, tiny_params)
    first = promote(make_task(tiny_params), prepared)
    model_file = registry.get(first["stored_as"]).model_file
    payload = torch.load(model_file, weights_only=True)
    payload["state_dict"] = {f"renamed.{k}": v for k, v in payload["state_dict"].items()}
    torch.save(payload, model_file)

    decision = promote(make_task(tiny_params), prepared)
    assert decision["promoted"] and decision["production_metric"] is None, decision["summary"]
    assert "cannot load" in decision["summary"] and "not re-measured" in decision["notes"][0]
    assert "retrain it" in decision["notes"][0]
    assert registry.get(first["stored_as"]).stage == "archived"
    assert "Note: production model" in (prepared.reports("promote") / "decision.md").read_text()
