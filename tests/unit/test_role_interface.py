"""Every role variable is declared three times: in defaults/main.yml, in
meta/argument_specs.yml and in the README, each with the same default. These
tests keep the three from drifting apart."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import ROOT

ROLES = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/meta/argument_specs.yml"))
README = (ROOT / "README.md").read_text()


def defaults(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "defaults/main.yml").read_text()) or {}


def spec(role: str) -> dict:
    specs = yaml.safe_load((ROOT / "roles" / role / "meta/argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def readme_row(variable: str) -> str:
    for line in README.splitlines():
        if line.startswith("|") and f"`{variable}`" in line.split("|")[1]:
            return line
    raise AssertionError(f"README has no table row for {variable}")


def as_markdown(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if value == "":
        return '""'
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_every_role_has_an_argument_spec():
    assert set(ROLES) == {p.name for p in (ROOT / "roles").iterdir() if p.is_dir()}
    assert ROLES


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_spec_declare_the_same_variables(role):
    required = {name for name, opt in spec(role).items() if opt.get("required")}
    assert set(defaults(role)) == set(spec(role)) - required
    for name, opt in spec(role).items():
        if name in defaults(role):
            assert opt.get("default") == defaults(role)[name], name


@pytest.mark.parametrize("role", ROLES)
def test_every_variable_is_in_the_readme_with_its_default(role):
    for name, opt in spec(role).items():
        row = readme_row(name)
        if opt.get("required"):
            assert "required" in row, name
        else:
            default_cell = row.split("|")[2]
            shown = re.findall(r"`([^`]*)`", default_cell)
            assert as_markdown(opt["default"]) in shown, (name, row)


@pytest.mark.parametrize("role", ROLES)
def test_role_variables_carry_the_project_prefix(role):
    for name in spec(role):
        assert name.startswith(role + "_") or name.startswith("gearman_"), name
