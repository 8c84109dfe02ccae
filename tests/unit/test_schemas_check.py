"""`meterstream schemas check`: a new meter version must read what the old one accepted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meterstream.cli import app
from meterstream.meters.compat import check_registry
from meterstream.meters.registry import load_registry

SCHEMAS = Path(__file__).parents[2] / "schemas"


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    return target


def edit_v2(schemas: Path, change) -> None:  # noqa: ANN001
    path = schemas / "llm_tokens" / "v2.avsc"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_schemas_check_accepts_the_shipped_meters() -> None:
    assert check_registry(load_registry(SCHEMAS)) == []


def test_schemas_check_rejects_a_new_required_field_without_default(schemas: Path) -> None:
    edit_v2(schemas, lambda d: d["fields"].append({"name": "region", "type": "string"}))

    problems = check_registry(load_registry(schemas))

    assert len(problems) == 1
    assert "v2 cannot read v1 data" in problems[0]


def test_schemas_check_rejects_a_changed_field_type(schemas: Path) -> None:
    def to_string(doc: dict) -> None:
        doc["fields"][1]["type"] = "int"

    edit_v2(schemas, to_string)

    assert any("cannot read" in p for p in check_registry(load_registry(schemas)))


def test_schemas_check_accepts_an_optional_field_and_a_widened_type(schemas: Path) -> None:
    def widen(doc: dict) -> None:
        doc["fields"].append({"name": "region", "type": ["null", "string"], "default": None})

    edit_v2(schemas, widen)

    assert check_registry(load_registry(schemas)) == []


def test_schemas_check_rejects_a_change_of_billing_semantics(schemas: Path) -> None:
    edit_v2(schemas, lambda d: d["meterstream"].update(group_by=[]))

    assert any("must not change" in p for p in check_registry(load_registry(schemas)))


def test_schemas_check_rejects_a_sunset_on_the_newest_version(schemas: Path) -> None:
    edit_v2(schemas, lambda d: d["meterstream"].update(sunset="2030-01-01T00:00:00Z"))

    assert any(
        "newest version cannot have a sunset" in p for p in check_registry(load_registry(schemas))
    )


def test_schemas_check_command_exits_non_zero_on_an_incompatible_version(schemas: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["schemas", "check", "--dir", str(SCHEMAS)]).exit_code == 0

    edit_v2(schemas, lambda d: d["fields"].append({"name": "region", "type": "string"}))
    result = runner.invoke(app, ["schemas", "check", "--dir", str(schemas)])

    assert result.exit_code == 1
    assert "incompatible" in result.output
