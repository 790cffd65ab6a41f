"""The README's inventory reference is the schema's own (regenerate on change)."""

from __future__ import annotations

from lbappliance.inventory.reference import reference_markdown
from tests.conftest import ROOT


def test_readme_reference_in_sync() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n", readme.index("<!-- reference:start")) + 1
    end = readme.index("<!-- reference:end -->")
    assert readme[start:end].strip() == reference_markdown().strip(), (
        "README inventory reference is stale: paste the output of `lbappliance reference`"
    )


def test_readme_lists_every_command() -> None:
    from lbappliance.cli import main

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## CLI reference") : readme.index("## Inventory")]
    missing = [name for name in main.commands if f"`lbappliance {name}" not in table]
    assert not missing, f"README CLI reference lacks: {missing}"
