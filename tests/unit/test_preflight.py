"""Bad settings are refused by site.yml's preflight play, before any host is
changed, with a message that names what to fix. The hosts here are local
stand-ins: the preflight play gathers no facts and changes nothing."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, ansible_playbook


# ansible-core 2.19 prints each refusal once, as the message of an error:
#   [ERROR]: Task failed: Action failed: gearman_port: takes a TCP port ...
#   Origin: .../roles/gearman/tasks/validate.yml:20:3
# That message is what the operator reads. Loop labels ("item=gearman_port"),
# the results' echo of the check and of the input, and the source excerpt
# after "Origin:" all lie outside it, so they cannot satisfy a test.
ERROR = re.compile(r"^\[ERROR\]: (.*?)(?=\nOrigin: |\n\n|\nfatal: |\nfailed: |\Z)", re.MULTILINE | re.DOTALL)


def refusals(output: str) -> list[str]:
    """The messages of the run's failed tasks, each on one line, in order."""
    found = []
    for match in ERROR.finditer(output):
        message = " ".join(match.group(1).split())
        message = message.removeprefix("Task failed: ").removeprefix("Action failed: ")
        if message not in found:
            found.append(message)
    return found


def refused(rc: int, output: str) -> list[str]:
    """The refusals of a run that must have failed, and failed with some."""
    assert rc != 0, output
    messages = refusals(output)
    assert messages, "the run failed without a refusal message (has ansible's output changed?)\n" + output
    return messages


def preflight(tmp_path, servers: dict[str, dict], db: dict[str, dict] | None = None,
              workers: dict[str, dict] | None = None, monitoring: dict[str, dict] | None = None,
              playbook: Path = ROOT / "playbooks/preflight.yml", extra: tuple[str, ...] = (), **all_vars):
    # Stand-in hosts on this machine: gearman_common is told they have no
    # packages rather than asking dpkg here.
    local = {"ansible_connection": "local", "_gearman_common_installed": []}
    inventory = {
        "all": {
            "vars": {"gearman_mysql_password": "unit-pw", **all_vars},
            "children": {
                "gearman_servers": {"hosts": {h: {**local, **v} for h, v in servers.items()}},
                # Default: the first job server keeps the queue database too (all in one).
                "gearman_db": {"hosts": {h: {**local, **v} for h, v in
                                         ({next(iter(servers)): {}} if db is None else db).items()}},
                "gearman_workers": {"hosts": {h: {**local, **v} for h, v in (workers or {}).items()}},
                "gearman_monitoring": {"hosts": {h: {**local, **v} for h, v in (monitoring or {}).items()}},
            },
        }
    }
    for key, value in list(all_vars.items()):
        if value is None:  # None: leave the variable unset
            del inventory["all"]["vars"][key]
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    result = ansible_playbook("-i", str(path), str(playbook), *extra)
    return result.returncode, result.stdout + result.stderr


def test_valid_settings_pass(tmp_path):
    rc, out = preflight(tmp_path, {"gs1": {}})
    assert rc == 0, out


