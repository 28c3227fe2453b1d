"""The one apt run gets the roles' packages in the roles' order, the same on
every run: apt picks a provider of a shared dependency by what it has
already chosen (php-gearman before php-cli also installs php8.2-phpdbg)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT, ansible_playbook

WANTED = ["mariadb-server", "python3-pymysql", "nftables", "stunnel4", "php-cli", "php-gearman",
          "python3-venv", "php-cli", "gearman-tools", "libgearman-dev", "ca-certificates"]
INSTALLED = ["ca-certificates", "gearman-tools"]


def missing(seed: str) -> list[str]:
    """_gearman_common_packages_missing, worked out by an Ansible whose
    string hashes (and so any set's order) come from SEED."""
    extra = json.dumps({"_gearman_common_packages_wanted": WANTED, "_gearman_common_installed": INSTALLED})
    run = ansible_playbook("-i", "localhost,", str(ROOT / "tests/unit/packages_order.yml"), "-e", extra,
                           env={"PYTHONHASHSEED": seed})
    assert run.returncode == 0, run.stdout + run.stderr
    found = re.search(r'"msg": "MISSING (.*)"\n', run.stdout)
    assert found, run.stdout
    return json.loads(json.loads(f'"{found.group(1)}"'))


@pytest.mark.parametrize("seed", ["0", "1", "2", "3"])
def test_the_missing_packages_keep_the_roles_order_whatever_the_hash_seed(seed):
    expected = [name for name in dict.fromkeys(WANTED) if name not in INSTALLED]
    assert missing(seed) == expected
