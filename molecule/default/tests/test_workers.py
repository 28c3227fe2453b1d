"""The tutorial's experiment, with figures: stop the workers, run the client,
the jobs wait in MySQL (and survive a gearmand restart); start the workers,
every job is done exactly once and the table empties. Client and worker need
not share a language: PHP jobs are done by Python workers and the other way
round."""

from __future__ import annotations

import re
import time
import uuid

import pytest
import yaml

from conftest import ALL_WORKERS, CLIENTS, FUNCTIONS, PHP_WORKERS, PORT, PROJECT, PYTHON_WORKERS, VENV, wait_until

BOTH_QUEUED = {"sendEmail": 50, "resizeImage": 50}


def test_php_has_the_gearman_extension(host):
    assert "gearman" in host.check_output("php -m").split()


def test_python_library_is_in_its_own_virtual_environment(host):
    host.check_output("%s/bin/python3 -c 'import gear'", VENV)
    # Exactly the pinned set, each at its pinned version (pip refuses any
    # package without its hash), and pip itself.
    pins = yaml.safe_load((PROJECT / "roles/gearman_python/defaults/main.yml").read_text())
    expected = {line.split()[0].lower() for line in pins["gearman_python_requirements"]}
    frozen = {line.lower() for line in host.check_output("%s/bin/python3 -m pip freeze --all", VENV).split()}
    assert {p for p in frozen if not p.startswith("pip==")} == expected
    # The system Python is left alone.
    assert host.run("python3 -c 'import gear'").rc != 0
    assert host.file("/usr/local/bin/gearman-worker.py").content_string.startswith(f"#!{VENV}/bin/python3\n")


def test_workers_run_under_systemd_as_an_unprivileged_user(host, gearman):
    for unit in ALL_WORKERS:
        assert host.service(unit).is_running, unit
        assert host.service(unit).is_enabled, unit
        assert gearman.unit(unit, "User", "Restart") == {"User": "gearman-worker", "Restart": "always"}
        assert host.check_output("ps -o user= -p %s", str(gearman.main_pid(unit))).strip() == "gearman-worker"


def test_jobs_wait_in_mysql_without_workers_then_are_done_exactly_once(gearman, workers_restored):
    gearman.systemctl("stop", *ALL_WORKERS)
    since = gearman.now()
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    gearman.submit("php", 50, run)
    # The client returned at once: nothing waited for a worker.
    assert time.monotonic() - started < 20
    assert gearman.rows() == 100
    assert gearman.queued() == BOTH_QUEUED

    gearman.restart_gearmand()
    assert wait_until(lambda: gearman.queued() == BOTH_QUEUED, timeout=15)
    assert gearman.rows() == 100

    gearman.systemctl("start", *ALL_WORKERS)
    assert wait_until(lambda: gearman.rows() == 0, timeout=30), f"{gearman.rows()} rows left after 30 s"
    assert gearman.queued() == {"sendEmail": 0, "resizeImage": 0}
    # Handles change when gearmand replays the table; the payloads do not.
    assert wait_until(lambda: len(gearman.done(since, run)) >= 100, timeout=10)
    done = sorted((function, payload["seq"]) for function, payload in gearman.done(since, run))
    expected = sorted((function, seq) for function in FUNCTIONS for seq in range(1, 51))
    assert done == expected, "each job must be done exactly once"


@pytest.mark.parametrize(
    ("client", "workers"),
    [("php", PYTHON_WORKERS), ("python", PHP_WORKERS)],
    ids=["php-client-python-worker", "python-client-php-worker"],
)
def test_a_job_from_one_language_is_done_by_a_worker_in_the_other(gearman, workers_restored, client, workers):
    gearman.systemctl("stop", *ALL_WORKERS)
    since = gearman.now()
    run = uuid.uuid4().hex[:8]
    gearman.submit(client, 5, run)
    assert gearman.rows() == 10
    gearman.systemctl("start", *workers)
    assert wait_until(lambda: gearman.rows() == 0, timeout=30)
    assert wait_until(lambda: len(gearman.done(since, run)) >= 10, timeout=10)
    done = gearman.done(since, run, *workers)
    assert sorted((f, p["seq"]) for f, p in done) == sorted((f, s) for f in FUNCTIONS for s in range(1, 6))
    assert {p["lang"] for _, p in done} == {client}