# Each bad setting, and the one refusal it must meet: the message that names the
# variable and says what it takes. No other variable may be refused with it.
BAD_SETTINGS = [
    ({"gearman_mysql_password": None}, "missing required arguments: gearman_mysql_password"),
    ({"gearman_mysql_password": ""}, "gearman_mysql_password is empty. Set it for the database hosts"),
    ({"gearman_mysql_password": "two words"}, "gearman_mysql_password is not set, empty or holds white space, and the MySQL queue needs it."),
    ({"gearman_port": 70000}, "gearman_port: takes a TCP port from 1 to 65535, not 70000."),
    ({"gearman_port": "http"}, "argument 'gearman_port' is of type str and we were unable to convert to int"),
    ({"gearman_mysql_port": 0}, "gearman_mysql_port: takes a TCP port from 1 to 65535, not 0."),
    ({"gearman_listen_address": "not an address!"}, "gearman_listen_address: takes an IP address or a host name, not 'not an address!'."),
    ({"gearman_queue_type": "redis"}, "value of gearman_queue_type must be one of: mysql, builtin, got: redis"),
    ({"gearman_init_system": "runit"}, "value of gearman_init_system must be one of: auto, systemd, upstart, got: runit"),
    ({"gearman_mysql_table": "queue; DROP TABLE x"}, "gearman_mysql_table: takes letters, digits and _ only, at most 64 (or nothing, for one per job server), not 'queue; DROP TABLE x'."),
    ({"gearman_advertise_address": "two words"}, "gearman_advertise_address: takes an IP address or a host name, not 'two words'."),
    ({"gearman_job_retries": 300}, "gearman_job_retries: takes 0 (no limit) to 255, not 300."),
    ({"gearman_mysql_connect_timeout": 0}, "gearman_mysql_connect_timeout: takes 1 or more seconds, not 0."),
    ({"gearman_expected_queue_depth": 0}, "gearman_expected_queue_depth: takes 1 to 134217689 jobs, not 0."),
    ({"gearman_memory_queue_restart": "wait"}, "value of gearman_memory_queue_restart must be one of: refuse, drain, drop, got: wait"),
    ({"gearman_memory_queue_drain_timeout": 0}, "gearman_memory_queue_drain_timeout: takes 1 or more seconds, not 0."),
    ({"gearman_extra_params": ["--round-robin", "-q redis"]}, "gearman_extra_params: takes items of the form --option or --option=value with no spaces; these are not: -q redis."),
    ({"gearman_extra_params": ["--ssl", "--ssl-key=/k.pem"]}, "gearman_extra_params: must not hold --ssl options: the Debian and Ubuntu gearmand packages are built without TLS"),
    ({"gearman_extra_params": ["--keepalive-idle=60"]}, "gearman_extra_params: must not hold --keepalive options: the role sets them from gearman_keepalive_idle"),
    ({"gearman_memory_max": "lots"}, "gearman_memory_max: takes bytes with K, M, G or T (512M, 2G), a percentage of the host's memory (1% to 100%) or infinity, not 'lots'."),
    ({"gearman_memory_max": "0%"}, "gearman_memory_max: takes bytes with K, M, G or T (512M, 2G), a percentage of the host's memory (1% to 100%) or infinity, not '0%'."),
    ({"gearman_keepalive_idle": -1}, "gearman_keepalive_idle: takes seconds from 0 (the kernel's setting) to 32767, not '-1'."),
    ({"gearman_keepalive_count": 0}, "gearman_keepalive_count: takes a count of probes from 1 to 127, not '0'."),
    ({"gearman_db_tls": "maybe"}, "gearman_db_tls: takes auto (TLS when the database is on another host), true or false, not 'maybe'."),
    ({"gearman_mysql_tls_enabled": "maybe"}, "gearman_mysql_tls_enabled: takes auto (when a job server reaches this database over TLS), true or false, not 'maybe'."),
    ({"gearman_mysql_max_allowed_packet": "lots"}, "gearman_mysql_max_allowed_packet: takes a size such as 64M or 1G, not 'lots'."),
    ({"gearman_exporter_port": 0}, "gearman_exporter_port takes a TCP port (1-65535) and gearman_exporter_timeout 1 or more seconds; they are 0 and 5."),
    ({"gearman_exporter_timeout": 0}, "gearman_exporter_port takes a TCP port (1-65535) and gearman_exporter_timeout 1 or more seconds; they are 9418 and 0."),
]


# Each role entry point that leaves its checks out in site.yml, a bad value
# given to it in a play of one's own, and the refusal it must still meet.
OWN_PLAYS = [
    ("gearman", "main", {"gearman_port": 70000}, "gearman_port: takes a TCP port from 1 to 65535, not 70000."),
    ("gearman_mysql", "main", {"gearman_mysql_max_allowed_packet": "lots"},
     "gearman_mysql_max_allowed_packet: takes a size such as 64M or 1G, not 'lots'."),
    ("gearman_exporter", "main", {"gearman_exporter_port": 0},
     "gearman_exporter_port takes a TCP port (1-65535) and gearman_exporter_timeout 1 or more seconds; they are 0 and 5."),
    ("gearman_prometheus", "main", {"gearman_prometheus_port": 0}, "gearman_prometheus_port takes a TCP port (1-65535); it is 0."),
    ("gearman_prometheus", "node_exporter", {"gearman_prometheus_node_exporter_port": 0},
     "gearman_prometheus_node_exporter_port takes a TCP port (1-65535); it is 0."),
]


