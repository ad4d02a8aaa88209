"""Model-assisted labeling: inputs the service captured, pre-labeled for Label Studio, reviewed, imported."""

import base64
import hashlib
import json
import sys

import numpy as np
import pytest

from conftest import label_studio_export, make_task, run
from lifecycle.labeling import MIME
from lifecycle.traffic import send_traffic

pytestmark = pytest.mark.slow


def label(paths, *args, check=True):
    return run([sys.executable, "-m", "lifecycle.cli", "label", "--task", "classify", *args], paths.root, check=check)


def test_label_studio_round_trip_lands_reviewed_samples_and_rejects_malformed_exports(server, promoted, tmp_path):
    paths, params, stored = promoted
    send_traffic(make_task(params), paths, server.url, "rotate", seed=7)  # unsure answers to review
    captured = paths.root / "data" / "captured" / "classify"
    assert len(list(captured.iterdir())) >= 20, "the service keeps the inputs it answered (capture_rate 1.0)"

    out = label(paths).stdout
    exports = sorted((paths.root / "reports" / "labeling" / "classify").glob("*-import.json"))
    tasks = json.loads(exports[-1].read_text())
    assert tasks and f"{len(tasks)} of " in out and "label_config.xml" in out
    for item in tasks:
        pre = item["predictions"][0]
        assert pre["model_version"] == stored.tag and pre["score"] < 0.9
        # the capture inline, typed by its content (the session's server also answers other tests' JPEGs)
        capture = captured / item["data"]["capture"]
        mime, payload = item["data"]["image"].removeprefix("data:").split(";base64,")
        assert mime == MIME[capture.suffix] and mime.startswith("image/")
        assert base64.b64decode(payload) == capture.read_bytes()
    assert '<Choices name="label" toName="image"' in (exports[-1].parent / "label_config.xml").read_text()

    def landed_name(item):  # content hash and the capture's own type (other tests send the server JPEGs too)
        capture = captured / item["data"]["capture"]
        return hashlib.sha256(capture.read_bytes()).hexdigest()[:32] + capture.suffix

    names = [landed_name(item) for item in tasks]
    # the reviewer skips one input; one whose content no other item shares (same bytes land under the same name)
    cancelled = max(i for i, name in enumerate(names) if i > 0 and names.count(name) == 1)

    # a reviewer accepts the first pre-annotation and corrects the others to "3"; Label Studio exports them
    reviewed = []
    for i, item in enumerate(tasks):
        result = (
            item["predictions"][0]["result"]
            if i == 0
            else [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["3"]}}]
        )
        reviewed.append(
            {"id": 100 + i, "data": item["data"], "annotations": [{"result": result, "was_cancelled": False}]}
        )
    reviewed[cancelled]["annotations"] = [{"result": [], "was_cancelled": True}]
    incoming = paths.incoming
    keep = incoming / "7" / "already-here.png"
    keep.parent.mkdir(parents=True, exist_ok=True)
    keep.write_bytes((captured / tasks[0]["data"]["capture"]).read_bytes())

    broken = [
        *reviewed[:2],
        {**reviewed[2], "annotations": [{"result": [{"type": "choices", "value": {"choices": ["banana"]}}]}]},
    ]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    refused = label(paths, "--import", str(tmp_path / "broken.json"), check=False)
    assert refused.returncode == 2 and "item 2 (task id 102)" in refused.stdout and "'banana'" in refused.stdout
    assert sorted(p.name for p in incoming.rglob("*.png")) == ["already-here.png"], "nothing written, nothing lost"
    (tmp_path / "none.json").write_text(json.dumps([{"id": 5, "data": reviewed[0]["data"], "annotations": []}]))
    assert "no completed annotation" in label(paths, "--import", str(tmp_path / "none.json"), check=False).stdout

    (tmp_path / "export.json").write_text(json.dumps(reviewed))
    out = label(paths, "--import", str(tmp_path / "export.json")).stdout
    assert f"{len(tasks) - 1} reviewed samples imported" in out and "1 cancelled skipped" in out
    accepted = tasks[0]["predictions"][0]["result"][0]["value"]["choices"][0]
    assert (incoming / accepted / names[0]).exists(), "the accepted pre-annotation's label"
    corrected = [name for i, name in enumerate(names) if i not in (0, cancelled)]
    assert all((incoming / "3" / name).exists() for name in corrected), "the reviewer's corrections"
    assert not any(incoming.rglob(names[cancelled])), "the cancelled item is not imported"
    assert keep.exists(), "what was in the landing zone stays"
    imported = [t for i, t in enumerate(tasks) if i != cancelled]
    assert not any((captured / t["data"]["capture"]).exists() for t in imported), "imported captures leave"
    assert (captured / tasks[cancelled]["data"]["capture"]).exists(), "the cancelled item's capture stays for review"


def truth_as_result(task, label):
    """What a reviewer who fixes the pre-annotation to the truth leaves in Label Studio."""
    if task.name == "detect":
        objects = [{"label": c, "score": 1.0, "box": b} for b, c in zip(label["boxes"], label["labels"])]
        return task.labeling.to_label_studio({"objects": objects, "mask": label["mask"]})
    return task.labeling.to_label_studio({"text": label, "confidence": 1.0})


