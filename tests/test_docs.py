"""The documentation keeps up with the code: every public name is in the reference.

The site itself is built by ``mkdocs build --strict`` in scripts/test.sh (a
broken reference or link fails there); these checks catch what a build
cannot: a public name that no reference page mentions, a public name
without an example, and a README link to a file users do not have.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import quiesce

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"


def documented_names() -> set[str]:
    names = set()
    for page in REFERENCE.glob("*.md"):
        names.update(re.findall(r"^::: (quiesce(?:\.\w+)+)\s*$", page.read_text(), re.M))
    return names


def test_every_public_name_has_a_reference_entry() -> None:
    missing = {f"quiesce.{name}" for name in quiesce.__all__} - documented_names()
    assert not missing, f"add a '::: NAME' line to a page in docs/reference/ for {missing}"


def test_a_name_outside_all_would_be_reported() -> None:
    # Negative control: the pattern sees directives, and only directives.
    assert "quiesce.Scope" in documented_names()
    assert "quiesce.NoSuchName" not in documented_names()


@pytest.mark.parametrize("name", sorted(quiesce.__all__))
def test_public_name_docstring_has_an_example(name: str) -> None:
    doc = inspect.getdoc(getattr(quiesce, name)) or ""
    assert "\nExample:\n" in doc, f"quiesce.{name}: its docstring needs an 'Example:' section"


def test_readme_links_stay_inside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)", readme)
    assert targets, "the README links to its docs"
    for target in targets:
        assert "://" not in target, f"README links outside the repository: {target}"
        assert (ROOT / target).resolve().is_relative_to(ROOT), f"README leaves the repo: {target}"
        assert (ROOT / target).exists(), f"README links to a missing file: {target}"


def _bench_block(text: str, first_line: str) -> str:
    """The ```text block of a page that starts with ``first_line``."""
    for block in re.findall(r"```text\n(.*?)```", text, re.S):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"no ```text block starting with {first_line!r}")


def test_readme_measured_table_is_the_measurements_page_one() -> None:
    """One source for every number: the README's table is the bench run the page quotes."""
    readme = (ROOT / "README.md").read_text()
    page = (ROOT / "docs" / "measurements.md").read_text()
    assert _bench_block(readme, "bench_limits:") == _bench_block(page, "bench_limits:")
