"""Behaviour of the all-in-one host: gearmand under systemd, a queue that
lives in MySQL and survives a restart, a queue user with exactly what it
needs, and a password that stays secret."""

from __future__ import annotations

import base64
import re
import uuid

import pytest

from conftest import ALL_WORKERS, DB, PORT, TABLE, VENV, leaks, started_at, wait_until

# What gearmand's MySQL queue does with its table: look it up and read it at
# start (SHOW TABLES, SELECT), add a row per background job (INSERT), delete
# it when the job is done (DELETE). It never updates a row, and the role
# creates the table, so no UPDATE and no CREATE. Nothing else, nowhere else.
QUEUE_PRIVILEGES = {"SELECT", "INSERT", "DELETE"}


def test_site_yml_again_changes_nothing_and_prints_no_secret(host, gearman, password):
    """The idempotence check, done here rather than by molecule's own step so
    that its output can be read, and first, before any test touches the host.
    The host was converged by a user's own playbook calling the installed
    collection's roles by name (converge.yml); the collection's own
    playbook, jobqueue.gearman.site, run again on it changes nothing, and its output
    with -v (results as JSON, where quotes come escaped) never shows the
    queue password. (--check on converged hosts: the hardening and cluster
    scenarios.)"""
    name = host.backend.get_hostname()
    result = gearman.play("jobqueue.gearman.site", "-v")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    recap = re.search(rf"^{re.escape(name)}\s+:.*$", result.stdout, re.MULTILINE)
    assert recap, result.stdout[-3000:]
    changed = re.findall(r"^changed: \[.*?\].*$|^(?:TASK|RUNNING HANDLER) \[.*$", result.stdout, re.MULTILINE)
    assert " changed=0 " in recap.group(0), "\n".join(
        task for task, after in zip(changed, changed[1:] + [""]) if after.startswith("changed:"))
    assert leaks(result.stdout + result.stderr, password) == []


# The services the roles set up, and the files of settings each reads when
# it starts.
SETTINGS_OF = {
    "mariadb.service": ["/etc/mysql/mariadb.conf.d/60-gearman.cnf"],
    "gearman-job-server.service": ["/etc/default/gearman-job-server", "/etc/gearmand.conf",
                                   "/etc/systemd/system/gearman-job-server.service.d/override.conf"],
    "gearman-exporter.service": ["/etc/gearman-exporter/config.json"],
    "prometheus-node-exporter.service": ["/etc/default/prometheus-node-exporter"],
    "prometheus.service": ["/etc/prometheus/prometheus.yml", "/etc/default/prometheus"],
}


def test_every_service_first_started_after_its_settings_were_written(gearman):
    """Second, before any test restarts a service: on the host as the first
    converge left it, no service has ever run on other settings than those
    its role wrote (its first start, as its journal has it, comes after the
    last write of each of its files). A package that starts its service on
    install runs it on its packaged settings until a restart (MariaDB,
    Prometheus and the node exporter would listen where the role does not
    say); a role that skipped that restart would leave it so."""
    early = {}
    for unit, paths in SETTINGS_OF.items():
        starts = started_at(gearman.host, unit)
        written = max(gearman.written(path) for path in paths)
        if not starts or starts[0] <= written:
            early[unit] = (starts[:1], written)
    assert early == {}


# Changes by hand to each part of the deployment that a role looks at
# before it does anything. Where a role's look finds nothing to do, the
# role leaves out its install, write and start tasks as a whole: each
# change must still be found and undone by a re-run, also where it is the
# only one in its role (so the services and the files are two runs).
UNITS_STOPPED_BY_HAND = [
    "mariadb.service",  # gearman_mysql
    "gearman-job-server.service",  # gearman
    "gearman-exporter.service",  # gearman_exporter
    "gearman-worker-python@1.service",  # gearman_workers
    "prometheus-node-exporter.service",  # gearman_prometheus, the node exporter
    "prometheus.service",  # gearman_prometheus
]
FILES_CHANGED_BY_HAND = [
    "/etc/default/gearman-job-server",  # gearman
    "/etc/gearmand.conf",  # gearman, the one with the password
    "/etc/mysql/mariadb.conf.d/60-gearman.cnf",  # gearman_mysql, the server
    "/etc/gearman-exporter/config.json",  # gearman_exporter, with its password
    "/etc/default/prometheus-node-exporter",  # gearman_prometheus, the node exporter
    "/etc/prometheus/prometheus.yml",  # gearman_prometheus
]
REMOVED_BY_HAND = [
    "/usr/local/bin/gearman-client.py",  # gearman_python
    f"{VENV}/requirements.txt",
    "/etc/systemd/system/gearman-worker-php@.service",  # gearman_workers
]


