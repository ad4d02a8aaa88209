"""Model-assisted labeling: inputs the service captured, pre-labeled for Label Studio, reviewed, imported."""

import hashlib
import json
import sys

import pytest

from conftest import make_task, run
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
        assert (
            item["data"]["image"].startswith("data:image/png;base64,") and (captured / item["data"]["capture"]).exists()
        )
    assert '<Choices name="label" toName="image"' in (exports[-1].parent / "label_config.xml").read_text()

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

    def landed_name(item):
        return hashlib.sha256((captured / item["data"]["capture"]).read_bytes()).hexdigest()[:32] + ".png"

    names = [landed_name(item) for item in tasks]
    (tmp_path / "export.json").write_text(json.dumps(reviewed))
    label(paths, "--import", str(tmp_path / "export.json"))
    accepted = tasks[0]["predictions"][0]["result"][0]["value"]["choices"][0]
    assert (incoming / accepted / names[0]).exists(), "the accepted pre-annotation's label"
    assert all((incoming / "3" / name).exists() for name in names[1:]), "the reviewer's corrections"
    assert keep.exists(), "what was in the landing zone stays"
    assert not any((captured / t["data"]["capture"]).exists() for t in tasks), "imported captures leave the capture dir"
