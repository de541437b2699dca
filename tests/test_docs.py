"""The README stays true: its schema table is the record's, and it documents every option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench_lib.record import FIELDS, schema_markdown
from bench_lib.vocab import MECHANISMS, PATTERNS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
CONFTEST = (Path(__file__).resolve().parents[1] / "conftest.py").read_text(encoding="utf-8")


def test_readme_schema_table_is_the_record_schema():
    block = README.split("<!-- schema:start -->\n", 1)[1].split("<!-- schema:end -->", 1)[0]
    assert block.strip() == schema_markdown()
    for key in FIELDS:
        assert f"| `{key}` |" in block


@pytest.mark.parametrize("option", sorted(set(re.findall(r'"(--bench-[a-z-]+)"', CONFTEST))))
def test_readme_documents_every_option(option: str):
    assert f"| `{option}` |" in README


@pytest.mark.parametrize("name", [*PATTERNS, *MECHANISMS])
def test_readme_documents_every_pattern_and_mechanism(name: str):
    assert f"| `{name}` |" in README


def test_readme_profile_case_counts_are_current():
    from bench_lib.measuring.sweep import PROFILES, Filters, generate

    for name, profile in PROFILES.items():
        row = re.search(rf"^\| `{name}` \|.*\| (\d+) \|$", README, re.MULTILINE)
        assert row, name
        assert int(row.group(1)) == len(generate(profile, Filters()).cases), name
