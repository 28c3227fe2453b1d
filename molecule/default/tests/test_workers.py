"""The tutorial's experiment, with figures: stop the workers, run the client,
the jobs wait in MySQL (and survive a gearmand restart); start the workers,
every job is done exactly once and the table empties."""

from __future__ import annotations

import json
import re
import time
import uuid

from test_job_server import PORT, TABLE, restart_gearmand, wait_until

WORKERS = "gearman-worker-php@*.service"
FUNCTIONS = ("sendEmail", "resizeImage")


def sample_rows(host) -> int:
    out = host.check_output(
        "mysql -N -B -e %s",
        f"SELECT COUNT(*) FROM {TABLE} WHERE function_name IN ('sendEmail', 'resizeImage')",
    )
    return int(out.strip())


def queued(host) -> dict[str, int]:
    status = host.check_output("gearadmin --status -h 127.0.0.1 -p %s", str(PORT))
    return {f[0]: int(f[1]) for f in (line.split("\t") for line in status.splitlines()) if f[0] in FUNCTIONS}


def worker_log(host, since: str) -> str:
    return host.check_output("journalctl --no-pager -o cat -u %s --since %s", WORKERS, since)


def test_php_has_the_gearman_extension(host):
    assert "gearman" in host.check_output("php -m").split()


def test_workers_run_under_systemd_as_an_unprivileged_user(host):
    for n in (1, 2):
        unit = f"gearman-worker-php@{n}.service"
        assert host.service(unit).is_running
        assert host.service(unit).is_enabled
        props = host.check_output("systemctl show -p User,Restart %s", unit)
        assert "User=gearman-worker" in props and "Restart=always" in props


def test_jobs_wait_in_mysql_without_workers_then_are_done_exactly_once(host):
    host.check_output("systemctl stop %s", WORKERS)
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'").strip()
    time.sleep(1)
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    client = host.run(
        "gearman-client.php --count 50 --email %s --image %s", f"{run}@example.com", f"/tmp/{run}.png"
    )
    client_seconds = time.monotonic() - started
    assert client.rc == 0, client.stderr
    assert len(re.findall(r"queued: (\S+)", client.stdout)) == 100
    # The client returned at once: nothing waited for a worker.
    assert client_seconds < 20
    assert sample_rows(host) == 100
    assert queued(host) == {"sendEmail": 50, "resizeImage": 50}

    restart_gearmand(host)
    assert wait_until(lambda: queued(host) == {"sendEmail": 50, "resizeImage": 50}, timeout=15)
    assert sample_rows(host) == 100

    host.check_output("systemctl start gearman-worker-php@1.service gearman-worker-php@2.service")
    assert wait_until(lambda: sample_rows(host) == 0, timeout=30), f"{sample_rows(host)} rows left after 30 s"
    assert queued(host) == {"sendEmail": 0, "resizeImage": 0}
    # Handles change when gearmand replays the table; the payloads do not.
    assert wait_until(lambda: worker_log(host, since).count(run) >= 100, timeout=10)
    done = [
        (function, json.loads(payload.replace("\\/", "/"))["seq"])
        for function, payload in re.findall(r": done (\w+) \S+ (\{.*\})$", worker_log(host, since), re.MULTILINE)
        if run in payload
    ]
    expected = [(function, seq) for function in FUNCTIONS for seq in range(1, 51)]
    assert sorted(done) == sorted(expected), "each job must be done exactly once"


def test_client_fails_clearly_when_no_job_server_answers(host):
    host.check_output("printf '127.0.0.1:4799\\n' > /tmp/no-server")
    result = host.run("gearman-client.php --servers /tmp/no-server")
    assert result.rc != 0
    assert "no job server answers" in result.stderr


def test_a_payload_that_is_not_json_fails_the_job_not_the_worker(host):
    restarts = host.check_output("systemctl show -p NRestarts --value gearman-worker-php@1.service")
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'").strip()
    time.sleep(1)
    host.check_output("gearman -h 127.0.0.1 -p %s -b -f sendEmail %s", str(PORT), "not json")
    assert wait_until(lambda: "payload is not JSON" in worker_log(host, since), timeout=15)
    assert wait_until(lambda: sample_rows(host) == 0, timeout=10)
    assert host.service("gearman-worker-php@1.service").is_running
    assert host.check_output("systemctl show -p NRestarts --value gearman-worker-php@1.service") == restarts