@pytest.mark.parametrize(("role", "entry", "settings", "refusal"), OWN_PLAYS,
                         ids=[f"{role}-{entry}" for role, entry, _, _ in OWN_PLAYS])
def test_a_role_played_without_the_preflight_still_refuses_a_bad_setting(tmp_path, role, entry, settings, refusal):
    """site.yml's roles leave out the checks its preflight has just made; a
    play of one's own, giving the role another value, gets them. Run in
    check mode: the refusal comes first, before anything that would change."""
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{"name": "A play of one's own", "hosts": "gearman_servers",
                                     "gather_facts": False,
                                     "tasks": [{"name": "The role", "ansible.builtin.include_role": {
                                         "name": role, "tasks_from": entry}, "vars": settings}]}]))
    rc, out = preflight(tmp_path, {"gs1": {}}, playbook=play, extra=("--check",))
    assert refused(rc, out) == [refusal]


# Settings of the roles whose checks the preflight does not make: site.yml's
# one apt run makes them first, through each role's packages entry point.
BEFORE_THE_APT_RUN = [
    ({"gearman_tls_enabled": True, "gearman_tls_port": 99999},
     "gearman_tls_port takes a TCP port from 1 to 65535 other than gearmand's own (4730), not 99999."),
    ({"gearman_firewall_enabled": True, "gearman_firewall_allowed": ["not-an-ip"]},
     "gearman_firewall_allowed or gearman_firewall_scrapers: 'not-an-ip' is no IPv4 or IPv6 address or CIDR network."),
    ({"gearman_python_requirements": {"gear": "0.16.0"}},
     "argument 'gearman_python_requirements' is of type dict and we were unable to convert to list"),
]


@pytest.mark.parametrize(("settings", "refusal"), BEFORE_THE_APT_RUN, ids=lambda v: next(iter(v)) if isinstance(v, dict) else "")
def test_the_one_apt_run_comes_after_the_checks_the_preflight_leaves_to_the_roles(tmp_path, settings, refusal):
    """Run in check mode on a stand-in job server that is a worker too (it
    says it runs systemd, as a real one would, for gearmand's part of the
    host's look): the refusal comes before the apt run is reached."""
    rc, out = preflight(tmp_path, {"gs1": {}}, workers={"gs1": {}}, playbook=ROOT / "playbooks/packages.yml",
                        extra=("--check",), gearman_gather_subset=["min"], ansible_become=False,
                        ansible_python_interpreter=sys.executable, gearman_init_system="systemd", **settings)
    # (Ansible's own argument check says more around the refusal.)
    messages = refused(rc, out)
    assert len(messages) == 1 and refusal in messages[0], messages
    assert "Install every role's packages in one apt run" not in out


def test_site_yml_leaves_the_checks_out_only_after_its_preflight():
    imports = yaml.safe_load((ROOT / "playbooks/site.yml").read_text())
    assert imports[0]["ansible.builtin.import_playbook"] == "preflight.yml"
    assert "vars" not in imports[0]
    for entry in imports[1:]:
        assert entry.get("vars", {}).get("_gearman_checked") is True or entry["ansible.builtin.import_playbook"] \
            == "queue_db_tls.yml", entry


def test_the_monitoring_host_is_checked_without_a_node_exporter(tmp_path):
    rc, out = preflight(tmp_path, {"gs1": {}}, monitoring={"mon1": {}}, gearman_prometheus_port=0)
    assert refused(rc, out) == ["gearman_prometheus_port takes a TCP port (1-65535); it is 0."]


def test_every_bad_monitoring_setting_is_named_in_one_refusal(tmp_path):
    rc, out = preflight(tmp_path, {"gs1": {}}, gearman_prometheus_node_exporter=True,
                        gearman_prometheus_retention="15", gearman_prometheus_port=0,
                        gearman_prometheus_growing_for="10m")
    assert refused(rc, out) == [
        "gearman_prometheus_retention takes a Prometheus duration, a number and a unit (ms, s, m, h, d, w, y)"
        " such as 30s or 15m; it is '15'. gearman_prometheus_port takes a TCP port (1-65535); it is 0."]


