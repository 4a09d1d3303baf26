"""The Markdown writer: GitHub-flavoured tables, figures linked relatively (``figures/x.png``).

Every text of the document is data or prose, never Markdown: names a user chose (runs, fleets,
devices, evaluations, arms) reach titles, prose and table cells, so the writer escapes every
character Markdown would read as markup (:func:`escape`) and adds its own markup around it, as
the HTML writer escapes HTML.
"""

from __future__ import annotations

import re

import pandas as pd

from .doc import Block, Document, Figure, Heading, Items, Table, Text, table

__all__ = ["render_markdown", "markdown_table", "escape"]

#: Characters that are Markdown (CommonMark, GitHub tables and strikethrough) anywhere in a line;
#: "<" starts raw HTML. Parentheses need no escape: a link needs the "]" before them.
_SPECIAL = frozenset("\\`*_[]<>|~")
#: What makes a block of its own at the start of a line: a heading, list, quote or ordered item.
_LEADING = re.compile(r"^(\s*)(#{1,6}(?=\s|$)|[-+*](?=\s)|>|\d+(?=[.)](?:\s|$)))")


def escape(text: str) -> str:
    """``text`` as literal Markdown: each markup character backslash-escaped, a leading block
    marker too, line breaks as spaces (a break inside a table cell or a heading would end it)."""
    flat = " ".join(str(text).splitlines())
    out = "".join("\\" + ch if ch in _SPECIAL else ch for ch in flat)
    match = _LEADING.match(out)
    if match and not match.group(2)[0].isdigit():
        out = f"{match.group(1)}\\{out[match.end(1):]}"
    elif match:  # "1." or "1)": escape the punctuation after the number
        end = match.end(2)
        out = f"{out[:end]}\\{out[end:]}"
    return out


def _table(t: Table) -> str:
    lines = []
    if t.caption:
        lines += [f"**{escape(t.caption)}**", ""]
    lines.append("| " + " | ".join(escape(h) for h in t.headers) + " |")
    lines.append("|" + "|".join(" ---: " if num else " --- " for num in t.numeric) + "|")
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def _block(block: Block) -> str:
    if isinstance(block, Text):
        text = escape(block.text)
        return f"> {text}" if block.text.startswith("Not in this report") else text
    if isinstance(block, Heading):
        return f"### {escape(block.text)}"
    if isinstance(block, Items):
        return "\n".join(f"- {escape(item)}" for item in block.items)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return f"![{escape(block.caption)}]({block.name})\n\n*{escape(block.caption)}*"
    raise TypeError(f"unknown block {type(block).__name__}")


def render_markdown(doc: Document) -> str:
    """The Markdown text of ``doc``."""
    parts = [f"# {escape(doc.title)}", *(_block(b) for b in doc.lead)]
    # section titles are the report's own words (their anchors are GitHub's, made from them)
    parts.append("Contents: " + " · ".join(f"[{s.title}](#{s.title.lower().replace(' ', '-')})"
                                            for s in doc.sections))
    for section in doc.sections:
        parts.append(f"## {section.title}")
        parts.extend(_block(b) for b in section.blocks)
    return "\n\n".join(parts) + "\n"


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub Markdown table, numbers formatted as in reports (for benchmarks)."""
    return _table(table(frame, list(frame.columns)))
