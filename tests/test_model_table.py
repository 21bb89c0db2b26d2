"""The README's supported-models table is the family data, row for row: neither can drift from the other."""

from __future__ import annotations

import re
from pathlib import Path

from zerank_integrations.families import FAMILIES

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_model_table_equals_the_family_data() -> None:
    text = README.read_text(encoding="utf-8")
    table = text.split("<!-- supported-models", 1)[1].split("<!-- /supported-models -->", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1], cells[2], cells[3]))
    expected = [
        ([model.hub_id, *model.aliases], family.name, model.parameters, model.license)
        for family in FAMILIES.values()
        for model in family.models
    ]
    assert rows == expected
    assert "CC-BY-NC-4.0" in {row[3] for row in rows} and len(rows) >= 10
    checked = {model.checked for family in FAMILIES.values() for model in family.models}
    assert len(checked) == 1 and f"checked {checked.pop()}" in text  # the README states when licences were read
