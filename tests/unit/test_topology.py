"""The inventory alone describes the cluster: from a five-host inventory
(a database, two job servers, a worker host, a web host) the roles work out,
once, where each job server is reached, which table each one keeps, which
logins the queue user gets, and whom each firewall admits."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from conftest import ROOT, ansible_playbook

CLUSTER = {
    "db1": {"ansible_host": "192.0.2.10", "gearman_mysql_bind_address": "10.0.0.10"},
    # Listens on its private address: reached there, logs in from there.
    "gm1": {"ansible_host": "192.0.2.21", "gearman_listen_address": "10.0.0.21"},
    # Listens everywhere; reached over IPv6, logs in from a NAT address.
    "gm2": {"ansible_host": "192.0.2.22", "gearman_listen_address": "::",
            "gearman_advertise_address": "fd00::22", "gearman_source_address": "10.0.0.122"},
    # Managed through a bastion address; its jobs come from 10.0.0.31.
    "wk1": {"ansible_host": "192.0.2.31", "gearman_source_address": "10.0.0.31"},
    "web1": {"ansible_host": "10.0.0.41"},
    # Prometheus: scrapes the exporters, submits no jobs.
    "mon1": {"ansible_host": "10.0.0.51"},
}
GROUPS = {"gearman_db": ["db1"], "gearman_servers": ["gm1", "gm2"], "gearman_workers": ["wk1"],
          "gearman_clients": ["web1"], "gearman_monitoring": ["mon1"]}


def work_out(folder, hosts: dict, groups: dict, **all_vars) -> dict:
    """Run topology.yml on an inventory; return db host -> what it wrote."""
    # Stand-in hosts on this machine: gearman_common is told they have no
    # packages rather than asking dpkg here.
    local = {"ansible_connection": "local", "_gearman_common_installed": []}
    inventory = {"all": {
        "vars": {"gearman_mysql_password": "unit-pw", **all_vars},
        "children": {group: {"hosts": {h: {**local, **hosts[h]} for h in members}} for group, members in groups.items()},
    }}
    (folder / "hosts.yml").write_text(yaml.safe_dump(inventory))
    result = ansible_playbook("-i", str(folder / "hosts.yml"), str(ROOT / "tests/unit/topology.yml"),
                              "-e", f"out_dir={folder}")
    assert result.returncode == 0, result.stdout + result.stderr
    return {db: json.loads((folder / f"db-{db}.json").read_text()) for db in groups["gearman_db"]}


@pytest.fixture(scope="module")
def worked_out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("topology")
    work_out(folder, CLUSTER, GROUPS, gearman_firewall_enabled=True)
    return folder


def servers_file(folder, host) -> list[str]:
    lines = (folder / f"servers-{host}").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def test_each_job_server_keeps_its_own_table_on_the_one_database(worked_out):
    db = json.loads((worked_out / "db-db1.json").read_text())
    by_name = {s["name"]: s for s in db["servers"]}
    assert {name: (s["db_host"], s["mysql_host"], s["table"]) for name, s in by_name.items()} == {
        "gm1": ("db1", "10.0.0.10", "gearman_queue_gm1"),
        "gm2": ("db1", "10.0.0.10", "gearman_queue_gm2"),
    }
    assert all(s["problems"] == [] for s in db["servers"])
    assert db["tables"] == ["gearman_queue_gm1", "gearman_queue_gm2"]


def test_the_queue_user_logs_in_from_each_server_to_its_own_table_only(worked_out):
    grants = json.loads((worked_out / "db-db1.json").read_text())["grants"]
    # From another host, over TLS only.
    assert grants == [
        {"host": "10.0.0.21", "priv": "gearman.gearman_queue_gm1:SELECT,INSERT,DELETE", "tls": True, "servers": ["gm1"]},
        {"host": "10.0.0.122", "priv": "gearman.gearman_queue_gm2:SELECT,INSERT,DELETE", "tls": True, "servers": ["gm2"]},
    ]
    assert "%" not in json.dumps(grants)


def test_the_exporter_reads_two_columns_of_its_servers_table_from_where_gearmand_logs_in(worked_out):
    grants = json.loads((worked_out / "db-db1.json").read_text())["exporter_grants"]
    # Its password, unset here, is a one-way hash of the queue password.
    password = hashlib.sha256(b"unit-pw:gearman-exporter").hexdigest()
    assert grants == [
        {"user": "gearman_exporter", "host": "10.0.0.21", "password": password, "tls": True,
         "priv": "gearman.gearman_queue_gm1:SELECT (function_name, queued_at)"},
        {"user": "gearman_exporter", "host": "10.0.0.122", "password": password, "tls": True,
         "priv": "gearman.gearman_queue_gm2:SELECT (function_name, queued_at)"},
    ]


def test_the_exporter_serves_where_consumers_reach_its_server_and_only_scrapers_get_in(worked_out):
    servers = {s["name"]: s for s in json.loads((worked_out / "db-db1.json").read_text())["servers"]}
    # It listens where gearmand does; Prometheus scrapes it where consumers reach gearmand.
    assert (servers["gm1"]["exporter_listen"], servers["gm1"]["exporter_address"]) == ("10.0.0.21", "10.0.0.21")
    assert (servers["gm2"]["exporter_listen"], servers["gm2"]["exporter_address"]) == ("::", "fd00::22")
    firewall = json.loads((worked_out / "firewall-gm1.json").read_text())
    assert firewall["exporter_ports"] == [9418]
    # The monitoring host reaches the exporter only; the job port stays the consumers'.
    assert firewall["scrapers"] == ["10.0.0.51"]
    assert "10.0.0.51" not in firewall["sources"]


def test_an_exporter_turned_off_loses_its_login_and_one_on_everywhere_is_scraped_at_its_host(tmp_path):
    hosts = {**CLUSTER, "gm2": {**CLUSTER["gm2"], "gearman_exporter_enabled": False},
             "gm1": {**CLUSTER["gm1"], "gearman_exporter_listen_address": "0.0.0.0",
                     "gearman_listen_address": "127.0.0.1", "gearman_source_address": "10.0.0.121"}}
    db = work_out(tmp_path, hosts, {**GROUPS, "gearman_workers": [], "gearman_clients": []},
                  gearman_firewall_enabled=True)["db1"]
    # gm2's exporter is off: no login for it, and its user still among those
    # whose other logins the role removes.
    assert [g["priv"] for g in db["exporter_grants"]] == ["gearman.gearman_queue_gm1:SELECT (function_name, queued_at)"]
    assert db["exporter_users"] == ["gearman_exporter"]
    gm1 = next(s for s in db["servers"] if s["name"] == "gm1")
    # Listening everywhere, with gearmand on loopback: scraped at the host's own address.
    assert (gm1["exporter_listen"], gm1["exporter_address"]) == ("0.0.0.0", "10.0.0.121")


def test_job_servers_reach_a_database_on_another_host_over_tls(worked_out):
    db = json.loads((worked_out / "db-db1.json").read_text())
    assert [(s["name"], s["mysql_tls"], s["mysql_tls_ca_from"]) for s in db["servers"]] == [
        ("gm1", True, ""), ("gm2", True, "")]
    # The database turns TLS on, and a lab certificate would name every
    # address a job server may connect to.
    assert db["tls"] is True
    assert set(db["tls_names"]) == {"DNS:db1", "IP:192.0.2.10", "IP:10.0.0.10", "DNS:localhost", "IP:127.0.0.1"}


def test_tls_to_the_database_follows_each_side_of_the_inventory(tmp_path):
    groups = {"gearman_db": ["db1"], "gearman_servers": ["gm1"]}
    hosts = {"db1": {**CLUSTER["db1"], "gearman_mysql_tls_generate": True},
             "gm1": {**CLUSTER["gm1"], "gearman_db_tls": False}}
    # Turned off for gm1: a plain login, and nothing for the database to do.
    db = work_out(tmp_path, hosts, groups, gearman_firewall_enabled=True)["db1"]
    assert (db["servers"][0]["mysql_tls"], db["grants"][0]["tls"], db["tls"]) == (False, False, False)
    # On, with the database's lab CA to copy from db1.
    hosts["gm1"]["gearman_db_tls"] = "auto"
    db = work_out(tmp_path, hosts, groups, gearman_firewall_enabled=True)["db1"]
    assert (db["servers"][0]["mysql_tls"], db["servers"][0]["mysql_tls_ca_from"]) == (True, "db1")
    assert db["servers"][0]["problems"] == []
    # The database refusing TLS that a job server wants is a problem for preflight.
    hosts["db1"]["gearman_mysql_tls_enabled"] = False
    (problem,) = work_out(tmp_path, hosts, groups, gearman_firewall_enabled=True)["db1"]["servers"][0]["problems"]
    assert "gearman_mysql_tls_enabled: false" in problem and "gearman_db_tls: false on gm1" in problem
    # A lab CA is made only where the role installs MariaDB.
    hosts["db1"].update(gearman_mysql_tls_enabled="auto", gearman_mysql_install_server=False)
    (problem,) = work_out(tmp_path, hosts, groups, gearman_firewall_enabled=True)["db1"]["servers"][0]["problems"]
    assert "gearman_mysql_install_server is false there" in problem


def test_clients_and_workers_list_every_server_where_they_reach_it(worked_out):
    for host in ("wk1", "web1"):
        assert servers_file(worked_out, host) == ["10.0.0.21:4730", "[fd00::22]:4730"], host
    # A job server's own clients reach it where it listens.
    assert servers_file(worked_out, "gm2") == ["10.0.0.21:4730", "127.0.0.1:4730"]


def test_the_firewall_admits_the_address_jobs_come_from(worked_out):
    firewall = json.loads((worked_out / "firewall-gm1.json").read_text())
    # wk1's jobs come from its source address, not its management address.
    assert sorted(firewall["sources"]) == ["10.0.0.31", "10.0.0.41"]
    assert firewall["ports"] == firewall["remote_ports"] == [4730]


def test_with_the_tls_front_other_hosts_reach_the_tls_port_only(tmp_path):
    every = ["gearman_db", "gearman_servers", "gearman_workers", "gearman_clients"]
    work_out(tmp_path, {"aio": {}}, {group: ["aio"] for group in every},
             gearman_firewall_enabled=True, gearman_tls_enabled=True)
    firewall = json.loads((tmp_path / "firewall-aio.json").read_text())
    assert (firewall["ports"], firewall["remote_ports"]) == ([4730, 4731], [4731])


def test_the_tutorials_one_host_keeps_the_tutorials_table_and_loopback_logins(tmp_path):
    every = ["gearman_db", "gearman_servers", "gearman_workers", "gearman_clients"]
    db = work_out(tmp_path, {"aio": {}}, {group: ["aio"] for group in every})["aio"]
    (server,) = db["servers"]
    assert (server["mysql_host"], server["table"], server["problems"]) == ("127.0.0.1", "gearman_queue", [])
    # On its own host the database is reached without TLS.
    assert db["grants"] == [{"host": h, "priv": "gearman.gearman_queue:SELECT,INSERT,DELETE", "tls": False,
                             "servers": ["aio"]} for h in ("localhost", "127.0.0.1")]
    assert (server["mysql_tls"], db["tls"]) == (False, False)
    assert servers_file(tmp_path, "aio") == ["127.0.0.1:4730"]


def test_a_job_server_on_the_database_host_reaches_it_where_mariadb_listens(tmp_path):
    hosts = {"gs1": {"gearman_mysql_bind_address": "10.0.0.5", "gearman_listen_address": "10.0.0.5"},
             "gs2": {"gearman_listen_address": "10.0.0.6", "gearman_mysql_host": "10.0.0.5"}}
    db = work_out(tmp_path, hosts, {"gearman_db": ["gs1"], "gearman_servers": ["gs1", "gs2"]})["gs1"]
    by_name = {s["name"]: s for s in db["servers"]}
    # MariaDB listens on 10.0.0.5 only: the local server goes there too, and
    # is granted from there.
    assert by_name["gs1"]["mysql_host"] == "10.0.0.5"
    assert by_name["gs1"]["sources"] == ["localhost", "127.0.0.1", "10.0.0.5"]
    assert by_name["gs2"]["db_host"] == "gs1" and by_name["gs2"]["sources"] == ["10.0.0.6"]
