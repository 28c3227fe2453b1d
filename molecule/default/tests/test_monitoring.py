"""The queue seen from Prometheus' side: the exporter beside the job server
shows the tutorial's experiment (jobs wait with no worker, then drain) and
says which part is down when gearmand or the database is, without failing
the scrape; Prometheus on the host (converge.yml) sees the same, with the
workers' job counts through the node exporter, and its alert rules fire."""

from __future__ import annotations

import hashlib
import json
import math
import uuid

from conftest import ALL_WORKERS, FUNCTIONS, PROJECT, metric, prometheus_targets, settled_done_count, wait_until

EXPORTER = "gearman-exporter.service"


def test_exporter_runs_as_its_own_unprivileged_account(host, gearman):
    assert host.service(EXPORTER).is_running
    assert host.service(EXPORTER).is_enabled
    assert gearman.unit(EXPORTER, "User", "Restart") == {"User": "gearman-exporter", "Restart": "always"}
    assert host.check_output("ps -o user= -p %s", str(gearman.main_pid(EXPORTER))).strip() == "gearman-exporter"


def test_exporter_keeps_its_database_password_out_of_sight(host, gearman, password):
    # Its own password, derived one way from the queue user's.
    own = hashlib.sha256(f"{password}:gearman-exporter".encode()).hexdigest()
    command_line = host.file(f"/proc/{gearman.main_pid(EXPORTER)}/cmdline").content_string
    assert own not in command_line and password not in command_line
    settings = host.file("/etc/gearman-exporter/config.json")
    assert own in settings.content_string and password not in settings.content_string
    assert (settings.user, settings.group, settings.mode) == ("root", "gearman-exporter", 0o640)
    folder = host.file("/etc/gearman-exporter")
    assert (folder.user, folder.group, folder.mode) == ("root", "gearman-exporter", 0o750)
    # The login reads function names and enqueue times; never the jobs' data.
    login = f"MYSQL_PWD={own} mysql -N -B -h 127.0.0.1 -u gearman_exporter -e %s"
    assert host.run(login, "SELECT COUNT(function_name), MIN(queued_at) FROM gearman.gearman_queue").rc == 0
    refused = host.run(login, "SELECT data FROM gearman.gearman_queue LIMIT 1")
    assert refused.rc != 0 and "denied" in refused.stderr
    assert host.run(login, "DELETE FROM gearman.gearman_queue WHERE 0").rc != 0


def test_waiting_jobs_show_with_no_worker_then_drain(gearman, workers_restored):
    gearman.systemctl("stop", *ALL_WORKERS)
    gearman.submit("php", 5, uuid.uuid4().hex[:8])

    waiting = gearman.metrics()
    assert metric(waiting, "gearman_up") == 1 and metric(waiting, "gearman_queue_database_up") == 1
    for function in FUNCTIONS:
        assert metric(waiting, "gearman_function_jobs_queued", function=function) == 5, function
        assert metric(waiting, "gearman_function_workers", function=function) == 0, function
        assert metric(waiting, "gearman_queue_rows", function=function) == 5, function
        assert 0 < metric(waiting, "gearman_queue_oldest_job_age_seconds", function=function) < 300, function
    assert metric(waiting, "gearman_workers_connected") == 0

    gearman.systemctl("start", *ALL_WORKERS)
    assert wait_until(lambda: all(
        metric(m, "gearman_function_jobs_queued", function=f) == 0 and metric(m, "gearman_queue_rows", function=f) == 0
        for m in [gearman.metrics()] for f in FUNCTIONS), timeout=60)
    drained = gearman.metrics()
    for function in FUNCTIONS:
        assert metric(drained, "gearman_function_workers", function=function) == len(ALL_WORKERS), function
        assert metric(drained, "gearman_queue_oldest_job_age_seconds", function=function) == 0, function


