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


def test_every_role_with_settings_has_an_argument_spec():
    """All but gearman_common, which is internal and has no settings (no
    defaults) to check: an empty specification would only cost a task."""
    assert set(ROLES) == {p.name for p in (ROOT / "roles").iterdir() if p.is_dir()} - {"gearman_common"}
    assert not yaml.safe_load((ROOT / "roles/gearman_common/defaults/main.yml").read_text())


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_spec_declare_the_same_variables(role):
    # Required variables, and those required only in some settings (no
    # default in the spec), have no default anywhere.
    no_default = {name for name, opt in spec(role).items() if opt.get("required") or "default" not in opt}
    assert set(defaults(role)) == set(spec(role)) - no_default
    for name, opt in spec(role).items():
        if name in defaults(role):
            assert opt.get("default") == defaults(role)[name], name


@pytest.mark.parametrize("role", ROLES)
def test_every_variable_is_in_the_readme_with_its_default(role):
    for name, opt in spec(role).items():
        row = readme_row(name)
        if opt.get("required") or "default" not in opt:
            assert "required" in row, name
        else:
            default_cell = row.split("|")[2]
            shown = re.findall(r"`([^`]*)`", default_cell)
            assert as_markdown(opt["default"]) in shown, (name, row)


# A variable is named after the role whose name, with "_", is the longest
# prefix of its own: gearman_mysql_port after gearman_mysql, gearman_port after
# gearman, gearman_php_bin_dir after gearman_php.
def named_after(variable: str) -> str | None:
    return max((role for role in ROLES if variable.startswith(role + "_")), key=len, default=None)


# The only variables a role may declare under another role's name, each listed
# by name: no role may take a neighbour's whole prefix.
SHARED_INPUTS = {
    # Read from the role they are named after, which declares them too.
    "gearman": {
        # gearmand logs in to the queue database that gearman_mysql creates,
        # as its user and into its database: one value in group_vars/all
        # serves both roles.
        "gearman_mysql_port",
        "gearman_mysql_user",
        "gearman_mysql_password",
        "gearman_mysql_db",
    },
}
BORROWED_NAMES = {
    # Named after a role that does not know them: they keep the names of
    # gearmand's own options (--mysql-host, --mysql-table) or are renames
    # waiting to happen.
    "gearman": {
        # Where this job server finds its database and which table it uses;
        # the database host's role reads them through gearman_common.
        "gearman_mysql_host",
        "gearman_mysql_table",
        # The gearman role's timeout for its own login check of the queue
        # database; gearman_mysql neither declares nor reads it.
        "gearman_mysql_connect_timeout",
    },
}


@pytest.mark.parametrize("role", ROLES)
def test_role_variables_carry_their_own_role_prefix(role):
    shared, borrowed = SHARED_INPUTS.get(role, set()), BORROWED_NAMES.get(role, set())
    assert shared | borrowed <= set(spec(role)), f"{role} no longer declares {(shared | borrowed) - set(spec(role))}"
    for name in spec(role):
        source = named_after(name)
        if name in shared:
            assert source not in (None, role) and name in spec(source), f"{name} is no input of {source}"
            ours, theirs = spec(role)[name].get("default"), spec(source)[name].get("default")
            assert ours == theirs, f"{name}: default {ours!r} in {role}, {theirs!r} in {source}"
        elif name in borrowed:
            assert source not in (None, role) and name not in spec(source), f"{name} is not borrowed"
        else:
            assert source == role, f"{role} declares {name}, which is named after {source or 'no role'}"


def test_the_roles_read_only_facts_of_the_minimal_set():
    """The README (and the lab, with gearman_gather_subset: [min]) counts on
    it: a role reading another fact would fail where only those are gathered."""
    minimal = {"distribution", "distribution_major_version", "service_mgr"}
    read = set()
    for path in [*ROOT.glob("roles/**/*"), *ROOT.glob("playbooks/**/*.yml"), ROOT / "site.yml"]:
        if path.is_file() and path.suffix in (".yml", ".j2", ".py"):
            text = path.read_text(errors="replace")
            read |= set(re.findall(r"ansible_facts(?:\.|\[['\"])(\w+)", text))
    assert read and read <= minimal, sorted(read - minimal)
