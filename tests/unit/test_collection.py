"""The repository as a collection: the tarball ansible-galaxy builds holds
the roles and the deployment's playbooks and nothing of the lab, and
ansible-doc, from the installed tarball, documents every variable of every
role's defaults from its argument specification. (The molecule default
scenario deploys from the installed tarball, by fully qualified names.)"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tests"))
from build_collection import build  # noqa: E402

GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())
# Every role but gearman_common, which is internal and has no settings.
DOCUMENTED = [role for role in ROLES if role != "gearman_common"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("collection")
    return build(folder), folder


def test_the_tarball_holds_the_roles_and_playbooks_and_nothing_of_the_lab(installed):
    tarball, _ = installed
    names = tarfile.open(tarball).getnames()
    tops = {name.split("/")[0] for name in names}
    assert {"roles", "playbooks", "meta", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.json"} <= tops
    assert not tops & {"lab", "tests", "molecule", "bench", ".cache", ".venv", ".collections", "Makefile"}
    for role in ROLES:
        assert f"roles/{role}/meta/main.yml" in names, role
    for role in DOCUMENTED:
        assert f"roles/{role}/meta/argument_specs.yml" in names, role
    # The plugins the roles call by their full names, the preload callback,
    # and not the clone's link to itself.
    assert {"plugins/modules/state_info.py", "plugins/modules/write_files.py", "plugins/filter/files_to_write.py",
            "plugins/filter/mysql_logins_to_set.py", "plugins/test/like.py",
            "plugins/callback/preload.py"} <= set(names)
    assert "collections" not in tops
    for playbook in ("site", "preflight", "packages", "queue_db", "job_server", "workers", "queue_db_tls", "demo"):
        assert f"playbooks/{playbook}.yml" in names, playbook
    # The lab's own plays (containers, SSH set-up, the bench) stay out.
    for playbook in ("lab", "ssh_access", "controller_ca", "bench"):
        assert f"playbooks/{playbook}.yml" not in names, playbook
    assert not any(name.startswith(("inventories/lab", "inventories/cluster")) for name in names)


def test_the_dependencies_are_those_of_requirements_yml():
    wanted = {c["name"]: c["version"] for c in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]}
    # community.docker drives the lab's containers only.
    assert GALAXY["dependencies"] == {name: version for name, version in wanted.items() if name != "community.docker"}


@pytest.mark.parametrize("role", DOCUMENTED)
def test_ansible_doc_lists_every_default_with_its_description_type_and_default(installed, role):
    _, folder = installed
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(folder), "ANSIBLE_NOCOLOR": "1"}
    out = subprocess.run([Path(sys.executable).parent / "ansible-doc", "-t", "role", "--json", f"{FQCN}.{role}"],
                         capture_output=True, text=True, env=env, cwd=folder, check=True).stdout
    (doc,) = json.loads(out).values()
    options = doc["entry_points"]["main"]["options"]
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults/main.yml").read_text()) or {}
    assert set(defaults) <= set(options), f"not in ansible-doc: {sorted(set(defaults) - set(options))}"
    for name, option in options.items():
        assert option.get("description"), f"{name} has no description"
        assert option.get("type"), f"{name} has no type"
        if name in defaults:
            assert option.get("default") == defaults[name], name


@pytest.mark.parametrize("plugin", sorted(str(p.relative_to(ROOT / "plugins")) for p in (ROOT / "plugins").rglob("*.py")))
def test_each_plugins_documentation_is_yaml(plugin):
    """ansible-doc and the collection's import read these; a colon in the
    wrong place makes them unreadable without failing anything else."""
    tree = ast.parse((ROOT / "plugins" / plugin).read_text())
    docs = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)
            and target.id in ("DOCUMENTATION", "EXAMPLES", "RETURN")}
    assert "DOCUMENTATION" in docs or plugin.startswith("module_utils/"), plugin
    for name, text in docs.items():
        assert yaml.safe_load(text) is not None, f"{plugin}: {name} is empty"
