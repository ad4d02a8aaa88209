"""The reports as a person sees them: headless Chromium (Debian's `chromium`, installed by `make test` when it runs as
root) opens the report site, the Data Docs index and a validation page, and a drift report, with no network, and
the rendered DOM is checked: one index row per validation, one row per expectation, the drift table's rows."""

import json
import os
import re
import shutil
import stat
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import make_task
from lifecycle import registry
from lifecycle.monitoring import monitor_task
from lifecycle.site import rebuild
from lifecycle.stages.validate import run as validate
from lifecycle.traffic import send_traffic
from pages import assert_offline

pytestmark = pytest.mark.slow


def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    reason = "Debian's chromium is not installed (`make test` installs it when run as root: apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI never skips the browser test")
    pytest.skip(reason)


def rendered(page: Path | str, profile: Path) -> str:
    """The DOM after the page's scripts ran (Evidently draws its tables in React): a file, offline, or a URL."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page if isinstance(page, str) else page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


class Rows(HTMLParser):
    """The text of each rendered table row's cells, by the class of the table holding it (outside scripts)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[str] = []
        self.rows: dict[str, list[list[str]]] = {}
        self.cell: list[str] | None = None
        self.skip = False

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip = True
        elif tag == "table":
            self.tables.append(dict(attrs).get("class") or "")
        elif tag == "tr" and self.tables:
            self.rows.setdefault(self.tables[-1], []).append([])
        elif tag in ("td", "th") and self.tables:
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip = False
        elif tag == "table" and self.tables:
            self.tables.pop()
        elif tag in ("td", "th") and self.cell is not None:
            self.rows[self.tables[-1]][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None and not self.skip:
            self.cell.append(data)


def table_rows(dom: str, css_class: str | None = None) -> list[list[str]]:
    """The rows of the tables of class `css_class` (of every table when None)."""
    parser = Rows()
    parser.feed(dom)
    return [row for key, rows in parser.rows.items() if css_class is None or css_class in key.split() for row in rows]


def test_reports_render_offline_in_chromium(promoted, server, tmp_path):
    paths, params, stored = promoted
    chromium()
    validate(make_task(params), paths)
    assert send_traffic(make_task(params), paths, server.url, "invert")["200"] > 0
    decision = monitor_task("classify", paths.root / "params.yaml", paths.root)
    assert decision["report_html"], decision["reason"]
    rebuild(paths.root)
    reports = paths.root / "reports"
    profile = tmp_path / "profile"

    site = rendered(reports / "index.html", profile)
    runs = sorted(paths.drift_reports.glob("*.decision.json"))
    drift_rows = table_rows(site, "drift-runs")
    assert len(drift_rows) == len(runs) + 1 and drift_rows[-1][3] == decision["status"]  # header + one per run
    latest = json.loads((paths.reports("evaluate") / "metrics.json").read_text())["accuracy"]
    production = registry.production("classify").metadata["metrics"]["accuracy"]
    assert ["accuracy", f"{latest:.4f}", f"{production:.4f}"] in table_rows(site, "metrics")
    local = re.findall(r"(?:href|src)=['\"](?!#|https?:)([^'\"]+)", (reports / "index.html").read_text())
    assert "classify/promote/model_card.html" in local and "classify/validate/data_docs/index.html" in local
    assert [link for link in local if not (reports / link).exists()] == [], "every link of the site opens"

    docs = paths.reports("validate") / "data_docs"
    results = {p.stem: json.loads(p.read_text()) for p in sorted(docs.glob("validations/*.json"))}
    index_rows = table_rows(rendered(docs / "index.html", profile), "validations")[1:]
    assert sorted(r[0] for r in index_rows) == sorted(results) and all(r[1] == "passed" for r in index_rows)
    name, result = next(iter(results.items()))
    expectation_rows = table_rows(rendered(docs / f"validations/{name}.html", profile), "expectations")[1:]
    assert [r[0] for r in expectation_rows] == [e["expectation_config"]["type"] for e in result["results"]]

    report = paths.drift_reports / decision["report_html"]
    drift_table = {c: r for r in table_rows(rendered(report, profile)) for c in r if c in decision["scores"]}
    assert len(drift_table) == min(len(decision["scores"]), 10)  # Evidently shows ten rows a page
    for column, row in drift_table.items():  # each column's verdict as decided
        assert ("Detected" in row) == bool(decision["scores"][column].get("drifted")), row

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(report.stat().st_mode) == 0o666 & ~umask, "a teammate can open the drift report"
    assert_offline(reports)


def test_the_service_page_lists_every_task_endpoint_in_chromium(server, promoted_all, tmp_path):
    """The Swagger page at / as a browser renders it: each task's route is listed as an operation one can try."""
    dom = rendered(f"{server.url}/", tmp_path / "profile")
    routes = {"/classify", "/detect", "/read_text", "/transcribe"}
    listed = set(re.findall(r'data-path="(/[a-z_]+)"', dom))
    assert routes <= listed, sorted(listed)
    assert len(re.findall(r'class="opblock opblock-post', dom)) == len(routes), "each a POST operation to try"
