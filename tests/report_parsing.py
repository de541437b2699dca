"""Reading a rendered report back in tests: sections by heading, markdown tables as dicts."""

from __future__ import annotations

import re


def section(md: str, heading: str) -> str:
    """From the line ``heading`` to the next heading of the same or a higher level."""
    lines = md.splitlines()
    start = lines.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    end = len(lines)
    for i in range(start + 1, len(lines)):
        m = re.match(r"^(#+) ", lines[i])
        if m and len(m.group(1)) <= level:
            end = i
            break
    return "\n".join(lines[start:end])


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in ``text``: a list of rows, each a dict by header."""
    found: list[list[dict[str, str]]] = []
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in block]
            found.append([dict(zip(cells[0], row, strict=True)) for row in cells[2:]])
            block = []
    return found
