"""A self-contained static HTML report: no scripts, no network resources, PNGs by relative path.

The page tells its story in sections (:class:`ReportSection`): what to look for, a one-line finding from a score
per method, and a matrix of overlays with one row per image and one column per method, so a column reads as one
method across images and a row as the methods on one image. Colour bars and citations appear once.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from xvit.pipeline import ClassScore, ImageRecord

__all__ = ["ReportSection", "write_html_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2.2em; border-bottom: 1px solid #ccc; }
p.look { background: #f4f6f8; border-left: 4px solid #6a8caf; padding: .4em .8em; }
p.finding { font-weight: 600; }
nav ol { margin: .3em 0; } .bars { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-end; }
.bars figure { margin: 0; font-size: .8em; } .bars img { height: 56px; }
table.matrix { border-collapse: collapse; font-size: .8em; }
table.matrix th, table.matrix td { padding: .25em; text-align: center; vertical-align: top;
  border-bottom: 1px solid #e3e3e3; }
table.matrix th { position: sticky; top: 0; background: #fff; }
table.matrix td.input { text-align: left; width: 140px; }
table.matrix img { width: 120px; image-rendering: pixelated; display: block; margin: 0 auto; }
table.matrix .pair { display: flex; gap: 3px; } table.matrix .pair img { width: 72px; }
table.matrix tfoot td { font-weight: 600; border-top: 2px solid #999; }
.small { color: #555; font-size: .85em; } sup a { text-decoration: none; }
table.scores td, table.scores th { padding: .1em .6em; text-align: left; }
details { margin: .6em 0; } details img { max-width: 100%; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; font-size: .9em; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
ol.refs li { margin-bottom: .3em; font-size: .9em; }
"""


@dataclass(frozen=True)
class ReportSection:
    """One section of the report.

    Attributes:
        key: the section's anchor (``single``, ``pair``, ``spurious``).
        title: its heading.
        look_for: what to look for, in a sentence or two.
        records: the written records (:func:`xvit.pipeline.write_batch`), one row per image; every explained
            class of a record is shown side by side in its method's cell.
        model: the model spec the section explains.
        scores: method -> score over the section's images, shown under each method's column (NaN: not defined).
        score_label: what the score is (shown as the row's label and in the finding).
        finding: one line saying what the scores show.
        grids: comparison-grid PNGs of the section (with their colour bars), behind a disclosure.
        notes: further paragraphs (HTML-escaped).
    """

    key: str
    title: str
    look_for: str
    records: Sequence[ImageRecord]
    model: str = ""
    scores: Mapping[str, float] = field(default_factory=dict)
    score_label: str = ""
    finding: str = ""
    grids: Sequence[str] = ()
    notes: Sequence[str] = ()


