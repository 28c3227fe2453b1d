"""The one apt run gets the roles' packages in the roles' order, the same on
every run: apt picks a provider of a shared dependency by what it has
already chosen (php-gearman before php-cli also installs php8.2-phpdbg).
Then it disables the services of those it has just installed that must wait
for their role (Prometheus, the node exporter), and of those only."""

from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT, ansible_playbook

WANTED = ["mariadb-server", "python3-pymysql", "nftables", "stunnel4", "php-cli", "php-gearman",
          "python3-venv", "php-cli", "gearman-tools", "libgearman-dev", "ca-certificates"]
INSTALLED = ["ca-certificates", "gearman-tools"]


def planned(wanted: list[str], installed: list[str], held: dict[str, str] | None = None,
            seed: str = "0") -> dict[str, list[str]]:
    """What gearman_common works out for its one apt run, by an Ansible whose
    string hashes (and so any set's order) come from SEED: the missing
    packages, and the services to disable after installing them."""
    extra = {"_gearman_common_packages_wanted": wanted, "_gearman_common_installed": installed}
    if held is not None:
        extra["_gearman_common_services_held"] = held
    run = ansible_playbook("-i", "localhost,", str(ROOT / "tests/unit/packages_order.yml"), "-e", json.dumps(extra),
                           env={"PYTHONHASHSEED": seed})
    assert run.returncode == 0, run.stdout + run.stderr
    found = dict(re.findall(r'"msg": "(MISSING|DISABLE) (.*)"\n', run.stdout))
    assert found.keys() == {"MISSING", "DISABLE"}, run.stdout
    return {key.lower(): json.loads(json.loads(f'"{value}"')) for key, value in found.items()}


@pytest.mark.parametrize("seed", ["0", "1", "2", "3"])
def test_the_missing_packages_keep_the_roles_order_whatever_the_hash_seed(seed):
    expected = [name for name in dict.fromkeys(WANTED) if name not in INSTALLED]
    assert planned(WANTED, INSTALLED, seed=seed)["missing"] == expected


def test_only_the_services_of_packages_it_installs_are_disabled():
    held = {"prometheus": "prometheus.service", "prometheus-node-exporter": "prometheus-node-exporter.service"}
    # The node exporter was there before (its role has set it up): left as it is.
    found = planned(["python3-venv", "prometheus-node-exporter", "prometheus"], ["prometheus-node-exporter"], held)
    assert found == {"missing": ["python3-venv", "prometheus"], "disable": ["prometheus.service"]}
    # A caller that holds back nothing (the other plays' hosts).
    assert planned(["python3-venv", "prometheus"], [])["disable"] == []
