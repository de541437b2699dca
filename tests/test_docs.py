"""The docs stay true: generated tables are the code's, the README stays short and leads with
the commands, and every option, pattern and mechanism is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench_lib.record import FIELDS, schema_markdown
from bench_lib.vocab import MECHANISMS, PATTERNS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md")}


def _block(text: str, name: str) -> str:
    return text.split(f"<!-- {name}:start -->\n", 1)[1].split(f"<!-- {name}:end -->", 1)[0]


def test_schema_table_is_the_record_schema():
    block = _block(DOCS["measuring.md"], "schema")
    assert block.strip() == schema_markdown()
    for key in FIELDS:
        assert f"| `{key}` |" in block


def test_options_table_is_generated_from_the_axis_table():
    from bench_lib.measuring.session import OPTIONS, options_markdown

    block = _block(DOCS["options.md"], "options")
    assert block.strip() == options_markdown()
    for option in OPTIONS:
        assert f"| `{option.name}` |" in block


@pytest.mark.parametrize("name", [*PATTERNS, *MECHANISMS])
def test_docs_document_every_pattern_and_mechanism(name: str):
    assert f"| `{name}` |" in DOCS["options.md"]


def test_profile_case_counts_are_current():
    from bench_lib.measuring.sweep import PROFILES, Filters, generate

    for name, profile in PROFILES.items():
        row = re.search(rf"^\| `{name}` \|.*\| (\d+) \|$", DOCS["models.md"], re.MULTILINE)
        assert row, name
        assert int(row.group(1)) == len(generate(profile, Filters()).cases), name


def test_readme_is_short_and_leads_with_the_commands():
    lines = README.splitlines()
    assert len(lines) <= 300
    head = "\n".join(lines[:60])
    for command in (
        'python -m pip install "torch==2.13.0" -e ".[dev,models]"',
        "python -m pytest ",
        "python -m bench_lib report",
        "freeze-bench advise",
        "results/",
    ):
        assert command in head, command


def test_doc_links_resolve():
    for name, text in {"README.md": README, **{f"docs/{k}": v for k, v in DOCS.items()}}.items():
        base = ROOT if name == "README.md" else ROOT / "docs"
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (base / target).exists(), f"{name} links to missing {target}"


def _rewrite() -> None:
    """``PYTHONPATH=. python tests/test_docs.py``: write the generated tables, and each
    profile's case count, into the docs."""
    from bench_lib.measuring.session import options_markdown

    for name, block, text in (
        ("measuring.md", "schema", schema_markdown()),
        ("options.md", "options", options_markdown()),
    ):
        path = ROOT / "docs" / name
        doc = path.read_text(encoding="utf-8")
        head, rest = doc.split(f"<!-- {block}:start -->\n", 1)
        tail = rest.split(f"<!-- {block}:end -->", 1)[1]
        path.write_text(f"{head}<!-- {block}:start -->\n{text}\n<!-- {block}:end -->{tail}")
    from bench_lib.measuring.sweep import PROFILES, Filters, generate

    path = ROOT / "docs" / "models.md"
    doc = path.read_text(encoding="utf-8")
    for name, profile in PROFILES.items():
        count = len(generate(profile, Filters()).cases)
        doc = re.sub(rf"^(\| `{name}` \|.*\| )\d+( \|)$", rf"\g<1>{count}\2", doc, flags=re.M)
    path.write_text(doc)


if __name__ == "__main__":
    _rewrite()
