"""Bad settings are refused by site.yml's preflight play, before any host is
changed, with a message that names what to fix. The hosts here are local
stand-ins: the preflight play gathers no facts and changes nothing."""

from __future__ import annotations

import sys

import pytest
import yaml

from conftest import ROOT, ansible_playbook


def preflight(tmp_path, servers: dict[str, dict], db: dict[str, dict] | None = None, **all_vars):
    local = {"ansible_connection": "local"}
    inventory = {
        "all": {
            "vars": {"gearman_mysql_password": "unit-pw", **all_vars},
            "children": {
                "gearman_servers": {"hosts": {h: {**local, **v} for h, v in servers.items()}},
                "gearman_db": {"hosts": {h: {**local, **v} for h, v in (db or {"db1": {}}).items()}},
            },
        }
    }
    for key, value in list(all_vars.items()):
        if value is None:  # None: leave the variable unset
            del inventory["all"]["vars"][key]
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    result = ansible_playbook("-i", str(path), str(ROOT / "playbooks/preflight.yml"))
    return result.returncode, result.stdout + result.stderr


def test_valid_settings_pass(tmp_path):
    rc, out = preflight(tmp_path, {"gs1": {}})
    assert rc == 0, out


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"gearman_mysql_password": None}, "gearman_mysql_password"),
        ({"gearman_mysql_password": ""}, "gearman_mysql_password is empty"),
        ({"gearman_mysql_password": "two words"}, "holds white space"),
        ({"gearman_port": 70000}, "gearman_port: takes a TCP port from 1 to 65535, not 70000"),
        ({"gearman_port": "http"}, "gearman_port"),
        ({"gearman_mysql_port": 0}, "gearman_mysql_port"),
        ({"gearman_listen_address": "not an address!"}, "gearman_listen_address: takes an IP address or a host name"),
        ({"gearman_queue_type": "redis"}, "gearman_queue_type"),
        ({"gearman_init_system": "runit"}, "gearman_init_system"),
        ({"gearman_mysql_table": "queue; DROP TABLE x"}, "gearman_mysql_table: takes letters, digits and _ only"),
        ({"gearman_job_retries": 300}, "gearman_job_retries: takes 0 (no limit) to 255, not 300"),
        ({"gearman_mysql_connect_timeout": 0}, "gearman_mysql_connect_timeout: takes 1 or more seconds"),
        ({"gearman_extra_params": ["--round-robin", "-q redis"]}, "these are not: -q redis"),
        ({"gearman_extra_params": ["--ssl", "--ssl-key=/k.pem"]}, "built without TLS"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(tmp_path, settings, named):
    rc, out = preflight(tmp_path, {"gs1": {}}, **settings)
    assert rc != 0, out
    assert named in out, out


def test_two_servers_may_not_share_a_queue_table(tmp_path):
    shared = {"gearman_mysql_host": "db.example.com"}
    rc, out = preflight(tmp_path, {"gs1": shared, "gs2": shared})
    assert rc != 0, out
    assert "give each one its own gearman_mysql_table" in out


def test_servers_with_their_own_tables_or_databases_pass(tmp_path):
    rc, out = preflight(
        tmp_path,
        {
            "gs1": {"gearman_mysql_host": "db.example.com", "gearman_mysql_table": "queue_gs1"},
            "gs2": {"gearman_mysql_host": "db.example.com", "gearman_mysql_table": "queue_gs2"},
            # Loopback: each server has its own local database.
            "gs3": {},
            "gs4": {},
        },
    )
    assert rc == 0, out


def test_a_bad_host_stops_the_run_before_any_host_is_changed(tmp_path):
    # The preflight play, then a play that would leave a mark on every host.
    marks = tmp_path / "marks"
    marks.mkdir()
    playbook = tmp_path / "site.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {"ansible.builtin.import_playbook": str(ROOT / "playbooks/preflight.yml")},
                {
                    "name": "Change something",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Leave a mark",
                            "ansible.builtin.file": {"path": f"{marks}/{{{{ inventory_hostname }}}}", "state": "touch", "mode": "0644"},
                        }
                    ],
                },
            ]
        )
    )
    inventory = tmp_path / "hosts.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "vars": {"gearman_mysql_password": "unit-pw", **local},
                    "children": {
                        "gearman_servers": {"hosts": {"gs1": None, "gs2": {"gearman_port": 0}}},
                        "gearman_db": {"hosts": {"db1": None}},
                    },
                }
            }
        )
    )
    result = ansible_playbook("-i", str(inventory), str(playbook))
    assert result.returncode != 0
    assert "gearman_port" in result.stdout
    assert list(marks.iterdir()) == []