@pytest.mark.parametrize(
    ("settings", "refusal"),
    BAD_SETTINGS,
    ids=[",".join(f"{name}={value!r}" for name, value in settings.items()) for settings, _ in BAD_SETTINGS],
)
def test_bad_settings_are_refused_naming_the_variable(tmp_path, settings, refusal):
    rc, out = preflight(tmp_path, {"gs1": {}}, **settings)
    messages = refused(rc, out)
    assert len(messages) == 1, messages
    assert refusal in messages[0], messages


def test_a_job_server_listening_beyond_loopback_needs_the_firewall_or_an_explicit_yes(tmp_path):
    """gearmand has no authentication: whoever reaches its port may submit
    jobs and send admin commands."""
    rc, out = preflight(tmp_path, {"gs1": {"gearman_listen_address": "10.0.0.21"}})
    assert refused(rc, out) == [
        "gs1 would listen on 10.0.0.21 with nothing in front: gearmand has no authentication, so whoever"
        " reaches that port can submit jobs, read the queue and send admin commands. Set"
        " gearman_firewall_enabled: true for gs1 (only the inventory's clients and workers get in), or keep"
        " gearman_listen_address on loopback, or, where the network itself keeps strangers out, set"
        " gearman_allow_unguarded_listen: true."
    ]
    for guard in ({"gearman_firewall_enabled": True}, {"gearman_allow_unguarded_listen": True}):
        rc, out = preflight(tmp_path, {"gs1": {"gearman_listen_address": "10.0.0.21", **guard}})
        assert rc == 0, (guard, out)


def test_an_exporter_beyond_loopback_needs_the_firewall_or_an_explicit_yes(tmp_path):
    rc, out = preflight(tmp_path, {"gs1": {"gearman_exporter_listen_address": "10.0.0.21"}})
    assert refused(rc, out) == [
        "gs1's exporter would serve the queue's function names and counts on 10.0.0.21 with nothing in front."
        " Set gearman_firewall_enabled: true for gs1 (only gearman_firewall_scraper_groups and"
        " gearman_firewall_scrapers get in), or gearman_exporter_listen_address to a loopback address, or,"
        " where the network itself keeps strangers out, gearman_allow_unguarded_listen: true."
    ]
    for guard in ({"gearman_firewall_enabled": True}, {"gearman_allow_unguarded_listen": True},
                  {"gearman_exporter_enabled": False}):
        rc, out = preflight(tmp_path, {"gs1": {"gearman_exporter_listen_address": "10.0.0.21", **guard}})
        assert rc == 0, (guard, out)


def test_the_exporter_may_not_log_in_as_the_queue_user(tmp_path):
    rc, out = preflight(tmp_path, {"gs1": {"gearman_exporter_mysql_user": "gearman"}})
    assert refused(rc, out) == [
        "gs1 would give its exporter the queue user gearman (gearman_exporter_mysql_user), whose privileges the"
        " exporter's read-only grant would replace: give the exporter a user of its own."
    ]


def test_the_queue_password_is_needed_by_the_mysql_queue_only(tmp_path):
    # Job servers only (the database is elsewhere), no password at all.
    external = {"gearman_mysql_host": "127.0.0.1"}
    rc, out = preflight(tmp_path, {"gs1": {"gearman_queue_type": "builtin"}}, db={}, gearman_mysql_password=None)
    assert rc == 0, out
    rc, out = preflight(tmp_path, {"gs1": external}, db={}, gearman_mysql_password=None)
    assert refused(rc, out) == [
        "gearman_mysql_password is not set, empty or holds white space, and the MySQL queue needs it. Set it for"
        " the job servers, for example in group_vars/all/vault.yml encrypted with ansible-vault; gearmand reads"
        " it from /etc/gearmand.conf, which it splits on white space, so choose one without spaces, tabs or"
        " newlines."
    ]


