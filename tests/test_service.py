"""The BentoML service, served for real: `bentoml serve` on 127.0.0.1 in a subprocess, a real HTTP client."""

import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import Server
from lifecycle.serving import Predictor
from lifecycle.stages.promote import _same

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4  # bf16 autocast: a batch's composition may move a confidence in the 5th decimal, never a label


def log_lines(server: Server) -> list[dict]:
    return [json.loads(line) for path in sorted(server.log_dir.glob("requests-*.jsonl*")) for line in path.open()]


def test_answers_match_offline_predictions(server):
    with httpx.Client(timeout=30) as client:
        for row in server.rows[:12]:
            response = server.classify(
                client, server.image(row), headers={"X-Request-ID": f"test-{row['sample_id'][:8]}"}
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer.pop("model") == server.stored.tag
            assert _same(answer, server.offline[row["sample_id"]], TOLERANCE), (
                answer,
                server.offline[row["sample_id"]],
            )
            assert response.headers["X-Request-ID"] == f"test-{row['sample_id'][:8]}"
            assert len(answer["top_k"]) == 3 and answer["top_k"][0]["label"] == answer["label"]


def test_concurrent_requests_are_batched_and_still_match(server):
    rows = server.rows[:48]
    before = len(log_lines(server))
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=48)) as client:
        with ThreadPoolExecutor(max_workers=24) as pool:
            responses = list(pool.map(lambda row: server.classify(client, server.image(row)), rows))
    assert [r.status_code for r in responses] == [200] * len(rows)
    for row, response in zip(rows, responses):
        answer = response.json()
        answer.pop("model")
        assert _same(answer, server.offline[row["sample_id"]], TOLERANCE), row["sample_id"]
    logged = log_lines(server)[before:]
    assert len(logged) == len(rows), "every request answered and logged once"
    assert max(r["batch"] for r in logged) > 1, "concurrent requests were merged into batches"
    assert all(1 <= r["batch"] <= 16 for r in logged), "never over max_batch_size"


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_every_bad_input_gets_a_4xx_json_error_and_the_server_keeps_answering(server):
    good = server.image(server.rows[0])
    url = f"{server.url}/classify"
    cases = {
        "not an image": (dict(files={"image": ("notes.txt", b"hello, I am text", "text/plain")}), 415, "not an image"),
        "truncated image": (dict(files={"image": ("cut.png", good[: len(good) // 2], "image/png")}), 400, "truncated"),
        "empty file": (dict(files={"image": ("empty.png", b"", "image/png")}), 400, "empty file"),
        "empty body": (dict(), 415, "multipart/form-data"),
        "empty multipart body": (
            dict(content=b"", headers={"Content-Type": "multipart/form-data; boundary=x"}),
            400,
            "multipart",
        ),
        "missing field": (dict(files={"picture": ("digit.png", good, "image/png")}), 400, "'image' is missing"),
        "field is not a file": (dict(data={"image": "http://example.com/digit.png"}), 415, "multipart/form-data"),
        "text field in multipart": (
            dict(files={"other": ("a.png", good, "image/png")}, data={"image": "x"}),
            400,
            "'image' is not a file",
        ),
        "wrong content type": (dict(json={"image": "aGVsbG8="}), 415, "multipart/form-data"),
        "over 10 MB": (dict(files={"image": ("big.png", good + b"\0" * (10 * 2**20), "image/png")}), 413, "10 MB"),
        "over 4096x4096 pixels": (
            dict(files={"image": ("wide.png", _png(np.zeros((8, 4097), np.uint8)), "image/png")}),
            413,
            "4097x8 pixels",
        ),
    }
    with httpx.Client(timeout=60) as client:
        for name, (kwargs, status, message) in cases.items():
            response = client.post(url, **kwargs)
            assert response.status_code == status, (name, response.status_code, response.text)
            assert message in response.json()["error"], (name, response.json())
            assert server.classify(client, good).status_code == 200, f"the server still answers after: {name}"


def test_cmyk_16_bit_and_alpha_images_are_converted_not_rejected(server):
    row = server.rows[1]
    gray = np.asarray(Image.open(io.BytesIO(server.image(row))).convert("L"))
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    cmyk = io.BytesIO()
    Image.fromarray(gray).convert("CMYK").save(cmyk, format="JPEG", quality=95)
    lossless = {"16-bit": _png(gray.astype(np.uint16) * 257), "opaque alpha": _png(rgba, "RGBA")}
    local = Predictor.from_store(server.stored, "cpu")
    with httpx.Client(timeout=30) as client:
        for name, data in {**lossless, "CMYK JPEG": cmyk.getvalue()}.items():
            response = server.classify(client, data, name=f"{name}.img")
            assert response.status_code == 200, (name, response.text)
            answer = {k: v for k, v in response.json().items() if k != "model"}
            expected = local.predict([local.task.codec.decode(data)])[0]
            assert _same(answer, expected, TOLERANCE), name
            if name in lossless:
                assert _same(answer, server.offline[row["sample_id"]], TOLERANCE), f"{name} decodes to the same pixels"


def test_the_request_log_holds_one_valid_line_per_answered_request(server):
    before = len(log_lines(server))
    with httpx.Client(timeout=30) as client:
        statuses = [server.classify(client, server.image(row)).status_code for row in server.rows[:5]]
        statuses.append(server.classify(client, b"broken").status_code)
    assert statuses == [200] * 5 + [415]
    lines = log_lines(server)
    assert len(lines) - before == 5, "answered requests only, each once"
    for record in lines[before:]:
        assert record["task"] == "classify" and record["model"] == server.stored.tag and record["request_id"]
        assert set(record["descriptors"]) == {"width", "height", "intensity_mean", "intensity_std", "sharpness"}
        assert record["prediction"]["label"] in [str(d) for d in range(10)]
        assert record["confidence"] == record["prediction"]["confidence"]
        assert len(record["embedding"]) == 8 and all(isinstance(v, float) for v in record["embedding"])
        assert record["timestamp"].endswith("+00:00") and record["latency_ms"] > 0


def test_health_and_metrics_endpoints(server):
    for path in ("/healthz", "/livez", "/readyz"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200
    assert "bentoml_service_request_total" in httpx.get(f"{server.url}/metrics", timeout=10).text


def test_detect_answers_match_offline_with_the_mask_on_request(server, promoted_all):
    from lifecycle.atomic import read_jsonl
    from lifecycle.data import rows_of_split

    paths, _, stored = promoted_all["detect"]
    offline = {r["sample_id"]: r["prediction"] for r in read_jsonl(paths.reports("evaluate") / "predictions.jsonl")}
    rows = rows_of_split(paths.split_manifest, "test")[:6]
    with httpx.Client(timeout=30) as client:

        def post(row: dict, query: str = "") -> httpx.Response:
            image = ("scene.png", (paths.raw / row["path"]).read_bytes())
            return client.post(f"{server.url}/detect{query}", files={"image": image})

        answered_objects = 0
        for row in rows:
            expected = offline[row["sample_id"]]
            plain, masked = post(row), post(row, "?mask=true")
            assert plain.status_code == masked.status_code == 200, (plain.text, masked.text)
            assert plain.json() == {"objects": plain.json()["objects"], "model": stored.tag}, "no mask unless asked"
            assert _same(plain.json()["objects"], expected["objects"], TOLERANCE)
            assert masked.json()["mask"] == expected["mask"] and masked.json()["mask"]["size"] == [64, 64]
            answered_objects += len(plain.json()["objects"])
        assert answered_objects > 0, "the tiny model answers objects (its score threshold is low)"
        for query in ("?mask=maybe", "?colour=red"):
            bad = post(rows[0], query)
            assert bad.status_code == 400 and "mask" in bad.json()["error"]
        assert server.classify(client, server.image(server.rows[0]), params={"mask": "true"}).status_code == 400


def assert_text_answers_match_offline(post, promoted: tuple, count: int = 8) -> list[bytes]:
    """The first test inputs of a text task (ocr, asr), posted concurrently and then one by one: every answer
    equals the evaluate stage's offline prediction, whatever it was batched with. Returns the inputs."""
    from lifecycle.atomic import read_jsonl
    from lifecycle.data import rows_of_split

    paths, _, stored = promoted
    offline = {r["sample_id"]: r["prediction"] for r in read_jsonl(paths.reports("evaluate") / "predictions.jsonl")}
    rows = rows_of_split(paths.split_manifest, "test")[:count]
    inputs = [(paths.raw / row["path"]).read_bytes() for row in rows]
    with ThreadPoolExecutor(len(rows)) as pool:
        concurrent = list(pool.map(post, inputs))
    for row, data, together in zip(rows, inputs, concurrent):
        alone = post(data)
        assert alone.status_code == together.status_code == 200, (alone.text, together.text)
        assert set(alone.json()) == {"text", "confidence", "model"} and alone.json()["model"] == stored.tag
        for answer in (alone.json(), together.json()):
            assert answer["text"] == offline[row["sample_id"]]["text"]
            assert abs(answer["confidence"] - offline[row["sample_id"]]["confidence"]) <= TOLERANCE
    return inputs


def test_read_text_answers_match_offline_alone_or_concurrently_and_too_wide_lines_are_refused(server, promoted_all):
    """Lines of different widths batched together (padded to the widest) read as they do alone and offline."""
    with httpx.Client(timeout=30) as client:
        post = lambda data: client.post(f"{server.url}/read_text", files={"image": ("line.png", data)})  # noqa: E731
        assert_text_answers_match_offline(post, promoted_all["ocr"])
        buf = io.BytesIO()
        Image.new("L", (4000, 20), 255).save(buf, format="PNG")
        wide = post(buf.getvalue())
        assert wide.status_code == 400 and "wide" in wide.json()["error"], wide.text


def test_transcribe_answers_match_offline_and_long_audio_streams_up_to_the_bound(server, promoted_all):
    """Clips answered alone or concurrently as offline; a clip over `streaming.above_seconds` is decoded in
    chunks and answered as the offline predictor answers it; over `streaming.max_seconds` is a 413; non-audio,
    corrupt and empty uploads are 4xx with a message."""
    import soundfile as sf

    _, params, stored = promoted_all["asr"]
    streaming = params["asr"]["model"]["streaming"]
    with httpx.Client(timeout=60) as client:
        post = lambda data: client.post(f"{server.url}/transcribe", files={"audio": ("clip.wav", data)})  # noqa: E731
        inputs = assert_text_answers_match_offline(post, promoted_all["asr"])

        predictor = Predictor.from_store(stored, "cpu")
        clips = [predictor.task.codec.decode(data)[0].numpy() for data in inputs]
        recording = np.concatenate(clips)
        assert streaming["above_seconds"] < len(recording) / 16_000 < streaming["max_seconds"]
        buf = io.BytesIO()
        sf.write(buf, recording, 16_000, format="WAV", subtype="FLOAT")
        long = post(buf.getvalue())
        assert long.status_code == 200, long.text
        expected = predictor.predict([predictor.task.codec.decode(buf.getvalue())])[0]
        assert long.json()["text"] == expected["text"]
        assert abs(long.json()["confidence"] - expected["confidence"]) <= TOLERANCE
        too_long = np.zeros(int(16_000 * (streaming["max_seconds"] + 1)), np.int16)
        buf = io.BytesIO()
        sf.write(buf, too_long, 16_000, format="WAV", subtype="PCM_16")
        refused = post(buf.getvalue())
        assert refused.status_code == 413 and f"{streaming['max_seconds']:g} s" in refused.json()["error"], refused.text
        for data, status, message in [
            (b"", 400, "empty"),
            (b"just some text", 415, "not audio"),
            (inputs[0][:44], 400, "no samples"),
        ]:
            answer = post(data)
            assert answer.status_code == status and message in answer.json()["error"], answer.text


def test_bentoml_build_packages_the_service_and_the_production_model(server, promoted_all):
    from conftest import REPO, run

    for name in ("bentofile.yaml", "requirements.lock"):
        (server.paths.root / name).write_bytes((REPO / name).read_bytes())
    shutil.copytree(
        REPO / "src" / "lifecycle",
        server.paths.root / "src" / "lifecycle",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    bentoml = str(Path(sys.executable).parent / "bentoml")
    out = run([bentoml, "build", "--output", "tag"], server.paths.root).stdout
    tag = re.search(r"__tag__:(\S+)", out).group(1)
    info = json.loads(run([bentoml, "get", tag, "-o", "json"], server.paths.root).stdout)
    models = [m["tag"] for s in info["services"] for m in s.get("models", [])]
    assert sorted(models) == sorted(stored.tag for _, _, stored in promoted_all.values())
    bento = Path(os.environ["BENTOML_HOME"]) / "bentos" / tag.replace(":", "/")
    assert (bento / "env" / "docker" / "Dockerfile").exists()
    assert (bento / "src" / "params.yaml").exists() and (bento / "src" / "src" / "lifecycle" / "service.py").exists()
    archive = server.paths.root / "lifecycle.bento"  # BentoML 1.4 copies the models in on export
    run([bentoml, "export", tag, str(archive)], server.paths.root)
    with tarfile.open(archive) as bundle:
        names = set(bundle.getnames())
    for _, _, stored in promoted_all.values():  # each model travels with its model card
        card = "models/{}/{}/model_card.md".format(*stored.tag.split(":"))
        assert any(n.endswith(card) for n in names), sorted(n for n in names if "models/" in n)


def test_a_short_soak_over_every_endpoint_answers_every_request(server, promoted_all):
    """bench/soak.py for 20 s: 32 clients over the four endpoints with real inputs, not one non-200 (503 included)
    and none hung (each request has a 30 s timeout)."""
    import asyncio

    from bench.soak import soak, targets

    root = server.paths.root
    endpoints = targets(root, root / "params.yaml", per_task=16)
    assert sorted(t.endpoint for t in endpoints) == ["classify", "detect", "read_text", "transcribe"]
    result = asyncio.run(soak(server.url, endpoints, clients=32, seconds=20))
    print(result.report())
    assert result.non_200() == 0, result.report()
    assert all(len(latencies) > 0 for latencies in result.latencies_ms.values()), result.report()


CAPTURE_MB = 4 / 1024


@pytest.fixture(scope="module")
def own_servers(server, tmp_path_factory):
    """Starts a second `bentoml serve` of classify on a copy of the test store, in two worker processes looking for a
    new production model every 0.5 s, so that promoting there leaves the session's server alone; both workers keep
    every input they answer in one capture folder bounded to 4 KB. The one running is shared by the
    module's tests until one stops it (a start is ~20 s of the suite's budget); a test finding none running gets a
    fresh one."""
    import yaml

    from conftest import start_bentoml

    started: list[tuple[Any, Any]] = []

    def running() -> tuple[str, Any, dict, Path]:
        if started and started[-1][0].poll() is None:
            return started[-1][1]
        root = tmp_path_factory.mktemp("own-server")
        store = root / "bentoml"
        shutil.copytree(os.environ["BENTOML_HOME"], store)
        params = yaml.safe_load((server.paths.root / "params.yaml").read_text())
        params["tasks"] = ["classify"]
        params["serving"].update(reload_seconds=0.5, log_dir=str(root / "logs"), workers=2)
        params["monitoring"].update(
            capture_inputs=True, capture_rate=1.0, capture_dir=str(root / "captured"), capture_max_mb=CAPTURE_MB
        )
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        env = {**os.environ, "BENTOML_HOME": str(store), "LIFECYCLE_PARAMS": str(root / "params.yaml")}
        with (root / "server.log").open("w") as log:
            proc, url = start_bentoml(root, log, root / "server.log", env)
        started.append((proc, (url, proc, env, root / "logs" / "classify")))
        return started[-1][1]

    yield running
    for proc, _ in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture
def own_server(own_servers):
    """(url, process, env, log dir) of the module's second server: see `own_servers`."""
    return own_servers()


def logged_requests(log_dir: Path, prefix: str) -> list[dict]:
    """The request log's lines of the requests whose X-Request-ID starts with `prefix` (one test's load)."""
    lines = [json.loads(line) for path in log_dir.glob("requests-*.jsonl*") for line in path.open()]
    return [r for r in lines if r["request_id"].startswith(prefix)]


class Load:
    """Clients posting test images one after another until stopped, keeping every answer in order."""

    def __init__(self, url: str, server: Server, clients: int, prefix: str = "load") -> None:
        self.prefix = prefix
        self.answers: list[tuple[int, dict]] = []
        self.answered_ids: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(url, server, k)) for k in range(clients)]
        for thread in self._threads:
            thread.start()

    def _client(self, url: str, server: Server, k: int) -> None:
        with httpx.Client(timeout=30) as client:
            for i in itertools.count(k):
                if self._stop.is_set():
                    return
                image = server.image(server.rows[i % len(server.rows)])
                files, headers = (
                    {"image": ("digit.png", image, "image/png")},
                    {"X-Request-ID": f"{self.prefix}-{k}-{i}"},
                )
                try:
                    response = client.post(f"{url}/classify", files=files, headers=headers)
                except httpx.ConnectError:  # refused: not accepted (after shutdown began)
                    time.sleep(0.05)
                    continue
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))
                    continue
                self.answers.append((response.status_code, response.json()))
                self.answered_ids.append(response.headers["X-Request-ID"])

    def wait_for(self, predicate: Any, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        start = len(self.answers)
        while not any(predicate(a) for _, a in self.answers[start:]):
            assert time.monotonic() < deadline, "the expected answers never came"
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_a_promotion_and_a_rollback_are_swapped_in_while_requests_run(server, own_server, tmp_path):
    """A model with other classes is promoted, then rolled back, under load: answers switch to it and back,
    decoded for the model that answers; no request fails; answers and log lines name the model that answered."""
    from lifecycle.models import load_task, save_model
    from lifecycle.tasks import build_task

    url, _, env, log_dir = own_server
    original = server.stored.tag
    trained = load_task(server.stored.model_file)
    other = trained.cfg.collect.model_copy(update={"classes": ["x", "y", "z"]})
    letters = build_task("classify", trained.cfg.model_copy(update={"collect": other}))
    save_model(tmp_path / "letters.pt", letters, letters.network.build().state_dict(), {"test": "other classes"})
    promote = (
        "import sys; from pathlib import Path; from lifecycle import registry; "
        "s = registry.store_candidate('classify', Path(sys.argv[1]), {}); "
        "registry.make_production('classify', s.tag); print(s.tag)"
    )
    lifecycle = str(Path(sys.executable).parent / "lifecycle")

    load = Load(url, server, clients=4, prefix="swap")
    try:
        load.wait_for(lambda a: a.get("model") == original)
        promoted = subprocess.run(
            [sys.executable, "-c", promote, str(tmp_path / "letters.pt")], env=env, capture_output=True, text=True
        )
        assert promoted.returncode == 0, promoted.stderr
        new_tag = promoted.stdout.strip().splitlines()[-1]
        load.wait_for(lambda a: a.get("model") == new_tag)
        rolled = subprocess.run([lifecycle, "rollback", "--task", "classify"], env=env, capture_output=True, text=True)
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        load.wait_for(lambda a: a.get("model") == original)
    finally:
        load.stop()
    assert load.failures == [] and [s for s, _ in load.answers if s != 200] == []
    by_model = {tag: [a for _, a in load.answers if a["model"] == tag] for tag in (original, new_tag)}
    assert len(by_model[original]) + len(by_model[new_tag]) == len(load.answers)
    assert all(a["label"] in "xyz" for a in by_model[new_tag]) and by_model[new_tag]
    assert all(a["label"] in "0123456789" for a in by_model[original])
    logged = logged_requests(log_dir, "swap-")
    assert sorted(r["model"] for r in logged) == sorted(a["model"] for _, a in load.answers)
    assert all(r["prediction"]["label"] in ("xyz" if r["model"] == new_tag else "0123456789") for r in logged)
    assert_captures_bounded_and_counted(log_dir)


def assert_captures_bounded_and_counted(log_dir: Path) -> None:
    """Two workers captured every input they answered into one folder: it stays within its bound, and every answered
    request's input is either kept or counted as dropped, once."""
    from lifecycle.capture import capture_stats

    folder = log_dir.parent.parent / "captured" / "classify"
    stats = capture_stats(folder)
    answered = sum(1 for path in log_dir.glob("requests-*.jsonl*") for _ in path.open())
    kept = sum(path.stat().st_size for path in folder.iterdir() if not path.name.startswith("."))
    assert kept <= CAPTURE_MB * 2**20 and stats["dropped"] > 0, (kept, stats)
    assert stats["files"] + stats["dropped"] == answered, (stats, answered)


def test_sigterm_mid_load_answers_and_logs_every_accepted_request(server, own_server):
    """SIGTERM while 8 clients post: the service stops accepting, and every request it accepted (ran and logged)
    is answered 200; every answer is logged once, the log flushed before exit."""
    url, proc, _, log_dir = own_server
    load = Load(url, server, clients=8, prefix="sigterm")
    try:
        load.wait_for(lambda a: True)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        load.stop()
    assert load.answers and [s for s, _ in load.answers if s != 200] == []
    logged = [r["request_id"] for r in logged_requests(log_dir, "sigterm-")]
    assert sorted(logged) == sorted(load.answered_ids), "each accepted request answered and logged, once"


def test_bad_input_over_every_endpoint_is_a_4xx_json_error_and_a_dotted_name_is_answered(server, promoted_all):
    """Each endpoint: two files in one field, a URL in the field, GET, an unknown query parameter, a PNG
    decompression bomb, the other medium (audio to an image endpoint, an image to /transcribe), a header-only WAV:
    a 4xx JSON error with a message. A file name with `../` is only a name: answered. Every 200 is logged."""
    import soundfile as sf

    from lifecycle.data import rows_of_split

    def good(task: str) -> bytes:
        paths = promoted_all[task][0]
        return (paths.raw / rows_of_split(paths.split_manifest, "test")[0]["path"]).read_bytes()

    bomb = io.BytesIO()
    Image.new("L", (20_000, 20_000)).save(bomb, format="PNG")  # compresses to ~20 kB; 400 MB of pixels
    header_only = io.BytesIO()
    sf.write(header_only, np.zeros(0, np.int16), 16_000, format="WAV", subtype="PCM_16")
    wav, png = good("asr"), good("classify")
    endpoints = {"classify": "image", "detect": "image", "read_text": "image", "transcribe": "audio"}
    tasks = {"classify": "classify", "detect": "detect", "read_text": "ocr", "transcribe": "asr"}
    with httpx.Client(timeout=60) as client:
        for endpoint, field in endpoints.items():
            url, data = f"{server.url}/{endpoint}", good(tasks[endpoint])
            other = png if field == "audio" else wav
            cases = {
                "two files in one field": dict(files=[(field, ("a", data)), (field, ("b", data))]),
                "a URL instead of a file": dict(data={field: "http://127.0.0.1:9/x.png"}, files={"x": ("x", b"x")}),
                "unknown query parameter": dict(files={field: ("a", data)}, params={"colour": "red"}),
                "decompression bomb": dict(files={field: ("bomb.png", bomb.getvalue())}),
                "the other medium": dict(files={field: ("other", other)}),
                "header-only WAV": dict(files={field: ("empty.wav", header_only.getvalue())}),
            }
            for name, kwargs in cases.items():
                response = client.post(url, **kwargs)
                assert 400 <= response.status_code < 500, (endpoint, name, response.status_code, response.text)
                assert response.json()["error"], (endpoint, name)
            response = client.get(url)
            assert response.status_code == 405 and "POST" in response.json()["error"], (endpoint, response.text)
            before = len(log_lines(server)) if endpoint == "classify" else 0
            dotted = client.post(url, files={field: ("../../etc/passwd", data)})
            assert dotted.status_code == 200, (endpoint, dotted.text)
            if endpoint == "classify":
                assert len(log_lines(server)) == before + 1


def test_every_endpoint_is_in_the_openapi_document_and_bentoml_client_calls_it(server, promoted_all, tmp_path):
    """/docs.json (the Swagger page at /) describes each task route: its multipart file field and media types,
    the answer's schema and the 4xx errors; `bentoml.SyncHTTPClient` finds each one in /schema.json, posts a file
    and gets the answer a raw multipart POST gets, which fits the documented schema; a URL given in place of the
    file is refused with a JSON error, not fetched."""
    import bentoml
    import jsonschema
    from bentoml.exceptions import BentoMLException

    from lifecycle.data import rows_of_split

    tasks = {"classify": "classify", "detect": "detect", "read_text": "ocr", "transcribe": "asr"}
    fields = {"classify": "image", "detect": "image", "read_text": "image", "transcribe": "audio"}
    docs = httpx.get(f"{server.url}/docs.json", timeout=30).json()
    assert "swagger" in httpx.get(f"{server.url}/", timeout=30).text.lower()
    client = bentoml.SyncHTTPClient(server.url, timeout=60)
    assert set(tasks) <= set(client.endpoints)
    for endpoint, task in tasks.items():
        field, post = fields[endpoint], docs["paths"][f"/{endpoint}"]["post"]
        form = post["requestBody"]["content"]["multipart/form-data"]
        assert form["schema"]["required"] == [field] and form["schema"]["properties"][field]["format"] == "binary"
        assert form["encoding"][field]["contentType"].startswith("audio/" if field == "audio" else "image/")
        for code in ("400", "413", "415"):
            assert post["responses"][code]["content"]["application/json"]["schema"]["required"] == ["error"]
        schema = post["responses"]["200"]["content"]["application/json"]["schema"]
        paths = promoted_all[task][0]
        row = rows_of_split(paths.split_manifest, "test")[0]
        upload = tmp_path / Path(row["path"]).name
        upload.write_bytes((paths.raw / row["path"]).read_bytes())
        raw = httpx.post(f"{server.url}/{endpoint}", files={field: (upload.name, upload.read_bytes())}, timeout=60)
        assert raw.status_code == 200, raw.text
        called = getattr(client, endpoint)(**{field: upload})  # client.classify(image=Path(...))
        jsonschema.validate(called, schema)
        jsonschema.validate(raw.json(), schema)
        assert _same(called, raw.json(), TOLERANCE), (endpoint, called, raw.json())
        with pytest.raises(BentoMLException) as refused:
            client.call(endpoint, **{field: "http://127.0.0.1:9/input.png"})
        assert 400 <= refused.value.error_code < 500 and json.loads(refused.value.message)["error"], (
            refused.value.message
        )
    client.close()


def test_a_schema_driven_fuzz_run_finds_no_5xx_and_no_answer_off_its_schema(server, promoted_all):
    """bench/fuzz.py (schemathesis over /docs.json's task routes), 15 generated requests per route: no 5xx, and
    every answer, error or not, has the status, media type and JSON the document says."""
    from bench.fuzz import fuzz

    assert fuzz(server.url, ["classify", "detect", "ocr", "asr"], examples=15) == 4


def test_task_routes_are_left_out_of_tracing_and_nothing_else_is():
    from opentelemetry.util.http import ExcludeList

    from lifecycle.service import untraced_routes

    excluded = ExcludeList(untraced_routes(["classify", "detect", "ocr", "asr"]))
    base = "http://127.0.0.1:3000"
    for path in ("/classify", "/detect?mask=true", "/read_text", "/transcribe"):
        assert excluded.url_disabled(base + path), path
    for path in ("/healthz", "/metrics", "/docs.json", "/classify_v2", "/x/transcribe/y"):
        assert not excluded.url_disabled(base + path), path


def _through_timeout(app_body: Any, timeout: float, requests: int = 1) -> tuple[list[httpx.Response], int]:
    """Requests through `AnsweredTimeout` around a one-route app, and the futures still alive afterwards."""
    import asyncio
    import gc

    from starlette.applications import Starlette
    from starlette.routing import Route

    from lifecycle.webserver import AnsweredTimeout

    app = AnsweredTimeout(Starlette(routes=[Route("/", app_body, methods=["POST"])]), timeout)

    async def run() -> tuple[list[httpx.Response], int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers = [await client.post("/") for _ in range(requests)]
        gc.collect()
        return answers, sum(issubclass(type(o), asyncio.Future) for o in gc.get_objects())

    return asyncio.run(run())


def test_the_traffic_timeout_lets_go_of_each_answered_request():
    from starlette.responses import JSONResponse

    async def quick(request: Any) -> JSONResponse:
        return JSONResponse({"ok": True})

    _, before = _through_timeout(quick, timeout=60, requests=1)
    answers, after = _through_timeout(quick, timeout=60, requests=200)
    assert all(a.status_code == 200 and a.json() == {"ok": True} for a in answers)
    assert after - before < 10  # BentoML's own middleware keeps one future per request for the whole 60 s


def test_the_traffic_timeout_still_answers_504_and_an_app_that_fails_is_not_waited_out():
    import asyncio

    from starlette.responses import JSONResponse

    async def slow(request: Any) -> JSONResponse:
        await asyncio.sleep(5)
        return JSONResponse({"ok": True})

    (answer,), _ = _through_timeout(slow, timeout=0.2)
    assert answer.status_code == 504 and "0.2 seconds" in answer.json()["error"]

    async def broken(request: Any) -> JSONResponse:
        raise RuntimeError("boom")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="boom"):  # the transport raises what the app raised, at once
        _through_timeout(broken, timeout=30)
    assert time.monotonic() - started < 5


def test_bentoml_builds_the_answered_timeout_for_the_service():
    from bentoml._internal.server.http import traffic

    from lifecycle.webserver import AnsweredTimeout, use_answered_timeout

    original = traffic.TimeoutMiddleware
    try:
        use_answered_timeout()
        from bentoml._internal.server.base_app import BaseAppFactory

        factory_class = type("Factory", (BaseAppFactory,), {"name": "test"})
        factory = factory_class.__new__(factory_class)
        factory.timeout, factory.max_concurrency = 60, None
        assert [m.cls for m in factory.middlewares] == [AnsweredTimeout]
    finally:
        traffic.TimeoutMiddleware = original


def _read_upload(chunks: list[bytes], content_type: str = "multipart/form-data; boundary=b", max_mb: float = 1) -> Any:
    """`read_upload` of a body arriving in `chunks` without a Content-Length: (bytes, file name), or the InvalidInput
    it raised; and how many chunks it had read by then."""
    import asyncio
    from types import SimpleNamespace

    from starlette.requests import Request

    from lifecycle.samples import InvalidInput
    from lifecycle.webserver import read_upload

    sent = 0

    async def receive() -> dict:
        nonlocal sent
        sent += 1
        more = sent < len(chunks)
        return {"type": "http.request", "body": chunks[sent - 1] if sent <= len(chunks) else b"", "more_body": more}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"content-type", content_type.encode())],
    }
    try:
        return asyncio.run(read_upload(Request(scope, receive), "image", SimpleNamespace(max_upload_mb=max_mb))), sent
    except InvalidInput as e:
        return e, sent


def _multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    body = b""
    for name, filename, data in parts:
        file = f'; filename="{filename}"' if filename is not None else ""
        body += f'--b\r\nContent-Disposition: form-data; name="{name}"{file}\r\n\r\n'.encode() + data + b"\r\n"
    return body + b"--b--\r\n"


def test_an_upload_is_read_whole_across_chunks_and_refused_as_soon_as_it_outgrows_the_limit():
    data = bytes(range(256)) * 40
    body = _multipart(("note", None, b"hi"), ("image", "../x.png", data))
    (read, filename), _ = _read_upload([body[i : i + 7] for i in range(0, len(body), 7)])
    assert (read, filename) == (data, "../x.png")

    big = _multipart(("image", "big.png", b"\0" * (3 * 2**20)))  # no Content-Length: only the stream tells
    chunks = [big[i : i + 2**16] for i in range(0, len(big), 2**16)]
    error, read_chunks = _read_upload(chunks, max_mb=1)
    assert error.status == 413 and "'big.png' is over the 1 MB limit" in str(error)
    assert read_chunks < len(chunks) / 2  # refused on the way, not after reading it all


def test_malformed_and_oversized_multipart_bodies_are_400s_that_say_why():
    png = b"\x89PNG"
    cases = {
        "two files": ([_multipart(("image", "a", png), ("image", "b", png))], "holds 2 values; send one file"),
        "a text field": ([_multipart(("image", None, b"http://127.0.0.1:9/x.png"))], "'image' is not a file"),
        "missing": ([_multipart(("picture", "a.png", png))], "'image' is missing (fields present: 'picture')"),
        "cut short": ([_multipart(("image", "a.png", png * 100))[:200]], "ends inside the part 'image'"),
        "too many fields": ([_multipart(*[(f"f{i}", None, b"x") for i in range(17)])], "more than 16 fields"),
        "too many files": ([_multipart(*[(f"f{i}", "a", png) for i in range(5)])], "more than 4 files"),
        "a header too long": (
            [b"--b\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\nx\r\n--b--\r\n"],
            "malformed multipart body",
        ),
        "no name": ([b'--b\r\nContent-Disposition: form-data; filename="a"\r\n\r\nx\r\n--b--\r\n'], "gives no name"),
    }
    for name, (chunks, message) in cases.items():
        error, _ = _read_upload(chunks)
        assert error.status == 400 and message in str(error), (name, error)
    error, _ = _read_upload([b""], content_type="multipart/form-data")
    assert error.status == 400 and "names no boundary" in str(error)
