"""The report as a document: sections of text, tables and images, written as Markdown, HTML, JSON and CSV.

The HTML is rendered from the Markdown (markdown-it, which rich already
depends on), so the two always show the same cells; images are inlined as
base64 so report.html opens offline on its own.
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

HEADLINE_START = "<!-- headline -->"
HEADLINE_END = "<!-- /headline -->"
"""Markers around the tables that the README's "## Report" section copies (see :mod:`.readme`)."""

HTML_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.45; color: #1f2328; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfbfc; }
img { max-width: 100%; }
code { background: #f6f8fa; padding: 0.1rem 0.3rem; }
"""


@dataclass
class Table:
    """A table of already formatted cells; ``collapsed`` tables sit in a <details> block."""

    frame: pd.DataFrame
    caption: str = ""
    collapsed: bool = False
    headline: bool = False


@dataclass
class Image:
    """A PNG written next to the report (``filename`` relative to the output folder)."""

    filename: str
    alt: str


@dataclass
class Section:
    """A titled part of the report: paragraphs (Markdown strings), tables and images in order."""

    title: str
    blocks: list = field(default_factory=list)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``frame``'s cells (index not shown), text left, numbers right."""

    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    def looks_numeric(column) -> bool:
        return any(re.fullmatch(r"[-+0-9.e×%–]+", cell(v)) for v in frame[column])

    numeric = [looks_numeric(column) for column in frame.columns]
    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---:" if right else "---" for right in numeric) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _table_markdown(table: Table) -> str:
    body = markdown_table(table.frame)
    if table.collapsed:
        summary = table.caption or "details"
        return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"
    text = f"{table.caption}\n\n{body}" if table.caption else body
    return f"{HEADLINE_START}\n{text}\n{HEADLINE_END}" if table.headline else text


def to_markdown(title: str, header: dict, sections: list) -> str:
    """The whole report as Markdown."""
    parts = [f"# {title}", markdown_table(pd.DataFrame({"": list(header), "value": list(header.values())}))]
    for section in sections:
        parts.append(f"## {section.title}")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(_table_markdown(block))
            elif isinstance(block, Image):
                parts.append(f"![{block.alt}]({block.filename})")
            else:
                parts.append(block)
    return "\n\n".join(parts) + "\n"


def to_html(markdown: str, title: str, folder: Path) -> str:
    """``markdown`` as one self-contained HTML page; images in ``folder`` are inlined."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)

    def inline(match):
        data = base64.b64encode((folder / match.group(1)).read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^":]+\.png)"', inline, body)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
        f"<style>{HTML_STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


def write_data(folder: Path, header: dict, results: dict) -> list:
    """``results.json`` (header and every result table) and one CSV per table; returns the paths written."""
    written = []
    tables = {}
    for name, frame in results.items():
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        written.append(path)
        tables[name] = json.loads(frame.to_json(orient="records"))
    path = folder / "results.json"
    path.write_text(json.dumps({"header": header, "results": tables}, indent=1) + "\n")
    written.append(path)
    return written