def write_html_report(out_dir: str | os.PathLike, sections: Sequence[ReportSection], *, title: str = "xvit report",
                      intro: Sequence[str] = (), colour_bars: Mapping[str, str] | None = None,
                      citations: Mapping[str, str] | None = None, notes: Mapping[str, str] | None = None,
                      summary: Mapping[str, Any] | None = None) -> Path:
    """Write ``out_dir/index.html`` and return its path.

    Args:
        out_dir: the folder that holds the PNGs; every path is relative to it.
        sections: the story, in order; each gets an entry in the table of contents.
        title: the page title.
        intro: paragraphs under the title (HTML-escaped).
        colour_bars: caption -> colour-bar PNG path, shown once in the introduction.
        citations: name -> citation for the reference list (methods and metrics); the methods' citations are read
            from :func:`xvit.methods` when omitted.
        notes: heading -> paragraph, a "Notes" section after the story (HTML-escaped).
        summary: key/value lines of the run details at the end (model, device, time, ...).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    methods = list(dict.fromkeys(m for s in sections for r in s.records for m in r.methods))
    if citations is None:
        from xvit.methods import methods as registered

        info = registered()
        citations = {m: info[m].get("citation", "") for m in methods if m in info}
    refs = {name: i + 1 for i, name in enumerate(citations)}
    esc = html.escape
    toc = [(s.key, s.title) for s in sections]
    if notes:
        toc.append(("notes", "Notes"))
    toc += [("references", "References"), ("details", "Run details")]
    parts = ["<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">",
             f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>"]
    parts += [f"<p>{esc(p)}</p>" for p in intro]
    parts.append("<nav><b>Contents</b><ol>" + "".join(f"<li><a href=\"#{esc(k)}\">{esc(t)}</a></li>" for k, t in toc)
                 + "</ol></nav>")
    if colour_bars:
        parts.append("<div class=\"bars\">" + "".join(
            f"<figure><img src=\"{_src(path)}\" alt=\"colour bar: {esc(caption)}\"><figcaption>{esc(caption)}"
            "</figcaption></figure>" for caption, path in colour_bars.items()) + "</div>")
    for s in sections:
        parts.append(_section(s, refs))
    if notes:
        parts.append("<h2 id=\"notes\">Notes</h2>")
        parts += [f"<p><b>{esc(h)}.</b> {esc(text)}</p>" for h, text in notes.items()]
    parts.append("<h2 id=\"references\">References</h2>\n<ol class=\"refs\">" + "".join(
        f"<li id=\"ref-{refs[name]}\"><b>{esc(name)}</b>: {esc(cite)}</li>" for name, cite in citations.items())
        + "</ol>")
    parts.append("<h2 id=\"details\">Run details</h2>")
    if summary:
        parts.append("<dl class=\"meta\">" + "".join(
            f"<dt>{esc(str(k))}</dt><dd>{esc(str(v))}</dd>" for k, v in summary.items()) + "</dl>")
    parts.append("</body>\n</html>\n")
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index


def _src(path: str | os.PathLike) -> str:
    return html.escape(quote(Path(path).as_posix()))


def _class(c: ClassScore) -> str:
    return f"{html.escape(c.name)} ({c.probability:.2f})"


def _score(v: float | None) -> str:
    return "–" if v is None or v != v else f"{v:.2f}"


def _section(s: ReportSection, refs: Mapping[str, int]) -> str:
    esc = html.escape
    methods = list(dict.fromkeys(m for r in s.records for m in r.methods))
    head = [f"<h2 id=\"{esc(s.key)}\">{esc(s.title)}</h2>", f"<p class=\"look\">{esc(s.look_for)}</p>"]
    if s.model:
        head.append(f"<p class=\"small\">Model: <code>{esc(s.model)}</code>; {len(s.records)} images.</p>")
    if s.finding:
        head.append(f"<p class=\"finding\">{esc(s.finding)}</p>")
    header = "".join(
        f"<th>{esc(m)}" + (f"<sup><a href=\"#ref-{refs[m]}\">[{refs[m]}]</a></sup>" if m in refs else "") + "</th>"
        for m in methods)
    rows = "".join(_row(r, methods) for r in s.records)
    foot = ""
    if s.scores:
        label = esc(s.score_label) + (f"<sup><a href=\"#ref-{refs[s.score_label]}\">[{refs[s.score_label]}]</a>"
                                      "</sup>" if s.score_label in refs else "")
        foot = (f"<tfoot><tr><td class=\"input\">{label}</td>"
                + "".join(f"<td>{_score(s.scores.get(m))}</td>" for m in methods) + "</tr></tfoot>")
    table = (f"<table class=\"matrix\"><thead><tr><th>image</th>{header}</tr></thead>"
             f"<tbody>{rows}</tbody>{foot}</table>")
    tail = [f"<p>{esc(n)}</p>" for n in s.notes]
    if s.grids:
        tail.append("<details><summary>The same maps as comparison grids, with colour bars</summary>" + "".join(
            f"<img src=\"{_src(g)}\" alt=\"comparison grid of {esc(s.title)}\">" for g in s.grids) + "</details>")
    return "\n".join([*head, table, *tail])


def _row(r: ImageRecord, methods: Sequence[str]) -> str:
    esc = html.escape
    name = esc(r.name)
    label = f"true class: {esc(str(r.label))}<br>" if r.label is not None else ""
    cells = []
    for m in methods:
        mrec = r.methods.get(m)
        if mrec is None:
            cells.append("<td>–</td>")
            continue
        imgs = "".join(
            f"<figure style=\"margin:0\"><img src=\"{_src(t.overlay)}\" alt=\"{esc(m)} map of {name} for "
            f"{esc(t.target.name)}\">" + (f"<figcaption>{esc(t.target.name)}</figcaption>"
                                         if len(mrec.explained) > 1 else "") + "</figure>"
            for t in mrec.explained if t.overlay is not None)
        cells.append(f"<td><div class=\"pair\">{imgs}</div></td>" if len(mrec.explained) > 1 else f"<td>{imgs}</td>")
    return (f"<tr><td class=\"input\"><img src=\"{_src(r.image)}\" alt=\"{name}\">{name}<br>{label}"
            f"predicted: <b>{_class(r.prediction)}</b></td>{''.join(cells)}</tr>")
