import json

import pytest

from conftest import make_task
from lifecycle.atomic import read_jsonl, write_jsonl
from lifecycle.paths import TaskPaths
from lifecycle.stages.collect import run as collect
from lifecycle.stages.validate import DataValidationError
from lifecycle.stages.validate import run as validate


@pytest.fixture
def collected(tmp_path, tiny_params):
    paths = TaskPaths(tmp_path, "classify")
    collect(make_task(tiny_params), paths)
    return paths


def test_good_data_passes_and_writes_data_docs(collected, tiny_params):
    result = validate(make_task(tiny_params), collected)
    assert result["success"] and result["failures"] == []
    docs = collected.reports("validate") / "data_docs"
    assert (docs / "index.html").exists()
    assert list(docs.rglob("validations/**/*.html")), "the validation results are rendered"
    assert json.loads((collected.reports("validate") / "result.json").read_text())["success"] is True


def test_failures_stop_with_each_expectation_listed(collected, tiny_params):
    rows = read_jsonl(collected.raw_manifest)
    rows = [r for r in rows if r["label"] != "4"]  # a class vanishes
    rows.append({**rows[0]})  # a duplicated content hash
    rows.append({**rows[1], "sample_id": "f" * 64, "width": 5000})  # too wide
    write_jsonl(collected.raw_manifest, rows)
    with pytest.raises(DataValidationError) as info:
        validate(make_task(tiny_params), collected)
    message = str(info.value)
    assert "expect_column_values_to_be_unique on 'sample_id'" in message
    assert "balance: expect_column_values_to_be_between on 'share'" in message
    assert "expect_column_values_to_be_between on 'width'" in message
    assert (collected.reports("validate") / "data_docs" / "index.html").exists(), "docs are written on failure too"
    assert json.loads((collected.reports("validate") / "result.json").read_text())["success"] is False


def test_quarantine_share_is_bounded(collected, tiny_params):
    quarantine = [
        {"sha256": "", "origin": f"x{i}", "source": "folder", "reason": "unreadable", "path": None} for i in range(100)
    ]
    write_jsonl(collected.quarantine, quarantine)
    with pytest.raises(DataValidationError, match="on 'quarantine_share'"):
        validate(make_task(tiny_params), collected)
