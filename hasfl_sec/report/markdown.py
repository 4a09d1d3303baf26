"""The Markdown writer: GitHub-flavoured tables, figures linked relatively (``figures/x.png``)."""

from __future__ import annotations

import pandas as pd

from .doc import Block, Document, Figure, Heading, Items, Table, Text, table

__all__ = ["render_markdown", "markdown_table"]


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> str:
    lines = []
    if t.caption:
        lines += [f"**{_cell(t.caption)}**", ""]
    lines.append("| " + " | ".join(_cell(h) for h in t.headers) + " |")
    lines.append("|" + "|".join(" ---: " if num else " --- " for num in t.numeric) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def _block(block: Block) -> str:
    if isinstance(block, Text):
        return f"> {block.text}" if block.text.startswith("Not in this report") else block.text
    if isinstance(block, Heading):
        return f"### {block.text}"
    if isinstance(block, Items):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        alt = block.caption.replace("[", "(").replace("]", ")")
        return f"![{alt}]({block.name})\n\n*{block.caption}*"
    raise TypeError(f"unknown block {type(block).__name__}")


def render_markdown(doc: Document) -> str:
    """The Markdown text of ``doc``."""
    parts = [f"# {doc.title}", *(_block(b) for b in doc.lead)]
    parts.append("Contents: " + " · ".join(f"[{s.title}](#{s.title.lower().replace(' ', '-')})"
                                            for s in doc.sections))
    for section in doc.sections:
        parts.append(f"## {section.title}")
        parts.extend(_block(b) for b in section.blocks)
    return "\n\n".join(parts) + "\n"


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub Markdown table, numbers formatted as in reports (for benchmarks)."""
    return _table(table(frame, list(frame.columns)))