@pytest.mark.parametrize("language", ["php", "python"])
def test_client_fails_clearly_when_no_job_server_answers(host, language):
    host.check_output("printf '127.0.0.1:4799\\n' > /tmp/no-server")
    result = host.run(f"{CLIENTS[language]} --servers /tmp/no-server")
    assert result.rc != 0
    assert "no job server answers" in result.stderr


@pytest.mark.parametrize("unit", ["gearman-worker-php@1.service", "gearman-worker-python@1.service"])
def test_a_payload_that_is_not_json_fails_the_job_not_the_worker(host, gearman, workers_restored, unit):
    gearman.systemctl("stop", *(u for u in ALL_WORKERS if u != unit))
    before = gearman.unit(unit, "NRestarts", "MainPID")
    since = gearman.now()
    host.check_output("gearman -h 127.0.0.1 -p %s -b -f sendEmail %s", str(PORT), "not json")
    assert wait_until(lambda: "payload is not JSON" in gearman.worker_log(since, unit), timeout=15)
    assert wait_until(lambda: gearman.rows() == 0, timeout=10)
    assert host.service(unit).is_running
    assert gearman.unit(unit, "NRestarts", "MainPID") == before


@pytest.mark.parametrize("unit", ["gearman-worker-php@1.service", "gearman-worker-python@1.service"])
def test_work_that_throws_fails_the_job_and_the_worker_goes_on(host, gearman, workers_restored, unit):
    """A job whose work raises is failed (WORK_FAIL: gearmand drops it and
    its row), not left assigned to a live worker for ever, and the worker,
    the same process, takes the next job."""
    gearman.systemctl("stop", *(u for u in ALL_WORKERS if u != unit))
    before = gearman.unit(unit, "NRestarts", "MainPID")
    since = gearman.now()
    run = uuid.uuid4().hex[:8]
    host.check_output("gearman -h 127.0.0.1 -p %s -b -f sendEmail %s", str(PORT), f'{{"fail":"boom {run}"}}')
    assert wait_until(lambda: f"boom {run}" in gearman.worker_log(since, unit), timeout=15)
    assert re.search(rf"FAILED sendEmail \S+: Runtime(Error|Exception): boom {run}", gearman.worker_log(since, unit))
    assert wait_until(lambda: gearman.rows() == 0 and gearman.running("sendEmail") == 0, timeout=10)
    host.check_output("gearman-client.php --count 1 --function sendEmail --email %s", f"{run}@example.com")
    assert wait_until(lambda: len(gearman.done(since, run, unit)) == 1, timeout=15)
    assert gearman.unit(unit, "NRestarts", "MainPID") == before


@pytest.mark.parametrize("unit", ["gearman-worker-php@1.service", "gearman-worker-python@1.service"])
def test_a_work_time_of_zero_is_taken_as_zero(host, gearman, unit):
    """gearman_workers_work_ms: 0 reaches the worker as 0 ms (PHP once read
    "0" as unset and worked 100 ms a job)."""
    since = gearman.now()
    host.check_output("mkdir -p /run/systemd/system/%s.d", unit)
    host.check_output(
        "printf '[Service]\\nEnvironment=GEARMAN_WORK_MS=0\\n' > /run/systemd/system/%s.d/zero.conf", unit)
    try:
        host.check_output("systemctl daemon-reload && systemctl restart %s", unit)
        # The log since then may hold the start before this one (100 ms):
        # wait for this start's line.
        assert wait_until(lambda: "(0 ms of work a job)" in gearman.worker_log(since, unit), timeout=15), (
            gearman.worker_log(since, unit))
    finally:
        host.run("rm -rf /run/systemd/system/%s.d && systemctl daemon-reload && systemctl restart %s", unit, unit)


