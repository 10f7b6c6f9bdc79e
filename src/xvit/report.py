"""A self-contained static HTML report: no scripts, no network resources, PNGs by relative path."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from xvit.pipeline import ClassScore, ImageRecord

__all__ = ["write_html_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; margin: 0 0 .4em; }
table { border-collapse: collapse; font-size: .9em; }
td, th { padding: .15em .6em; text-align: left; border-bottom: 1px solid #ddd; }
.card { display: flex; gap: 1.2em; flex-wrap: wrap; border-top: 1px solid #ccc; padding: 1em 0; }
.maps { display: flex; gap: .8em; flex-wrap: wrap; }
figure { margin: 0; width: 180px; font-size: .8em; }
figure img, .input img { width: 180px; image-rendering: pixelated; }
.cite { color: #666; font-size: .9em; }
.grid img { max-width: 100%; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; font-size: .9em; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
"""


def write_html_report(out_dir: str | os.PathLike, records: Sequence[ImageRecord], *,
                      grids: Sequence[str] = (), citations: Mapping[str, str] | None = None,
                      summary: Mapping[str, Any] | None = None, title: str = "xvit explanations") -> Path:
    """Write ``out_dir/index.html`` and return its path.

    Args:
        out_dir: the folder that holds the PNGs; every path below is relative to it.
        records: the pipeline's written records (:func:`xvit.pipeline.write_batch`), one per image; ``group``
            (e.g. the sample variant) starts a new section.
        grids: comparison-grid PNG paths shown at the top.
        citations: method name -> citation; read from :func:`xvit.methods` when omitted.
        summary: key/value lines shown under the title (model, device, ...).
        title: the page title.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if citations is None:
        from xvit.methods import methods

        citations = {name: info.get("citation", "") for name, info in methods().items()}
    esc = html.escape
    parts = ["<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">",
             f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>"]
    if summary:
        parts.append("<dl class=\"meta\">" + "".join(
            f"<dt>{esc(str(k))}</dt><dd>{esc(str(v))}</dd>" for k, v in summary.items()) + "</dl>")
    used = list(dict.fromkeys(m for r in records for m in r.methods))
    if used:
        parts.append("<h2>Methods</h2>\n<table><tr><th>method</th><th>citation</th></tr>" + "".join(
            f"<tr><td>{esc(m)}</td><td class=\"cite\">{esc(citations.get(m, ''))}</td></tr>" for m in used)
            + "</table>")
        if any(m.signed for r in records for m in r.methods.values()):
            parts.append("<p class=\"cite\">Signed maps: red supports the explained class, "
                         "blue opposes it.</p>")
    if grids:
        parts.append("<h2>Comparison</h2>")
        parts.extend(f"<p class=\"grid\">{esc(Path(g).parent.name)}<br><img src=\"{_src(g)}\" "
                     "alt=\"comparison grid\"></p>" for g in grids)
    group = None
    for r in records:
        if r.group is not None and r.group != group:
            group = r.group
            parts.append(f"<h2>{esc(str(group))}</h2>")
        parts.append(_image_card(r, citations))
    parts.append("</body>\n</html>\n")
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index


def _src(path: str | os.PathLike) -> str:
    return html.escape(quote(Path(path).as_posix()))


def _class(c: ClassScore) -> str:
    return f"{html.escape(c.name)} ({c.probability:.3f})"


def _image_card(r: ImageRecord, citations: Mapping[str, str]) -> str:
    esc = html.escape
    name = esc(r.name)
    label = f"<br>true class: {esc(str(r.label))}" if r.label is not None else ""
    rows = "".join(f"<tr><td>{esc(c.name)}</td><td>{c.index}</td><td>{c.probability:.3f}</td></tr>" for c in r.top5)
    figures = "".join(
        f"<figure><img src=\"{_src(m.overlay)}\" alt=\"{esc(method)} map of {name}\">"
        f"<figcaption><b>{esc(method)}</b>{' (signed)' if m.signed else ''}<br>explains "
        f"{_class(m.target)}<br><span class=\"cite\">{esc(citations.get(method, ''))}</span>"
        "</figcaption></figure>"
        for method, m in r.methods.items())
    return (f"<div class=\"card\">\n<div class=\"input\"><h3>{name}</h3><img src=\"{_src(r.image)}\" "
            f"alt=\"{name}\"><p>predicted: <b>{_class(r.prediction)}</b>{label}</p>"
            f"<table><tr><th>top-5</th><th>index</th><th>p</th></tr>{rows}</table></div>\n"
            f"<div class=\"maps\">{figures}</div>\n</div>")
