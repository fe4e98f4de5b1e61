"""Copy the headline tables of a generated report.md into the README's "## Report" section."""
from __future__ import annotations

import re
from pathlib import Path

from .document import HEADLINE_END, HEADLINE_START

SECTION_TITLE = "## Report"
INTRO = (
    "`python -m gradverify report` measures, on your machine, how accurate and how fast each way of "
    "differentiating is on the document's examples (the seed's three worked examples) and writes it into the "
    "git-ignored `reports/latest/` (`--quick` for a run of a few minutes, `--out DIR` to choose the folder). "
    "The committed run is [reports/report.md](reports/report.md) ([HTML](reports/report.html), data in "
    "`reports/*.csv` and `reports/results.json`), refreshed with `--out reports`; its headline:"
)


def headline_tables(report_markdown: str) -> list:
    """The blocks of ``report_markdown`` between the headline markers, in order."""
    pattern = re.escape(HEADLINE_START) + r"\n(.*?)\n" + re.escape(HEADLINE_END)
    return re.findall(pattern, report_markdown, flags=re.S)


def report_section(report_markdown: str) -> str:
    """The README's "## Report" section for ``report_markdown`` (ends with a newline)."""
    header = dict(re.findall(r"^\| (command|date|CPU) \| (.*) \|$", report_markdown, flags=re.M))
    made = f"Made by `{header['command']}` on {header['date']}; {header['CPU']}." if len(header) == 3 else ""
    return "\n\n".join([SECTION_TITLE, INTRO, *headline_tables(report_markdown), made]).rstrip() + "\n"


def update_readme(report_path: Path, readme_path: Path) -> None:
    """Replace (or append) the README's "## Report" section with the report's headline tables."""
    readme = readme_path.read_text()
    section = report_section(report_path.read_text())
    pattern = re.compile(r"^## Report\n.*?(?=^## |\Z)", flags=re.S | re.M)
    if pattern.search(readme):
        updated = pattern.sub(lambda _: section + "\n", readme, count=1)
    else:
        updated = readme.rstrip() + "\n\n" + section
    readme_path.write_text(updated.rstrip() + "\n")
