"""Behaviour of the all-in-one host: gearmand under systemd, a queue that
lives in MySQL and survives a restart, and a password that stays secret."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

# As in molecule.yml (where $$ stands for $): quotes, $, # and % go through
# every layer, templates, gearmand.conf and the database modules.
PASSWORD = "mol'e\"cule$q#ue%pw"
PORT = 4730
TABLE = "gearman.gearman_queue"
PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))


def wait_until(predicate, timeout=30.0, step=0.5):
    """Poll predicate until it is true; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def main_pid(host) -> int:
    out = host.check_output("systemctl show -p MainPID --value gearman-job-server")
    return int(out.strip())


def accepting(host) -> bool:
    return host.run("gearadmin --getpid -h 127.0.0.1 -p %s", str(PORT)).rc == 0


def restart_gearmand(host) -> None:
    before = main_pid(host)
    host.check_output("systemctl restart gearman-job-server")
    assert wait_until(lambda: accepting(host)), "gearmand did not come back after restart"
    assert main_pid(host) not in (0, before)


def queued_rows(host, function: str) -> int:
    out = host.check_output(
        "mysql -N -B -e %s",
        f"SELECT COUNT(*) FROM {TABLE} WHERE function_name = '{function}'",
    )
    return int(out.strip())


def gearadmin_queued(host, function: str) -> int | None:
    """Jobs gearmand holds for function (None: function unknown)."""
    for line in host.check_output("gearadmin --status -h 127.0.0.1 -p %s", str(PORT)).splitlines():
        fields = line.split("\t")
        if fields[0] == function:
            return int(fields[1])
    return None


def test_gearmand_is_a_running_enabled_systemd_service(host):
    service = host.service("gearman-job-server")
    assert service.is_running
    assert service.is_enabled
    props = host.check_output("systemctl show -p Type,Restart,User gearman-job-server")
    assert "Type=simple" in props
    assert "Restart=on-failure" in props
    assert "User=gearman" in props
    pid = main_pid(host)
    assert host.check_output("ps -o comm= -p %s", str(pid)).strip() == "gearmand"
    # Started by systemd: its parent is PID 1.
    assert host.check_output("ps -o ppid= -p %s", str(pid)).strip() == "1"


def test_gearmand_reads_params_from_etc_default(host):
    args = host.check_output("ps -o args= -p %s", str(main_pid(host)))
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


def test_gearmand_comes_back_after_restart(host):
    restart_gearmand(host)
    assert host.service("gearman-job-server").is_running


def test_background_jobs_persist_in_mysql_across_a_restart_until_a_worker_drains_them(host):
    function = f"molecule_{uuid.uuid4().hex[:8]}"
    jobs = 5
    for n in range(jobs):
        host.check_output("gearman -h 127.0.0.1 -p %s -b -f %s %s", str(PORT), function, f'{{"n":{n}}}')
    # No worker: every job is a row in the queue table.
    assert queued_rows(host, function) == jobs
    assert gearadmin_queued(host, function) == jobs

    restart_gearmand(host)
    # gearmand replayed the table: the jobs are queued again, and still rows.
    assert wait_until(lambda: gearadmin_queued(host, function) == jobs, timeout=15)
    assert queued_rows(host, function) == jobs

    # A worker takes every job; each one done is deleted from the table.
    done = host.run("timeout 30 gearman -h 127.0.0.1 -p %s -w -f %s -c %s", str(PORT), function, str(jobs))
    assert done.rc == 0, done.stderr
    for n in range(jobs):
        assert f'{{"n":{n}}}' in done.stdout
    assert wait_until(lambda: queued_rows(host, function) == 0, timeout=10)
    assert gearadmin_queued(host, function) == 0


def test_password_is_not_on_any_command_line(host):
    assert PASSWORD not in host.check_output("ps -eo args")


def test_password_is_in_no_world_readable_file(host):
    listing = host.run(
        "grep -rlsF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev %s /etc /run /var /tmp /root /home /opt /srv",
        PASSWORD,
    ).stdout.split()
    assert "/etc/gearmand.conf" in listing, "the password file was not found: the search is broken"
    readable = [path for path in listing if host.file(path).mode & 0o004]
    assert readable == []
    conf = host.file("/etc/gearmand.conf")
    assert (conf.user, conf.group, conf.mode) == ("root", "gearman", 0o640)


def test_queue_user_has_privileges_on_the_queue_database_only(host):
    grants = host.check_output("mysql -N -B -e %s", "SHOW GRANTS FOR 'gearman'@'localhost'")
    on = set(re.findall(r" ON (\S+) TO ", grants))
    assert on == {"*.*", "`gearman`.*"}
    global_grant = next(line for line in grants.splitlines() if " ON *.* " in line)
    assert global_grant.startswith("GRANT USAGE ON *.*")
    # ... and may log in from the job server hosts only (here: this host).
    hosts = host.check_output("mysql -N -B -e %s", "SELECT Host FROM mysql.user WHERE User = 'gearman'").split()
    assert sorted(hosts) == ["127.0.0.1", "localhost"]


def play(host, playbook: str, *extra: str) -> subprocess.CompletedProcess:
    """ansible-playbook against this molecule host; skipped outside molecule."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.skip("not run by molecule: no inventory to play against")
    return subprocess.run(
        ["ansible-playbook", "-i", str(Path(inventory).parent), "--limit", host.backend.get_hostname(),
         str(PROJECT / playbook), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
    )


def test_check_mode_on_a_converged_host_reports_no_change(host):
    name = host.backend.get_hostname()
    result = play(host, "site.yml", "--check", "-v")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    recap = re.search(rf"^{re.escape(name)}\s+:.*$", result.stdout, re.MULTILINE)
    assert recap, result.stdout[-3000:]
    assert " changed=0 " in recap.group(0), result.stdout[-5000:]
    # The play's output, even with -v, never shows the queue password.
    assert PASSWORD not in result.stdout + result.stderr
