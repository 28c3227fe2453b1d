"""The tutorial's experiment, with figures: stop the workers, run the client,
the jobs wait in MySQL (and survive a gearmand restart); start the workers,
every job is done exactly once and the table empties. Client and worker need
not share a language: PHP jobs are done by Python workers and the other way
round."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from test_job_server import PORT, TABLE, restart_gearmand, wait_until

PHP_WORKERS = ["gearman-worker-php@1.service", "gearman-worker-php@2.service"]
PYTHON_WORKERS = ["gearman-worker-python@1.service"]
ALL_WORKERS = PHP_WORKERS + PYTHON_WORKERS
FUNCTIONS = ("sendEmail", "resizeImage")
VENV = "/opt/gearman-python"
CLIENTS = {"php": "gearman-client.php", "python": "gearman-client.py"}


def systemctl(host, action: str, *units: str, check: bool = True):
    """systemctl ACTION UNIT..., each unit its own argument."""
    command = "systemctl " + action + " %s" * len(units)
    return host.check_output(command, *units) if check else host.run(command, *units)


def sample_rows(host) -> int:
    out = host.check_output(
        "mysql -N -B -e %s",
        f"SELECT COUNT(*) FROM {TABLE} WHERE function_name IN ('sendEmail', 'resizeImage')",
    )
    return int(out.strip())


def queued(host) -> dict[str, int]:
    status = host.check_output("gearadmin --status -h 127.0.0.1 -p %s", str(PORT))
    return {f[0]: int(f[1]) for f in (line.split("\t") for line in status.splitlines()) if f[0] in FUNCTIONS}


def now(host) -> str:
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'").strip()
    time.sleep(1)
    return since


def worker_log(host, since: str, *units: str) -> str:
    """What the given worker units (default: all) logged since then."""
    units = units or ("gearman-worker-*@*.service",)
    return host.check_output(
        "journalctl --no-pager -o cat" + " -u %s" * len(units) + " --since %s", *units, since
    )


def jobs_done(log: str, run: str) -> list[tuple[str, dict]]:
    """(function, payload) of each job the log reports done for this run."""
    return [
        (function, json.loads(payload.replace("\\/", "/")))
        for function, payload in re.findall(r": done (\w+) \S+ (\{.*\})$", log, re.MULTILINE)
        if run in payload
    ]


def submit(host, language: str, count: int, run: str):
    result = host.run(
        f"{CLIENTS[language]} --count %s --email %s --image %s", str(count), f"{run}@example.com", f"/tmp/{run}.png"
    )
    assert result.rc == 0, result.stderr
    assert len(re.findall(r"queued: (\S+)", result.stdout)) == 2 * count
    return result


@pytest.fixture
def workers_restored(host):
    """Whatever a test stops, every worker runs again afterwards."""
    yield
    systemctl(host, "start", *ALL_WORKERS, check=False)


def test_php_has_the_gearman_extension(host):
    assert "gearman" in host.check_output("php -m").split()


def test_python_library_is_in_its_own_virtual_environment(host):
    host.check_output("%s/bin/python3 -c 'import gear'", VENV)
    # The system Python is left alone.
    assert host.run("python3 -c 'import gear'").rc != 0
    assert host.file("/usr/local/bin/gearman-worker.py").content_string.startswith(f"#!{VENV}/bin/python3\n")


def test_workers_run_under_systemd_as_an_unprivileged_user(host):
    for unit in ALL_WORKERS:
        assert host.service(unit).is_running, unit
        assert host.service(unit).is_enabled, unit
        props = host.check_output("systemctl show -p User,Restart %s", unit)
        assert "User=gearman-worker" in props and "Restart=always" in props
        pid = host.check_output("systemctl show -p MainPID --value %s", unit).strip()
        assert host.check_output("ps -o user= -p %s", pid).strip() == "gearman-worker"


def test_jobs_wait_in_mysql_without_workers_then_are_done_exactly_once(host, workers_restored):
    systemctl(host, "stop", *ALL_WORKERS)
    since = now(host)
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    submit(host, "php", 50, run)
    # The client returned at once: nothing waited for a worker.
    assert time.monotonic() - started < 20
    assert sample_rows(host) == 100
    assert queued(host) == {"sendEmail": 50, "resizeImage": 50}

    restart_gearmand(host)
    assert wait_until(lambda: queued(host) == {"sendEmail": 50, "resizeImage": 50}, timeout=15)
    assert sample_rows(host) == 100

    systemctl(host, "start", *ALL_WORKERS)
    assert wait_until(lambda: sample_rows(host) == 0, timeout=30), f"{sample_rows(host)} rows left after 30 s"
    assert queued(host) == {"sendEmail": 0, "resizeImage": 0}
    # Handles change when gearmand replays the table; the payloads do not.
    assert wait_until(lambda: worker_log(host, since).count(run) >= 100, timeout=10)
    done = sorted((function, payload["seq"]) for function, payload in jobs_done(worker_log(host, since), run))
    expected = sorted((function, seq) for function in FUNCTIONS for seq in range(1, 51))
    assert done == expected, "each job must be done exactly once"


@pytest.mark.parametrize(
    ("client", "workers"),
    [("php", PYTHON_WORKERS), ("python", PHP_WORKERS)],
    ids=["php-client-python-worker", "python-client-php-worker"],
)
def test_a_job_from_one_language_is_done_by_a_worker_in_the_other(host, workers_restored, client, workers):
    systemctl(host, "stop", *ALL_WORKERS)
    since = now(host)
    run = uuid.uuid4().hex[:8]
    submit(host, client, 5, run)
    assert sample_rows(host) == 10
    systemctl(host, "start", *workers)
    assert wait_until(lambda: sample_rows(host) == 0, timeout=30)
    assert wait_until(lambda: len(jobs_done(worker_log(host, since), run)) >= 10, timeout=10)
    done = jobs_done(worker_log(host, since, *workers), run)
    assert sorted((f, p["seq"]) for f, p in done) == sorted((f, s) for f in FUNCTIONS for s in range(1, 6))
    assert {p["lang"] for _, p in done} == {client}


@pytest.mark.parametrize("language", ["php", "python"])
def test_client_fails_clearly_when_no_job_server_answers(host, language):
    host.check_output("printf '127.0.0.1:4799\\n' > /tmp/no-server")
    result = host.run(f"{CLIENTS[language]} --servers /tmp/no-server")
    assert result.rc != 0
    assert "no job server answers" in result.stderr


@pytest.mark.parametrize("unit", ["gearman-worker-php@1.service", "gearman-worker-python@1.service"])
def test_a_payload_that_is_not_json_fails_the_job_not_the_worker(host, workers_restored, unit):
    others = [u for u in ALL_WORKERS if u != unit]
    systemctl(host, "stop", *others)
    restarts = host.check_output("systemctl show -p NRestarts --value %s", unit)
    pid = host.check_output("systemctl show -p MainPID --value %s", unit)
    since = now(host)
    host.check_output("gearman -h 127.0.0.1 -p %s -b -f sendEmail %s", str(PORT), "not json")
    assert wait_until(lambda: "payload is not JSON" in worker_log(host, since, unit), timeout=15)
    assert wait_until(lambda: sample_rows(host) == 0, timeout=10)
    assert host.service(unit).is_running
    assert host.check_output("systemctl show -p NRestarts --value %s", unit) == restarts
    assert host.check_output("systemctl show -p MainPID --value %s", unit) == pid


@pytest.mark.parametrize("unit", ["gearman-worker-php@1.service", "gearman-worker-python@1.service"])
def test_sigterm_lets_the_worker_finish_the_job_in_hand(host, workers_restored, unit):
    """A worker stopped mid-job completes it: the job is not done twice and
    not left in the table."""
    others = [u for u in ALL_WORKERS if u != unit]
    systemctl(host, "stop", *others)
    since = now(host)
    run = uuid.uuid4().hex[:8]
    # A slow job: 3 s of simulated work for this one worker.
    host.check_output("mkdir -p /run/systemd/system/%s.d", unit)
    host.check_output(
        "printf '[Service]\\nEnvironment=GEARMAN_WORK_MS=3000\\n' > /run/systemd/system/%s.d/slow.conf", unit
    )
    try:
        host.check_output("systemctl daemon-reload && systemctl restart %s", unit)
        assert wait_until(lambda: "ready for" in worker_log(host, since, unit), timeout=15)
        host.check_output("gearman-client.php --count 1 --function sendEmail --email %s", f"{run}@example.com")
        time.sleep(1)
        host.check_output("systemctl stop %s", unit)
        log = worker_log(host, since, unit)
        assert "stop asked, finishing the job in hand" in log
        assert len(jobs_done(log, run)) == 1
        assert sample_rows(host) == 0
    finally:
        host.run("rm -rf /run/systemd/system/%s.d && systemctl daemon-reload", unit)
