"""`lifecycle import` stores an existing model as a candidate version; `lifecycle promote --candidate TAG` evaluates
it on the test split and gates it like a trained one; once promoted it is served and used by batch inference."""

import json

import pytest
import torch
import yaml

from conftest import CLI_IN_PROCESS, in_own_store, make_task
from lifecycle import registry
from lifecycle.cli import main
from lifecycle.importing import import_model
from lifecycle.models import load_model
from lifecycle.zoo import build_classifier

# The CLI commands of a user who imports a model, promotes it, runs batch inference with it, then imports the same
# file again (no better than production) and tries to promote that twice; in one process (imports once).
IMPORT_PROMOTE_PREDICT = (
    CLI_IN_PROCESS
    + """
weights, inbox, out = sys.argv[1:]
imported = ["import", "--task", "classify", "--arch", "builtin", "--weights", weights]
answers = {"import": run(*imported)}
tag = json.loads(answers["import"]["out"].split("\\nnext:")[0])["candidate"]
answers["promote"] = run("promote", "--task", "classify", "--candidate", tag)
answers["predict"] = run("predict", inbox, "--task", "classify", "--out", out)
second = json.loads(run(*imported)["out"].split("\\nnext:")[0])["candidate"]
answers["second"] = run("promote", "--task", "classify", "--candidate", second)
answers["again"] = run("promote", "--task", "classify", "--candidate", second)
print("ANSWERS " + json.dumps({"tag": tag, "second_tag": second, **answers}))
"""
)


def test_an_existing_model_is_stored_as_a_candidate_with_its_head(prepared, tiny_params, tmp_path):
    task = make_task(tiny_params)
    existing = task.network.build()  # someone's own 10-digit model of the builtin architecture
    torch.save({"model": existing.state_dict()}, tmp_path / "theirs.pt")
    result = import_model(task, prepared, "builtin", str(tmp_path / "theirs.pt"))
    assert result["initial_weights"]["replaced"] == [] and result["normalize"]["source"] == "training split"
    stored = registry.get(result["candidate"])
    assert stored.stage == "candidate" and stored.metadata["imported_from"] == str(tmp_path / "theirs.pt")
    _, model, info = load_model(stored.model_file)
    assert info["imported_from"] == str(tmp_path / "theirs.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), existing.state_dict().values()))
    assert not prepared.model.exists(), "the trained model's file (a DVC output) is left alone"


def test_a_head_for_other_classes_is_refused(prepared, tiny_params, tmp_path):
    torch.save(build_classifier("resnet18", 3, 28).state_dict(), tmp_path / "three.pt")
    with pytest.raises(ValueError, match="import keeps the file's head, which must have one output per class"):
        import_model(make_task(tiny_params), prepared, "resnet18", str(tmp_path / "three.pt"))
    code = main(["import", "--task", "classify", "--arch", "resnet18", "--weights", str(tmp_path / "missing.pt")])
    assert code == 2 and not prepared.model.exists()


@pytest.mark.slow  # about 30 s: five CLI commands in a fresh process, an ONNX export
def test_an_imported_candidate_is_evaluated_gated_promoted_and_used_for_batch_inference(
    prepared, tiny_params, tmp_path
):
    tiny_params["classify"]["promote"]["export_onnx"] = True  # the tiny configs skip it (tens of seconds)
    task = make_task(tiny_params)
    torch.save(task.network.build().state_dict(), tmp_path / "theirs.pt")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i, image in enumerate(sorted((prepared.raw / "samples").rglob("*.png"))[:3]):
        (inbox / f"{i}.png").write_bytes(image.read_bytes())
    answers = in_own_store(
        tmp_path, tmp_path / "store", IMPORT_PROMOTE_PREDICT, str(tmp_path / "theirs.pt"), str(inbox), "out.jsonl"
    )
    first, promoted, predicted, second, again = (
        answers[k] for k in ("import", "promote", "predict", "second", "again")
    )
    tag = answers["tag"]
    assert first["code"] == 0 and f"lifecycle promote --task classify --candidate {tag}" in first["out"]

    decision = json.loads(promoted["out"])
    assert promoted["code"] == 0 and decision["promoted"], decision["summary"]
    assert (
        decision["stored_as"] == tag and decision["judged"] == tag and "first production model" in decision["summary"]
    )
    evaluation = json.loads((prepared.reports("promote") / "candidate" / "metrics.json").read_text())
    assert evaluation["test_samples"] > 0 and decision["candidate"]["accuracy"] == evaluation["accuracy"]
    assert decision["serving_check"]["passed"] and decision["serving_check"]["checked"] > 0
    store = tmp_path / "store" / "models" / registry.store_name("classify") / tag.split(":")[1]
    info = yaml.safe_load((store / "model.yaml").read_text())
    assert info["labels"]["stage"] == "production" and info["metadata"]["metrics"]["accuracy"] == evaluation["accuracy"]
    assert info["metadata"]["imported_from"] == str(tmp_path / "theirs.pt") and info["metadata"]["dvc_model_md5"] == ""
    assert (store / "reference.parquet").exists() and (store / "model_card.md").exists()
    assert decision["onnx"] == "model.onnx" and (store / "model.onnx").stat().st_size > 0
    assert json.loads((store / "model.onnx.contract.json").read_text())["classes"] == task.source.label_set()

    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert predicted["code"] == 0 and len(rows) == 3 and {r["model"] for r in rows} == {tag}

    rejected = json.loads(second["out"])
    assert not rejected["promoted"] and "does not beat production" in rejected["summary"]
    info = yaml.safe_load((store.parent / answers["second_tag"].split(":")[1] / "model.yaml").read_text())
    assert info["labels"]["stage"] == "rejected"
    assert again["code"] == 2, "a rejected candidate is not promoted again"