def test_a_rerun_starts_what_was_stopped_and_puts_back_a_dropped_login(host, gearman, workers_restored):
    """Third, on the converged host: every role's service stopped and
    disabled, and an exporter's database login dropped, with no file
    touched. One run of the scenario's own playbook (converge.yml: here it,
    not site.yml, puts Prometheus on the job server) starts and enables each
    again and makes the login again."""
    exporter_logins = gearman.sql(
        "SELECT Host FROM mysql.user WHERE User = 'gearman_exporter' ORDER BY Host").split()
    assert exporter_logins, "no exporter login to drop"
    try:
        gearman.sql(f"DROP USER 'gearman_exporter'@'{exporter_logins[0]}'")
        gearman.systemctl("disable", "--now", *UNITS_STOPPED_BY_HAND)

        result = gearman.play("molecule/default/converge.yml")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        units = {unit: (host.service(unit).is_running, host.service(unit).is_enabled)
                 for unit in UNITS_STOPPED_BY_HAND}
    finally:
        # Whatever happened, the services the later tests need run again.
        gearman.systemctl("enable", "--now", *UNITS_STOPPED_BY_HAND, check=False)

    assert units == {unit: (True, True) for unit in UNITS_STOPPED_BY_HAND}
    assert gearman.sql(
        "SELECT Host FROM mysql.user WHERE User = 'gearman_exporter' ORDER BY Host").split() == exporter_logins
    assert wait_until(gearman.accepting)


def test_a_rerun_puts_back_files_changed_by_hand_and_shows_no_secret(host, gearman, password, workers_restored):
    """Fourth: in every role that can leave out its tasks, a file edited (the
    two that hold the password among them) or removed, and nothing else.
    One run puts each back as it was, and its output with -v and --diff
    never shows the password."""
    saved = {path: host.file(path).content for path in FILES_CHANGED_BY_HAND + REMOVED_BY_HAND}
    try:
        for path in FILES_CHANGED_BY_HAND:
            host.check_output("echo '# changed by hand' >> %s", path)
        host.check_output("rm" + " %s" * len(REMOVED_BY_HAND), *REMOVED_BY_HAND)

        result = gearman.play("molecule/default/converge.yml", "-v", "--diff")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        after = {path: host.file(path).content if host.file(path).exists else None for path in saved}
        # The php workers were running when their unit template went: they
        # run again, under the unit written back.
        workers = {unit: gearman.unit(unit, "ActiveState", "NeedDaemonReload") for unit in ALL_WORKERS}
    finally:
        # Whatever happened, the later tests find the files as they were.
        for path, content in saved.items():
            if not host.file(path).exists or host.file(path).content != content:
                host.check_output("echo %s | base64 -d > %s", base64.b64encode(content).decode(), path)
        host.check_output("systemctl daemon-reload")

    assert after == saved
    assert workers == {unit: {"ActiveState": "active", "NeedDaemonReload": "no"} for unit in ALL_WORKERS}
    assert leaks(result.stdout + result.stderr, password) == []
    assert "# changed by hand" in result.stdout  # the diff of the files without a secret
    assert wait_until(gearman.accepting)


# The looks site.yml's one look of the host stands in for, by task, in the
# order site.yml runs them here, up to gearman_python's; then the workers'.
LOOKS_BEFORE_THE_CHANGE = [
    "gearman_mysql : Look at the server settings for the queue and at MariaDB's service",
    "gearman : Look at gearmand's folders, files, service, account and process",
    "gearman_exporter : Look at the exporter, its settings, its unit and its account",
    "gearman_client_config : Look at the job server list and its folder",
    "gearman_php : Look at PHP's modules and at the sample client and worker",
    "gearman_python : Look at the environment, its requirements, its interpreter and the samples",
]
WORKERS_LOOK = "gearman_workers : Look at the workers' scripts, units, instances and account"
SAMPLE_WORKER = "/usr/local/bin/gearman-worker.py"


