"""Pages people open in a browser, with no network: one inline stylesheet, no scripts, no external assets.

`external_references` finds what a page would fetch from the network (scripts, stylesheets, images, frames,
CSS url()/@import); plain links are not fetched, so they are allowed."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from html import escape
from html.parser import HTMLParser

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #146c2e; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
img { max-width: 100%; border: 1px solid #ddd; } code { background: #f5f5f5; padding: 0 .2rem; }
figure { display: inline-block; margin: .5rem; vertical-align: top; } figcaption { font-size: .85rem; }
"""


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A whole HTML document: `body` is trusted markup (built with `esc`, `table`, `link`)."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def link(href: str, text: object) -> str:
    return f"<a href='{esc(href)}'>{esc(text)}</a>"


def status(ok: bool, yes: str = "passed", no: str = "failed") -> str:
    return f"<span class='{'ok' if ok else 'bad'}'>{yes if ok else no}</span>"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], css_class: str = "") -> str:
    """Cells are trusted markup; a cell starting with a number is aligned right."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td class='num'>{c}</td>" if _numeric(c) else f"<td>{c}</td>" for c in row) + "</tr>\n"
        for row in rows
    )
    return f"<table class='{esc(css_class)}'><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def _numeric(cell: str) -> bool:
    return bool(re.fullmatch(r"-?[0-9][0-9.,eE+-]*%?", cell))


_FETCHED = {"script": "src", "img": "src", "iframe": "src", "link": "href", "source": "src", "embed": "src"}
_REMOTE = re.compile(r"^\s*(https?:|//)", re.IGNORECASE)
_CSS = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+(?:url\(\s*)?['"]?([^'");\s]+)""", re.IGNORECASE)


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        attr = _FETCHED.get(tag)
        if attr and (url := values.get(attr)) and _REMOTE.match(url):
            self.refs.append(f"<{tag} {attr}={url}>")
        if style := values.get("style"):
            self.refs += _css_refs(style)
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.refs += _css_refs(data)


def _css_refs(css: str) -> list[str]:
    urls = (a or b for a, b in _CSS.findall(css))
    return [f"css {url}" for url in urls if _REMOTE.match(url)]


def external_references(document: str) -> list[str]:
    """What opening `document` would fetch over the network: remote script/img/iframe src, link href, CSS url()."""
    parser = _Refs()
    parser.feed(document)
    return parser.refs


COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
Point = tuple[float, float, str | None]  # x, y, and the page the point links to (or None)


def line_chart(title: str, series: dict[str, list[Point]], x_label: str, width: int = 520, height: int = 240) -> str:
    """An inline SVG line chart, one line per series; a point with a link is clickable. Drawn here, not by a
    plotting library in the browser, so it needs no script and no network."""
    points = [p for line in series.values() for p in line]
    if not points:
        return f"<p>{esc(title)}: no data yet.</p>"
    left, right, top, bottom = 56, 12, 28, 36
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def at(x: float, y: float) -> str:
        sx = left + (x - x0) / (x1 - x0) * (width - left - right)
        sy = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return f"{sx:.1f},{sy:.1f}"

    parts = [
        f"<svg width='{width}' height='{height}' role='img' class='chart'>",
        f"<title>{esc(title)}</title><text x='{left}' y='16' font-size='13' font-weight='600'>{esc(title)}</text>",
        f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' y2='{height - bottom}' stroke='#888'/>",
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' stroke='#888'/>",
        f"<text x='{left - 4}' y='{top + 4}' font-size='11' text-anchor='end'>{y1:.3g}</text>",
        f"<text x='{left - 4}' y='{height - bottom}' font-size='11' text-anchor='end'>{y0:.3g}</text>",
        f"<text x='{left}' y='{height - 20}' font-size='11'>{x0:.4g}</text>",
        f"<text x='{width - right}' y='{height - 20}' font-size='11' text-anchor='end'>{x1:.4g}</text>",
        f"<text x='{(left + width) // 2}' y='{height - 4}' font-size='11' text-anchor='middle'>{esc(x_label)}</text>",
    ]
    for i, (name, line) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(at(x, y) for x, y, _ in line)
        parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{coords}'/>")
        for x, y, href in line:
            cx, cy = at(x, y).split(",")
            dot = f"<circle cx='{cx}' cy='{cy}' r='3' fill='{color}'><title>{esc(name)}: {y:.4g}</title></circle>"
            parts.append(f"<a href='{esc(href)}'>{dot}</a>" if href else dot)
        parts.append(
            f"<text x='{width - right}' y='{top + 14 * i}' font-size='11' fill='{color}' "
            f"text-anchor='end'>{esc(name)}</text>"
        )
    return "".join(parts) + "</svg>"
