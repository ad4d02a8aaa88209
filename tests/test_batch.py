"""Batch inference over a folder: the CLI and the Prefect flow, against the production model of the test store."""

import csv
import json
import shutil
import sys

import pytest

from conftest import REPO, import_flow, run
from lifecycle.atomic import read_jsonl
from lifecycle.data import rows_of_split
from lifecycle.stages.promote import _same

pytestmark = pytest.mark.slow


@pytest.fixture
def inbox(promoted, tmp_path):
    """Eight test images (two in a subfolder) and three unreadable files; returns (folder, sample_id by name)."""
    paths, _, _ = promoted
    folder = tmp_path / "inbox"
    (folder / "more").mkdir(parents=True)
    names = {}
    for i, row in enumerate(rows_of_split(paths.split_manifest, "test")[:8]):
        name = f"{'more/' if i >= 6 else ''}digit-{i}.png"
        shutil.copyfile(paths.raw / row["path"], folder / name)
        names[name] = row["sample_id"]
    (folder / "notes.txt").write_text("not an image")
    (folder / "more" / "cut.png").write_bytes((folder / "digit-0.png").read_bytes()[:60])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / ".hidden.png").write_bytes(b"editor swap file, skipped")
    return folder, names


def offline(paths) -> dict:
    return {r["sample_id"]: r["prediction"] for r in read_jsonl(paths.reports("evaluate") / "predictions.jsonl")}


def test_predict_command_writes_one_row_per_input_with_reasons_for_the_unreadable(promoted, inbox, tmp_path):
    paths, _, stored = promoted
    folder, names = inbox
    out = tmp_path / "predictions.jsonl"
    proc = run(
        [
            sys.executable,
            "-m",
            "lifecycle.cli",
            "predict",
            str(folder),
            "--task",
            "classify",
            "--out",
            str(out),
            "--model",
            stored.tag,
            "--batch-size",
            "3",
        ],
        paths.root,
    )
    rows = {row["input"]: row for row in read_jsonl(out)}
    assert set(rows) == {*names, "notes.txt", "more/cut.png", "empty.jpg"}
    expected = offline(paths)
    for name, sample_id in names.items():
        answer = {k: v for k, v in rows[name].items() if k not in ("input", "model")}
        assert rows[name]["model"] == stored.tag and _same(answer, expected[sample_id], 1e-4), name
    assert "not an image" in rows["notes.txt"]["error"] and "truncated" in rows["more/cut.png"]["error"]
    assert "empty file" in rows["empty.jpg"]["error"]
    assert "8 predictions" in proc.stdout and "3 unreadable" in proc.stdout and "more/cut.png: truncated" in proc.stdout


def test_predict_command_csv_and_errors(promoted, inbox, tmp_path):
    paths, _, _ = promoted
    folder, names = inbox
    out = tmp_path / "predictions.csv"
    run(
        [sys.executable, "-m", "lifecycle.cli", "predict", str(folder), "--task", "classify", "--out", str(out)],
        paths.root,
    )
    with out.open() as f:
        rows = {row["input"]: row for row in csv.DictReader(f)}
    assert len(rows) == len(names) + 3
    assert json.loads(rows["digit-0.png"]["top_k"])[0]["label"] == rows["digit-0.png"]["label"]
    assert rows["notes.txt"]["label"] == "" and rows["notes.txt"]["error"]

    bad = run(
        [
            sys.executable,
            "-m",
            "lifecycle.cli",
            "predict",
            str(tmp_path / "nowhere"),
            "--task",
            "classify",
            "--out",
            str(tmp_path / "x.jsonl"),
        ],
        paths.root,
        check=False,
    )
    assert bad.returncode == 2 and "no such input folder" in bad.stdout
    wrong = run(
        [
            sys.executable,
            "-m",
            "lifecycle.cli",
            "predict",
            str(folder),
            "--task",
            "classify",
            "--out",
            str(tmp_path / "x.parquet"),
        ],
        paths.root,
        check=False,
    )
    assert wrong.returncode == 2 and "must end in .jsonl or .csv" in wrong.stdout
    assert not (tmp_path / "x.parquet").exists()


def test_batch_predict_flow(promoted, inbox, tmp_path, prefect_harness, monkeypatch):
    from prefect.artifacts import Artifact

    paths, _, stored = promoted
    folder, names = inbox
    monkeypatch.chdir(paths.root)
    batch_predict = import_flow(REPO, "batch_predict", "batch_predict")
    result = batch_predict(task="classify", input_dir=str(folder))
    rows = read_jsonl(paths.root / result["out"])
    assert result["model"] == stored.tag and result["predicted"] == len(names) and len(result["failed"]) == 3
    assert len(rows) == len(names) + 3 and result["out"].startswith("reports/classify/batch/")
    artifact = Artifact.get("classify-batch-predict")
    assert "8 inputs predicted" in artifact.data and "`more/cut.png`" in artifact.data