def test_site_yml_looks_at_the_host_once_until_a_role_changes_it(host, gearman, workers_restored):
    """Fifth: site.yml looks at the host once, with its packages, for every
    role it runs there, and each role reads that look instead of its own
    for as long as nothing has changed the host. Only the Python sample
    worker edited by hand: one run puts it back and changes nothing else.
    The roles up to gearman_python read the host's look (which shows
    gearman_python its sample changed); the workers, after that change,
    look again. Read from the host's look, their unit would name the
    edited script's checksum: it would be written, the workers restarted,
    and the next run would write it back again."""
    saved = host.file(SAMPLE_WORKER).content
    pids = {unit: gearman.main_pid(unit) for unit in ALL_WORKERS}
    try:
        host.check_output("echo '# changed by hand' >> %s", SAMPLE_WORKER)
        result, tasks = gearman.play_report("jobqueue.gearman.site")
        after = host.file(SAMPLE_WORKER).content
    finally:
        # Whatever happened, the later tests find the sample as it was.
        if host.file(SAMPLE_WORKER).content != saved:
            host.check_output("echo %s | base64 -d > %s", base64.b64encode(saved).decode(), SAMPLE_WORKER)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    looked = {name: not outcome.get("skipped") for name, outcome in tasks
              if outcome.get("action") == "jobqueue.gearman.state_info"}
    assert looked["gearman_common : List the packages installed on this host, and look at what its roles will"]
    assert {name: looked.get(name) for name in LOOKS_BEFORE_THE_CHANGE} == dict.fromkeys(LOOKS_BEFORE_THE_CHANGE, False)
    assert looked[WORKERS_LOOK]
    assert [name for name, outcome in tasks if outcome.get("changed")] == [
        "gearman_python : Install the sample client and worker"]
    assert after == saved
    assert {unit: gearman.main_pid(unit) for unit in ALL_WORKERS} == pids


DROP_IN = "/etc/systemd/system/gearman-job-server.service.d/override.conf"


@pytest.mark.parametrize("drop_in", ["missing", "unread"])
def test_a_stopped_job_server_on_its_packaged_unit_is_started_under_the_drop_in(host, gearman, workers_restored,
                                                                                drop_in):
    """Sixth: gearmand stopped, and systemd holding the packaged unit
    without the role's drop-in (Type=forking, which never ends starting
    with the role's settings). The drop-in either missing, as where the
    package came first (installed by hand, its first start failed), or on
    disk but never read, as after a run stopped between writing it and
    systemd's reload. One run starts gearmand under the drop-in."""
    saved = host.file(DROP_IN).content
    try:
        gearman.systemctl("stop", "gearman-job-server.service")
        host.check_output("mv %s /root/override.conf && systemctl daemon-reload", DROP_IN)
        if drop_in == "unread":
            host.check_output("mv /root/override.conf %s", DROP_IN)
        assert gearman.unit("gearman-job-server.service", "Type") == {"Type": "forking"}

        result = gearman.play("molecule/default/converge.yml")
        state = gearman.unit("gearman-job-server.service", "ActiveState", "Type", "DropInPaths")
        # Besides the role's, a distribution may have drop-ins for every service.
        state["DropInPaths"] = DROP_IN in state["DropInPaths"].split()
    finally:
        # Whatever happened, the drop-in is back and read.
        if not host.file(DROP_IN).exists or host.file(DROP_IN).content != saved:
            host.check_output("echo %s | base64 -d > %s", base64.b64encode(saved).decode(), DROP_IN)
        host.check_output("systemctl daemon-reload")

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert state == {"ActiveState": "active", "Type": "simple", "DropInPaths": True}
    assert host.file(DROP_IN).content == saved
    assert wait_until(gearman.accepting)


def test_gearmand_is_a_running_enabled_systemd_service(host, gearman):
    service = host.service("gearman-job-server")
    assert service.is_running
    assert service.is_enabled
    unit = gearman.unit("gearman-job-server", "Type", "Restart", "User")
    assert unit == {"Type": "simple", "Restart": "on-failure", "User": "gearman"}
    pid = gearman.main_pid()
    assert host.check_output("ps -o comm= -p %s", str(pid)).strip() == "gearmand"
    # Started by systemd: its parent is PID 1.
    assert host.check_output("ps -o ppid= -p %s", str(pid)).strip() == "1"


