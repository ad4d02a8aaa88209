import json
import math

from lifecycle.requestlog import RequestLog, read_requests


def test_lines_rotate_by_size_and_read_back_in_order(tmp_path):
    log = RequestLog(tmp_path, "classify", max_bytes=400, backups=50)
    for i in range(40):
        assert log.write({"request_id": str(i), "embedding": [0.5] * 4})
    files = list((tmp_path / "classify").glob("requests-*.jsonl*"))
    assert len(files) > 3 and all(f.stat().st_size <= 400 for f in files)
    assert [r["request_id"] for r in read_requests(tmp_path, "classify")] == [str(i) for i in range(40)]


def test_a_record_that_cannot_be_written_is_reported_not_raised(tmp_path, caplog):
    log = RequestLog(tmp_path, "detect", max_bytes=10_000, backups=1)
    assert not log.write({"confidence": math.nan})  # not valid JSON: the line is refused whole
    assert not log.write({"prediction": object()})
    assert log.write({"ok": True})
    assert [json.loads(line) for line in log.path.read_text().splitlines()] == [{"ok": True}]
    assert "could not write the request log" in caplog.text


def test_an_unwritable_directory_leaves_the_service_answering(tmp_path, caplog):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    log = RequestLog(blocked, "ocr", max_bytes=1000, backups=1)
    assert log.write({"ok": True}) and "requests will not be logged" in caplog.text
