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