def test_tls_with_the_firewall_is_refused_when_clients_or_workers_are_elsewhere(tmp_path):
    """The firewall admits other hosts to the TLS port only when TLS is on;
    the samples speak plain TCP to gearmand's port."""
    server = {"gearman_listen_address": "10.0.0.21", "gearman_firewall_enabled": True, "gearman_tls_enabled": True}
    rc, out = preflight(tmp_path, {"gs1": server}, workers={"wk1": {"ansible_host": "10.0.0.31"}})
    assert refused(rc, out) == [
        "gs1 has the TLS front and the firewall on, with clients or workers on other hosts (wk1): the firewall"
        " admits other hosts to the TLS port only, while the sample clients and workers, and the job server list"
        " they read, use gearmand's plain port. Turn gearman_tls_enabled off for gs1, or keep its clients and"
        " workers on gs1 itself."
    ]
    rc, out = preflight(tmp_path, {"gs1": {**server, "gearman_tls_enabled": False}},
                        workers={"wk1": {"ansible_host": "10.0.0.31"}})
    assert rc == 0, out


def test_two_servers_may_not_share_a_queue_table(tmp_path):
    shared = {"gearman_mysql_host": "db.example.com", "gearman_mysql_table": "gearman_queue"}
    rc, out = preflight(tmp_path, {"gs1": {**shared, "gearman_source_address": "10.0.0.21"},
                                   "gs2": {**shared, "gearman_source_address": "10.0.0.22"}},
                        db={"db1": {"ansible_host": "db.example.com"}})
    # Each server is told which other one shares its table, and nothing else.
    assert sorted(refused(rc, out)) == [
        "gs1 and gs2 use the same queue table gearman.gearman_queue on db1:"
        " each job server replays and deletes every row of its table, so give each one its own gearman_mysql_table.",
        "gs2 and gs1 use the same queue table gearman.gearman_queue on db1:"
        " each job server replays and deletes every row of its table, so give each one its own gearman_mysql_table.",
    ]


def test_servers_with_their_own_tables_or_databases_pass(tmp_path):
    rc, out = preflight(
        tmp_path,
        {
            "gs1": {"gearman_mysql_host": "db.example.com", "gearman_mysql_table": "queue_gs1",
                    "gearman_source_address": "10.0.0.21"},
            "gs2": {"gearman_mysql_host": "db.example.com", "gearman_mysql_table": "queue_gs2",
                    "gearman_source_address": "10.0.0.22"},
            # Loopback: each server has its own local database.
            "gs3": {"gearman_mysql_host": "127.0.0.1"},
            "gs4": {"gearman_mysql_host": "127.0.0.1"},
        },
        db={"db1": {"ansible_host": "db.example.com"}},
    )
    assert rc == 0, out


def test_a_queue_database_the_inventory_does_not_name_is_refused(tmp_path):
    """gearman_mysql_host must name a gearman_db host the way the inventory
    does, or that host's gearman_mysql role makes no table and no login for
    the server (and gearmand would make a table of its own schema)."""
    rc, out = preflight(
        tmp_path,
        {"gs1": {"gearman_mysql_host": "db.internal", "gearman_source_address": "10.0.0.21"}},
        db={"db1": {"ansible_host": "10.0.0.5", "gearman_mysql_bind_address": "10.0.0.5"}},
    )
    assert refused(rc, out) == [
        "gs1 keeps its queue at db.internal (gearman_mysql_host), which is none of the gearman_db hosts (db1)"
        " by inventory name, ansible_host or gearman_mysql_bind_address, so none of them would create its"
        " table and login: set gearman_mysql_host on gs1 to one of those names of its database host."
    ]
    rc, out = preflight(
        tmp_path,
        {"gs1": {"gearman_mysql_host": "10.0.0.5", "gearman_source_address": "10.0.0.21"}},
        db={"db1": {"ansible_host": "db1.example.com", "gearman_mysql_bind_address": "10.0.0.5"}},
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
                    # Each job server has its own local database.
                    "vars": {"gearman_mysql_password": "unit-pw", "gearman_mysql_host": "127.0.0.1", **local},
                    "children": {
                        "gearman_servers": {"hosts": {"gs1": None, "gs2": {"gearman_port": 0}}},
                        "gearman_db": {"hosts": {"db1": None}},
                    },
                }
            }
        )
    )
    result = ansible_playbook("-i", str(inventory), str(playbook))
    assert refused(result.returncode, result.stdout + result.stderr) == [
        "gearman_port: takes a TCP port from 1 to 65535, not 0."
    ]
    assert list(marks.iterdir()) == []