@pytest.mark.parametrize("name", ["detect", "ocr", "asr"])
def test_reviewed_captures_close_the_loop(name, promoted_all, tmp_path):
    """capture -> label (pre-annotated Label Studio tasks, interface beside them) -> a reviewed export with one item
    cancelled -> a malformed export refused whole -> --import (landing-zone layout of the task) -> collect -> split:
    the reviewed captures are collected with their reviewed labels in group `captured`, split by content hash."""
    import copy
    import shutil

    from lifecycle.atomic import read_jsonl
    from lifecycle.capture import capture_input
    from lifecycle.data import rows_of_split
    from lifecycle.labeling import export_for_review, import_reviewed
    from lifecycle.monitoring import monitor
    from lifecycle.operations import MonitoringConfig
    from lifecycle.paths import TaskPaths
    from lifecycle.serving import Predictor
    from lifecycle.stages.collect import run as collect
    from lifecycle.stages.split import run as split

    shared, params, stored = promoted_all[name]
    task = make_task(params, name)
    truth = {}
    captured = tmp_path / "captured" / name
    rng = np.random.default_rng(0)
    for n, row in enumerate(rows_of_split(shared.split_manifest, "test")[:5]):  # production inputs, a little noisy
        data = task.monitoring.shift((shared.raw / row["path"]).read_bytes(), "noise", rng)
        upload = "upload.wav" if name == "asr" else "upload.png"  # the shifted input's encoding
        truth[capture_input(captured, f"req{n}", upload, data, 50).name] = row["label"]
    exported = export_for_review(Predictor.from_store(stored, "cpu"), captured, tmp_path / "labeling", 1.01, 8)
    tasks = json.loads(exported.import_file.read_text())
    assert exported.for_review == len(tasks) == 5 and not exported.unreadable
    interface = exported.config_file.read_text()
    field = task.codec.input_field
    for item in tasks:
        assert item["data"][field].startswith(("data:image/png;base64,", "data:audio/wav;base64,"))
        assert item["predictions"][0]["model_version"] == stored.tag
        for region in item["predictions"][0]["result"]:
            assert f'name="{region["from_name"]}" toName="{region["to_name"]}"' in interface
    expected_tags = {
        "detect": ["<RectangleLabels", "<BrushLabels"],
        "ocr": ["<TextArea"],
        "asr": ["<Audio", "<TextArea"],
    }
    assert all(tag in interface for tag in expected_tags[name])

    results = [truth_as_result(task, truth[item["data"]["capture"]]) for item in tasks]
    reviewed = label_studio_export(tasks, results, cancelled={1})
    incoming = tmp_path / "data" / "incoming" / name
    broken = copy.deepcopy(reviewed)
    broken[3]["annotations"][0]["result"] = [{"from_name": "x", "to_name": "y", "type": "nonsense", "value": {}}]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"item 3 \(task id 4\)"):
        import_reviewed(task, tmp_path / "broken.json", captured, incoming)
    assert not incoming.exists() and len(list(captured.glob("req*"))) == 5, "nothing written, nothing removed"

    (tmp_path / "export.json").write_text(json.dumps(reviewed))
    done = import_reviewed(task, tmp_path / "export.json", captured, incoming)
    assert (done.reviewed, done.cancelled, done.captures_removed) == (4, 1, 4)
    assert [p.name for p in captured.glob("req*")] == [tasks[1]["data"]["capture"]], "the cancelled capture stays"
    if name == "detect":
        assert len(list(incoming.glob("reviewed-*/annotations.json"))) == 1
        assert len(list(incoming.glob("reviewed-*/masks/*.png"))) == 4
    else:
        assert len((incoming / "labels.tsv").read_text().splitlines()) == 4
    again = import_reviewed(task, tmp_path / "export.json", captured, incoming)
    assert again.written == [] and again.reviewed == 4, "importing again (from the inline data) overwrites nothing"

    paths = TaskPaths(tmp_path, name)
    shutil.copytree(shared.raw, paths.raw)  # the data the production model was trained on
    landing_only = copy.deepcopy(params)
    landing_only[name]["collect"]["embedded"] = False
    before = len(read_jsonl(paths.raw_manifest))
    collected = collect(make_task(landing_only, name), paths)
    assert collected.new == 4 and collected.new_quarantined == 0 and collected.by_source["captured"] == 4
    rows = [r for r in read_jsonl(paths.raw_manifest) if r["source"] == "captured"]
    assert len(read_jsonl(paths.raw_manifest)) == before + 4 and all(r["group"] == "captured" for r in rows)
    reviewed_truth = [truth[item["data"]["capture"]] for i, item in enumerate(tasks) if i != 1]
    if name == "detect":  # the brushed class map exactly, the boxes to the rounding of Label Studio's percentages
        by_mask = {json.dumps(t["mask"], sort_keys=True): t for t in reviewed_truth}
        for row in rows:
            expected = by_mask[json.dumps(row["label"]["mask"], sort_keys=True)]
            assert row["label"]["labels"] == expected["labels"]
            assert np.allclose(row["label"]["boxes"], expected["boxes"], atol=0.01)
        assert len(by_mask) == len(rows) == 4
    else:
        assert sorted(r["label"] for r in rows) == sorted(reviewed_truth)
    summary = split(make_task(landing_only, name), paths)
    assert summary["groups"]["captured"]["samples"] == 4

    decision = monitor(name, MonitoringConfig(min_rows=10**6), tmp_path / "no-logs", tmp_path / "drift", captured)
    assert decision["captured"] == {"files": 1, "mb": decision["captured"]["mb"], "dropped": 0}
