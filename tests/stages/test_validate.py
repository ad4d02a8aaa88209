import json

import pytest

from conftest import make_task
from lifecycle.atomic import read_jsonl, write_jsonl
from lifecycle.html import external_references
from lifecycle.paths import TaskPaths
from lifecycle.stages.collect import run as collect
from lifecycle.stages.validate import DataValidationError
from lifecycle.stages.validate import run as validate
from pages import assert_offline


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
    validations = sorted(docs.glob("validations/*.json"))
    index = (docs / "index.html").read_text()
    assert len(validations) >= 4 and index.count("<tr><td><a href='validations/") == len(validations)
    for saved in validations:  # one row per expectation, from the result GX returned
        expectations = json.loads(saved.read_text())["results"]
        assert saved.with_suffix(".html").read_text().count("<tr><td><code>") == len(expectations) > 0
    assert len(assert_offline(docs)) == len(validations) + 1
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


def test_remote_assets_are_found_and_plain_links_are_not():
    page = (
        "<html><head><script src='https://cdn.example/x.js'></script><link rel=stylesheet href='//cdn/b.css'>"
        "<style>@import 'https://fonts/x.css'; .a { background: url(\"http://x/y.png\") }</style></head>"
        "<body><img src='figures/a.png'><iframe src='HTTPS://x'></iframe><a href='https://docs.example'>docs</a>"
        "<div style='background:url(//x/z.png)'></div><script>var u = 'https://not-fetched';</script></body></html>"
    )
    assert external_references(page) == [
        "<script src=https://cdn.example/x.js>",
        "<link href=//cdn/b.css>",
        "css https://fonts/x.css",
        "css http://x/y.png",
        "<iframe src=HTTPS://x>",
        "css //x/z.png",
    ]