def test_a_stopped_database_is_reported_in_a_scrape_that_still_answers(gearman, workers_restored):
    gearman.systemctl("stop", "mariadb")
    down = gearman.metrics()
    assert metric(down, "gearman_queue_database_up") == 0
    assert metric(down, "gearman_up") == 1
    # No stale numbers for the part that did not answer.
    assert not [name for name, _ in down if name.startswith("gearman_queue_") and name != "gearman_queue_database_up"]

    gearman.systemctl("start", "mariadb")
    assert metric(gearman.metrics(), "gearman_queue_database_up") == 1


def test_a_stopped_job_server_is_reported_in_a_scrape_that_still_answers(gearman, workers_restored):
    gearman.systemctl("stop", "gearman-job-server")
    down = gearman.metrics()
    assert metric(down, "gearman_up") == 0
    assert metric(down, "gearman_queue_database_up") == 1
    assert not [name for name, _ in down if name.startswith("gearman_function_")]

    gearman.systemctl("start", "gearman-job-server")
    assert wait_until(gearman.accepting)
    assert metric(gearman.metrics(), "gearman_up") == 1


def test_prometheus_sees_the_experiment_and_the_no_worker_alert_goes_pending(gearman, workers_restored):
    # Every target answers: the exporter, the node exporter, Prometheus itself.
    assert wait_until(lambda: {job: health for (job, _), health in prometheus_targets(gearman.host).items()}
                      == {"gearman": "up", "node": "up", "prometheus": "up"}, timeout=60)
    before = settled_done_count(gearman.host)

    gearman.systemctl("stop", *ALL_WORKERS)
    gearman.submit("python", 5, uuid.uuid4().hex[:8])
    assert wait_until(lambda: gearman.query("sum(gearman_function_jobs_queued)") == 10, timeout=60)
    assert gearman.query("sum(gearman_function_workers)") == 0
    assert gearman.query("sum(gearman_queue_rows)") == 10
    server = gearman.host.ansible.get_variables()["inventory_hostname"]
    assert wait_until(lambda: {("GearmanFunctionWithoutWorkers", server, f, "pending") for f in FUNCTIONS}
                      <= gearman.alerts(), timeout=60), gearman.alerts()

    gearman.systemctl("start", *ALL_WORKERS)
    assert wait_until(lambda: gearman.query("sum(gearman_function_jobs_queued)") == 0, timeout=90)
    # Exactly the 10 jobs, counted by the workers (across their restart).
    assert settled_done_count(gearman.host, expected=before + 10) == before + 10
    assert wait_until(lambda: not {a for a in gearman.alerts() if a[0] == "GearmanFunctionWithoutWorkers"}, timeout=60)
    # Each job's duration is in the workers' histogram (100 ms of work by default).
    assert gearman.query("sum(gearman_worker_job_duration_seconds_count)") == gearman.query(
        "sum(gearman_worker_jobs_total)")


def test_the_alert_rules_pass_promtool_and_fire_as_their_tests_say(host):
    host.check_output("promtool check rules /etc/prometheus/gearman-alerts.yml")
    host.check_output("promtool check config /etc/prometheus/prometheus.yml")
    # The rules' unit tests: series in, alerts out, at the role's default
    # thresholds (roles/gearman_prometheus/files/gearman-alerts.test.yml).
    tests = (PROJECT / "roles/gearman_prometheus/files/gearman-alerts.test.yml").read_text()
    host.check_output("mkdir -p /tmp/rules-test && cp /etc/prometheus/gearman-alerts.yml /tmp/rules-test/")
    host.check_output("printf '%%s' %s > /tmp/rules-test/tests.yml", tests)
    result = host.run("cd /tmp/rules-test && promtool test rules tests.yml")
    assert result.rc == 0 and "SUCCESS" in result.stdout + result.stderr, result.stdout + result.stderr


def test_every_dashboard_query_answers_in_prometheus(gearman):
    """docs/grafana-dashboard.json, as Grafana would send its queries: every
    panel finds series on this host (the experiment above ran minutes ago)."""
    dashboard = json.loads((PROJECT / "docs/grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$server", ".*").replace("$__rate_interval", "5m")
            values = [float(series["value"][1]) for series in gearman.prometheus("query", query=expr)["result"]]
            assert [v for v in values if not math.isnan(v)], (panel["title"], expr, values)
