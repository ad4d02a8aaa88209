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
    assert not log.write({"prediction": object()})  # the line is refused whole
    assert log.write({"ok": True})
    assert log.write({"confidence": math.nan})  # JSON has no NaN: written as null, which the monitor skips
    assert [json.loads(line) for line in log.path.read_text().splitlines()] == [{"ok": True}, {"confidence": None}]
    assert "could not write the request log" in caplog.text


def test_an_unwritable_directory_leaves_the_service_answering(tmp_path, caplog):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    log = RequestLog(blocked, "ocr", max_bytes=1000, backups=1)
    assert not log.write({"ok": True})  # reported as not logged, never raised
    assert "requests will not be logged" in caplog.text


def test_rotation_keeps_backups_files_and_counts_what_an_earlier_writer_left(tmp_path):
    first = RequestLog(tmp_path, "asr", max_bytes=300, backups=2)
    first.write({"request_id": "0", "pad": "x" * 200})
    first.close()
    again = RequestLog(tmp_path, "asr", max_bytes=300, backups=2)  # the same process restarted its log
    for i in range(1, 20):
        assert again.write({"request_id": str(i), "pad": "x" * 200})
    again.close()
    files = sorted(p.name for p in (tmp_path / "asr").iterdir())
    assert len(files) == 3 and all((tmp_path / "asr" / f).stat().st_size <= 300 for f in files)
    assert [r["request_id"] for r in read_requests(tmp_path, "asr")] == ["17", "18", "19"]
