"""inventories/example is what a user copies for real hosts, and
inventories/cluster is what the cluster scenario and the cluster lab run:
the two must describe the same deployment, apart from addresses, the way
the hosts are reached, and where the password comes from."""

from __future__ import annotations

import yaml

from conftest import ROOT

# Per-host settings that may differ: addresses. (How the lab reaches its
# containers is in its own groups, below.)
ADDRESSES = {"ansible_host", "gearman_mysql_bind_address", "gearman_listen_address"}
LAB_ONLY_GROUPS = {"gearman_lab", "gearman_ssh_hosts"}


def load(name: str) -> tuple[dict, dict]:
    """(group -> host -> vars) and the global vars of an inventory."""
    top = yaml.safe_load((ROOT / "inventories" / name / "hosts.yml").read_text())["all"]
    groups = {group: {host: hvars or {} for host, hvars in (body or {}).get("hosts", {}).items()}
              for group, body in top["children"].items() if group not in LAB_ONLY_GROUPS}
    return groups, top.get("vars", {})


def group_vars(name: str) -> dict:
    folder = ROOT / "inventories" / name / "group_vars"
    found = {}
    for path in sorted(folder.rglob("*.yml")):
        text = path.read_text()
        if not text.startswith("$ANSIBLE_VAULT"):
            found.update(yaml.safe_load(text) or {})
    return found


def test_same_groups_hosts_and_host_settings():
    example, cluster = load("example")[0], load("cluster")[0]
    assert {g: sorted(h) for g, h in example.items()} == {g: sorted(h) for g, h in cluster.items()}
    for group, hosts in example.items():
        for host, hvars in hosts.items():
            theirs = cluster[group][host]
            assert set(hvars) == set(theirs), host
            assert {k: v for k, v in hvars.items() if k not in ADDRESSES} == \
                   {k: v for k, v in theirs.items() if k not in ADDRESSES}, host


def test_same_login_and_settings_apart_from_the_password_and_certificates():
    example, cluster = load("example")[1], load("cluster")[1]
    assert example == cluster
    mine, lab = group_vars("example"), group_vars("cluster")
    # The lab makes its database CA; real hosts bring their certificates.
    assert lab.pop("gearman_mysql_tls_generate") is True
    assert "gearman_mysql_tls_generate" not in mine
    assert mine.keys() == lab.keys()
    assert {k: v for k, v in mine.items() if k != "gearman_mysql_password"} == \
           {k: v for k, v in lab.items() if k != "gearman_mysql_password"}
    # The example's password comes from the vault.
    assert mine["gearman_mysql_password"] == "{{ vault_gearman_mysql_password }}"
