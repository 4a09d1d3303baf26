"""The HTML writer: one self-contained page (inline CSS, figures as base64 data URIs).

The output is well-formed XHTML-style markup (every element closed, only XML's predefined
entities), so it parses with both browsers and :mod:`xml.etree`. Text is escaped with
:func:`html.escape`; no template engine is needed.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from string import Template
from typing import Callable

from .doc import Block, Document, Figure, Heading, Items, Table, Text

__all__ = ["render_html"]

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2330;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #2b5c8a; padding-bottom: 0.2em; }
h2 { font-size: 1.3em; color: #2b5c8a; margin-top: 2em; border-bottom: 1px solid #d5dce5; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; }
nav a, a { color: #2b5c8a; text-decoration: none; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.86em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border: 1px solid #d5dce5; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #eef2f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #f7f9fb; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #e3e7ed; }
figcaption { font-size: 0.85em; color: #4a5568; }
p.absent { color: #8a5a00; background: #fff7e6; padding: 0.4em 0.7em; border-left: 3px solid #e0a030; }
"""

_PAGE = Template("""<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" lang="en">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<title>$title</title>
<style>$style</style>
</head>
<body>
<h1>$title</h1>
$lead
<nav><ul>
$nav
</ul></nav>
$body
</body>
</html>
""")


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _table(t: Table) -> str:
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{_e(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in t.headers) + "</tr></thead>")
    out.append("<tbody>")
    for row in t.rows:
        cells = "".join(f'<td class="num">{_e(c)}</td>' if num else f"<td>{_e(c)}</td>"
                        for c, num in zip(row, t.numeric))
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _figure(f: Figure, source: Callable[[str], Path]) -> str:
    data = base64.b64encode(source(f.name).read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(f.caption)}" />'
            f"<figcaption>{_e(f.caption)}</figcaption></figure>")


def _block(block: Block, source: Callable[[str], Path]) -> str:
    if isinstance(block, Text):
        cls = ' class="absent"' if block.text.startswith("Not in this report") else ""
        return f"<p{cls}>{_e(block.text)}</p>"
    if isinstance(block, Heading):
        return f"<h3>{_e(block.text)}</h3>"
    if isinstance(block, Items):
        return "<ul>" + "".join(f"<li>{_e(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return _figure(block, source)
    raise TypeError(f"unknown block {type(block).__name__}")


def render_html(doc: Document, source: Callable[[str], Path]) -> str:
    """The page of ``doc``; ``source(name)`` gives the PNG file to embed for a figure name."""
    body = []
    for section in doc.sections:
        body.append(f'<section id="{_e(section.key)}">\n<h2>{_e(section.title)}</h2>')
        body.extend(_block(b, source) for b in section.blocks)
        body.append("</section>")
    nav = "\n".join(f'<li><a href="#{_e(s.key)}">{_e(s.title)}</a></li>' for s in doc.sections)
    return _PAGE.substitute(title=_e(doc.title), style=_STYLE, lead="\n".join(_block(b, source) for b in doc.lead),
                            nav=nav, body="\n".join(body))