@pytest.mark.parametrize("unit", ["gearman-worker-php@1.service", "gearman-worker-python@1.service"])
def test_sigterm_lets_the_worker_finish_the_job_in_hand(host, gearman, workers_restored, unit):
    """A worker stopped mid-job completes it: the stop waits for the job's
    remaining time, the job is done once and not left in the table."""
    work_ms = 4000
    gearman.systemctl("stop", *(u for u in ALL_WORKERS if u != unit))
    since = gearman.now()
    run = uuid.uuid4().hex[:8]
    # A slow job: 4 s of simulated work for this one worker.
    host.check_output("mkdir -p /run/systemd/system/%s.d", unit)
    host.check_output(
        "printf '[Service]\\nEnvironment=GEARMAN_WORK_MS=%s\\n' > /run/systemd/system/%s.d/slow.conf",
        str(work_ms), unit,
    )
    try:
        host.check_output("systemctl daemon-reload && systemctl restart %s", unit)
        assert wait_until(lambda: "ready for" in gearman.worker_log(since, unit), timeout=15)
        host.check_output("gearman-client.php --count 1 --function sendEmail --email %s", f"{run}@example.com")
        assert wait_until(lambda: gearman.running("sendEmail") == 1, timeout=10, step=0.1), "no worker took the job"
        taken = time.monotonic()
        time.sleep(1)
        host.check_output("systemctl stop %s", unit)
        stopped = time.monotonic()
        log = gearman.worker_log(since, unit)
        assert "stop asked, finishing the job in hand" in log
        assert len(gearman.done(since, run, unit)) == 1
        assert gearman.rows() == 0
        # The stop returned only when the job's time was up, not when the
        # signal arrived (a sleep the signal cuts short would end it early).
        assert stopped - taken >= work_ms / 1000 - 0.5, f"stopped {stopped - taken:.1f} s after the job began"
    finally:
        host.run("rm -rf /run/systemd/system/%s.d && systemctl daemon-reload", unit)


# One sample Python worker with no work to do, against a gearmand of its own
# with the in-memory queue (so the figure is the worker's, not MySQL's): N
# jobs queued by the sample Python client, then the time from the worker's
# start until none is left. Prints "jobs seconds".
DRAIN_RATE = r"""
import os, subprocess, sys, tempfile, time
jobs, port = int(sys.argv[1]), 4799
def queued():
    out = subprocess.run(["gearadmin", "-h", "127.0.0.1", "-p", str(port), "--status"],
                         capture_output=True, text=True).stdout
    counts = [int(line.split("\t")[1]) for line in out.splitlines() if line.startswith("sendEmail\t")]
    return counts[0] if counts else 0
with tempfile.TemporaryDirectory() as tmp:
    with open(tmp + "/servers", "w") as f:
        f.write("127.0.0.1:%d\n" % port)
    server = subprocess.Popen(["gearmand", "--listen=127.0.0.1", "--port=%d" % port, "--queue-type=builtin",
                               "--log-file=" + tmp + "/log", "--pid-file=" + tmp + "/pid"])
    try:
        while subprocess.run(["gearadmin", "-h", "127.0.0.1", "-p", str(port), "--getpid"],
                             capture_output=True).returncode:
            time.sleep(0.1)
        subprocess.run(["gearman-client.py", "--servers", tmp + "/servers", "--count", str(jobs),
                        "--function", "sendEmail"], check=True, stdout=subprocess.DEVNULL)
        assert queued() == jobs, queued()
        started = time.monotonic()
        # Counting its jobs for Prometheus, as the deployed workers do.
        worker = subprocess.Popen(["gearman-worker.py", "--servers", tmp + "/servers", "--work-ms", "0",
                                   "--id", "rate"], stdout=subprocess.DEVNULL,
                                  env=dict(os.environ, GEARMAN_METRICS_FILE=tmp + "/rate.prom"))
        while queued() and time.monotonic() - started < 300:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        worker.terminate()
        worker.wait(30)
        counted = [l for l in open(tmp + "/rate.prom") if l.startswith('gearman_worker_jobs_total{worker="rate",function="sendEmail",outcome="done"}')]
        print(jobs - queued(), round(elapsed, 3), counted[0].split()[-1])
    finally:
        server.terminate()
        server.wait(30)
"""


def test_one_python_worker_drains_jobs_without_waiting_on_nagle(host):
    """gear leaves Nagle's algorithm on; the sample worker turns it off (and
    counts its jobs for Prometheus, as deployed). With
    it on, every job waits for a delayed ACK (about 40 ms: some 23 jobs/s);
    without it, one worker drains well over a thousand a second here. The
    bound is set far from both, so that a loaded machine does not fail it
    and Nagle coming back does; the figure is printed."""
    jobs = 5000
    done, seconds, counted = host.check_output("%s/bin/python3 -c %s %s", VENV, DRAIN_RATE, str(jobs)).split()
    rate = int(done) / float(seconds)
    print(f"\none Python worker, no work per job: {done} jobs in {seconds} s, {rate:.0f} jobs/s")
    assert int(done) == jobs
    # Its count for Prometheus, written as it stopped, has every job.
    assert int(counted) == jobs
    assert rate >= 1000, f"{rate:.0f} jobs/s: is TCP_NODELAY still set on the worker's connections?"
