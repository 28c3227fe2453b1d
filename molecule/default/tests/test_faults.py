"""Faults, counted: N background jobs wait in MySQL while no worker runs, a
fault strikes, the workers start, and every job must be done. Background
jobs are at-least-once, so duplicates are counted and reported, never
hidden; a lost job fails the test. Each test prints
`FAULT <name>: submitted N, done N, lost 0, duplicated D`."""

from __future__ import annotations

import collections
import subprocess
import time
import uuid

import pytest

from test_job_server import PORT, TABLE, accepting, main_pid, wait_until
from test_workers import ALL_WORKERS, jobs_done, now, sample_rows, systemctl, worker_log

N = 500  # jobs a fault test submits: half from the PHP client, half from Python


def run_rows(host, run: str) -> int:
    out = host.check_output("mysql -N -B -e %s", f"SELECT COUNT(*) FROM {TABLE} WHERE data LIKE '%{run}%'")
    return int(out.strip())


def submit_half(host, client: str, run: str) -> None:
    # --count K queues K sendEmail and K resizeImage jobs.
    result = host.run(
        f"{client} --count %s --email %s --image %s", str(N // 4), f"{run}@example.com", f"/tmp/{run}.png"
    )
    assert result.rc == 0, result.stderr


def count_and_report(host, name: str, since: str, run: str) -> None:
    assert wait_until(lambda: run_rows(host, run) == 0, timeout=180, step=2), (
        f"{run_rows(host, run)} of {N} jobs still in the table after 180 s"
    )
    assert wait_until(lambda: len(jobs_done(worker_log(host, since), run)) >= N, timeout=20)
    done = collections.Counter(
        (function, payload["lang"], payload["seq"]) for function, payload in jobs_done(worker_log(host, since), run)
    )
    expected = {(f, lang, seq) for f in ("sendEmail", "resizeImage") for lang in ("php", "python")
                for seq in range(1, N // 4 + 1)}
    lost = expected - set(done)
    duplicated = sum(done.values()) - len(done)
    print(f"\nFAULT {name}: submitted {N}, done {len(set(done) & expected)}, lost {len(lost)}, duplicated {duplicated}")
    assert not lost, f"lost: {sorted(lost)[:10]}"
    assert set(done) <= expected


def queue_with_workers_stopped(host) -> tuple[str, str]:
    systemctl(host, "stop", *ALL_WORKERS)
    since = now(host)
    run = uuid.uuid4().hex[:8]
    submit_half(host, "gearman-client.php", run)
    submit_half(host, "gearman-client.py", run)
    assert run_rows(host, run) == N
    return since, run


def start_workers(host) -> None:
    systemctl(host, "start", *ALL_WORKERS)


@pytest.fixture(autouse=True)
def workers_restored(host):
    yield
    host.run("systemctl start gearman-job-server mariadb")
    systemctl(host, "start", *ALL_WORKERS, check=False)


def test_gearmand_killed_with_sigkill(host):
    since, run = queue_with_workers_stopped(host)
    before = main_pid(host)
    host.check_output("systemctl kill -s SIGKILL gearman-job-server")
    # Restart=on-failure brings it back; it replays the table.
    assert wait_until(lambda: main_pid(host) not in (0, before) and accepting(host), timeout=30)
    start_workers(host)
    count_and_report(host, "gearmand SIGKILL", since, run)


def test_mariadb_restarted_under_a_running_gearmand(host):
    systemctl(host, "stop", *ALL_WORKERS)
    since = now(host)
    run = uuid.uuid4().hex[:8]
    pid = main_pid(host)
    submit_half(host, "gearman-client.php", run)
    host.check_output("systemctl restart mariadb")
    # gearmand reconnects: jobs queued after the restart are stored too.
    submit_half(host, "gearman-client.py", run)
    assert run_rows(host, run) == N
    start_workers(host)
    count_and_report(host, "MariaDB restart", since, run)
    assert main_pid(host) == pid, "gearmand itself must not have restarted"


def test_host_rebooted_with_jobs_waiting(host):
    since, run = queue_with_workers_stopped(host)
    name = host.backend.get_hostname()
    subprocess.run(["docker", "restart", name], check=True, capture_output=True)
    # Everything comes back by itself: MariaDB, gearmand (after it), the workers.
    assert wait_until(
        lambda: host.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded"), timeout=120
    )
    assert wait_until(lambda: accepting(host), timeout=60)
    count_and_report(host, "host reboot", since, run)
    for unit in ALL_WORKERS:
        assert host.service(unit).is_running, f"{unit} did not start at boot"


def test_worker_killed_in_the_middle_of_jobs(host):
    since, run = queue_with_workers_stopped(host)
    start_workers(host)
    # SIGKILL a worker of each language a few times while they drain the
    # queue; gearmand hands their jobs in hand to another worker.
    for _ in range(3):
        time.sleep(2)
        for unit in ("gearman-worker-php@1.service", "gearman-worker-python@1.service"):
            host.run("systemctl kill -s SIGKILL %s", unit)
    count_and_report(host, "worker SIGKILL", since, run)


def test_a_job_that_kills_its_workers_is_dropped_after_the_retries(host):
    """A poison job: every worker that takes it dies. gearmand hands it out
    --job-retries times (3 by default), then drops it and deletes its row,
    and the queue goes on."""
    assert wait_until(lambda: sample_rows(host) == 0, timeout=120), "the queue must be empty to start with"
    systemctl(host, "stop", *ALL_WORKERS[1:])
    unit = ALL_WORKERS[0]
    run = uuid.uuid4().hex[:8]
    host.check_output(
        "gearman -h 127.0.0.1 -p %s -b -f sendEmail %s", str(PORT), f'{{"poison":"{run}","work_ms":60000}}'
    )
    assert run_rows(host, run) == 1
    kills = 0
    for _ in range(6):
        if run_rows(host, run) == 0:
            break
        # Wait until the worker holds the job, then kill it (as a crash would).
        assert wait_until(lambda: running(host) == 1, timeout=30), "no worker took the job"
        host.check_output("systemctl kill -s SIGKILL %s", unit)
        kills += 1
        wait_until(lambda: running(host) == 0, timeout=10)
        time.sleep(3)  # Restart=always brings the worker back after 2 s
    print(f"\nFAULT poison job: handed out {kills} times, then dropped; rows left {run_rows(host, run)}")
    assert kills == 3
    assert wait_until(lambda: run_rows(host, run) == 0, timeout=10)
    # The queue still works.
    marker = uuid.uuid4().hex[:8]
    since = now(host)
    host.check_output("gearman-client.php --count 1 --email %s --image %s", f"{marker}@example.com", f"/{marker}.png")
    assert wait_until(lambda: len(jobs_done(worker_log(host, since), marker)) == 2, timeout=30)


def running(host) -> int:
    for line in host.check_output("gearadmin --status -h 127.0.0.1 -p %s", str(PORT)).splitlines():
        fields = line.split("\t")
        if fields[0] == "sendEmail":
            return int(fields[2])
    return 0