def test_gearmand_reads_params_from_etc_default(host, gearman):
    args = host.check_output("ps -o args= -p %s", str(gearman.main_pid()))
    assert "--queue-type=mysql" in args
    assert "--listen=127.0.0.1" in args
    assert "--daemon" not in args


def test_gearmand_listens_on_loopback_only(host):
    # Run as gearman: without CAP_SYS_PTRACE, root in a container cannot see
    # which process owns another user's socket.
    sockets = [
        line.split()[3]
        for line in host.check_output("runuser -u gearman -- ss -Hltnp").splitlines()
        if '"gearmand"' in line
    ]
    assert sockets == [f"127.0.0.1:{PORT}"]


def test_gearmand_comes_back_after_restart(host, gearman):
    gearman.restart_gearmand()
    assert host.service("gearman-job-server").is_running


def test_background_jobs_persist_in_mysql_across_a_restart_until_a_worker_drains_them(host, gearman):
    function = f"molecule_{uuid.uuid4().hex[:8]}"
    jobs = 5
    for n in range(jobs):
        host.check_output("gearman -h 127.0.0.1 -p %s -b -f %s %s", str(PORT), function, f'{{"n":{n}}}')
    # No worker: every job is a row in the queue table.
    assert gearman.rows(function) == jobs
    assert gearman.queued(function) == {function: jobs}

    gearman.restart_gearmand()
    # gearmand replayed the table: the jobs are queued again, and still rows.
    assert wait_until(lambda: gearman.queued(function) == {function: jobs}, timeout=15)
    assert gearman.rows(function) == jobs

    # A worker takes every job; each one done is deleted from the table.
    done = host.run("timeout 30 gearman -h 127.0.0.1 -p %s -w -f %s -c %s", str(PORT), function, str(jobs))
    assert done.rc == 0, done.stderr
    for n in range(jobs):
        assert f'{{"n":{n}}}' in done.stdout
    assert wait_until(lambda: gearman.rows(function) == 0, timeout=10)
    assert gearman.queued(function) == {function: 0}


def test_password_is_not_on_any_command_line(host, password):
    assert leaks(host.check_output("ps -eo args"), password) == []


def test_password_is_in_no_world_readable_file(host, password):
    found = set()
    for piece in {password, *leaks(password, password)}:
        found |= set(host.run(
            "grep -rlsF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -e %s "
            "/etc /run /var /tmp /root /home /opt /srv",
            piece,
        ).stdout.split())
    assert "/etc/gearmand.conf" in found, "the password file was not found: the search is broken"
    readable = [path for path in found if host.file(path).mode & 0o004]
    assert readable == []
    conf = host.file("/etc/gearmand.conf")
    assert (conf.user, conf.group, conf.mode) == ("root", "gearman", 0o640)


def test_every_accepted_job_is_on_disk_by_default(gearman):
    """MariaDB flushes its log at every commit: gearmand commits each job
    before it tells the client, so an accepted job survives a power loss."""
    assert gearman.sql("SELECT @@innodb_flush_log_at_trx_commit") == "1"


def test_queue_user_may_do_what_gearmand_needs_on_its_own_table_only(gearman):
    login_hosts = gearman.sql("SELECT Host FROM mysql.user WHERE User = 'gearman'").split()
    # gearmand logs in over TCP as gearman@127.0.0.1; localhost is the socket.
    assert sorted(login_hosts) == ["127.0.0.1", "localhost"]
    for login_host in login_hosts:
        grants = gearman.sql(f"SHOW GRANTS FOR 'gearman'@'{login_host}'").splitlines()
        on = {}
        for grant in grants:
            found = re.match(r"GRANT (.+) ON (\S+) TO ", grant)
            assert found, grant
            assert "WITH GRANT OPTION" not in grant, grant
            on[found.group(2)] = {p.strip() for p in found.group(1).split(",")}
        # On its own queue table only, not the whole database.
        assert on == {"*.*": {"USAGE"}, f"`{DB}`.`{TABLE}`": QUEUE_PRIVILEGES}, (login_host, grants)


