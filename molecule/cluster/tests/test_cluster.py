"""The cluster as users run it: a database host, two job servers, a worker
host and a web host, deployed over SSH with sudo. Each job server keeps its
own queue table on db1 and the queue user logs in from each server's address
to its own table only, over TLS only; jobs submitted through either server are done on wk1;
a job server, the database or the worker host going away loses nothing; and
a configuration deployed while a client submits loses no submission. Each
story prints `CLUSTER <name>: submitted N, done N, lost 0, duplicated D`."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import threading
import time
import uuid

import pytest

from conftest import (DB, EXPORTER_PORT, FUNCTIONS, cluster_print, metric, parse_metrics, prometheus_alerts,
                      prometheus_targets, prometheus_value, settled_done_count, started_at, wait_until, written_at)

# The schema the project's queue tables have (gearmand's own would have
# when_to_run INT and case-insensitive text columns).
SCHEMA = {"unique_key": "varbinary(64)", "function_name": "varbinary(255)", "priority": "int(11)",
          "data": "longblob", "when_to_run": "bigint(20)", "queued_at": "timestamp(6)"}


# Logs in to the queue database as gearmand does, with /etc/gearmand.conf
# and, over TLS, the CA of its client settings (checking the server's
# certificate and name), and counts the rows of the table named on the
# command line; with "plain" after it, without TLS.
READ_AS_GEARMAND = """
import sys, pymysql
conf = dict(line.strip()[2:].split("=", 1) for line in open("/etc/gearmand.conf") if line.startswith("--"))
ca = [line.split("=", 1)[1].strip() for line in open("/etc/gearman/mysql/my.cnf") if line.startswith("ssl-ca")]
tls = None if sys.argv[2:] == ["plain"] else {"ca": ca[0], "check_hostname": True}
try:
    db = pymysql.connect(host=conf["mysql-host"], port=int(conf["mysql-port"]), user=conf["mysql-user"],
                         password=conf["mysql-password"], database=conf["mysql-db"], ssl=tls)
    with db.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        cipher = cursor.fetchone()[1]
        cursor.execute("SELECT COUNT(*) FROM `%s`" % sys.argv[1])
        print("rows", cursor.fetchone()[0], "cipher", cipher or "none")
except pymysql.MySQLError as error:
    print("refused", error)
"""


# gearmand as the service runs it (its database settings from
# /etc/gearmand.conf, as the gearman account), on a spare port, with the
# deployed client settings but the system's public CAs in place of the
# database's: it must refuse the database's certificate.
WRONG_CA_GEARMAND = """
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed 's|^ssl-ca = .*|ssl-ca = /etc/ssl/certs/ca-certificates.crt|' /etc/gearman/mysql/my.cnf > "$dir/my.cnf"
chmod 755 "$dir"; chmod 644 "$dir/my.cnf"
cd /
runuser -u gearman -- env MARIADB_HOME="$dir" MYSQL_HOME="$dir" timeout 20 /usr/sbin/gearmand \\
    --queue-type=mysql --listen=127.0.0.1 --port=4797 --log-file=stderr --verbose=ERROR
"""

# A worker of its own function that takes one job and then either holds it
# for ever ("hold") or does it at once ("finish"), with the samples' library.
PROBE_WORKER = """
import sys, time, gear
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
worker = gear.Worker("keepalive-probe")
worker.addServer(host, port)
worker.waitForServer()
worker.registerFunction("keepaliveProbe")
job = worker.getJob()
print("took", job.arguments.decode(), flush=True)
if mode == "hold":
    time.sleep(3600)
job.sendWorkComplete(b"done")
print("done", flush=True)
"""
PROBE_PYTHON = "/opt/gearman-python/bin/python3"


def new_run() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def _restored(cluster_restored):
    yield


# Packages only the roles bring, for each host of the cluster, that site.yml
# installs in one apt run a host (Prometheus on web1 and the node exporter
# on wk1 among them); and gearmand's, which stay with their role, after its
# login check and its settings.
ONE_RUN = {"db1": {"mariadb-server", "python3-pymysql"},
           "gm1": {"python3-prometheus-client", "nftables"}, "gm2": {"python3-prometheus-client", "nftables"},
           "wk1": {"php-gearman", "python3-venv", "prometheus-node-exporter"},
           "web1": {"php-gearman", "python3-venv", "prometheus"}}
APART = {"gearman-job-server"}
# Each service a package brings, and the settings its role writes that it
# must have had from its first start: MariaDB's and gearmand's own, and the
# addresses Prometheus and the node exporter listen on (every one, on their
# packaged settings).
FIRST_STARTED_ON = {("db1", "mariadb.service"): "/etc/mysql/mariadb.conf.d/60-gearman.cnf",
                    ("gm1", "gearman-job-server.service"): "/etc/default/gearman-job-server",
                    ("web1", "prometheus.service"): "/etc/default/prometheus",
                    ("wk1", "prometheus-node-exporter.service"): "/etc/default/prometheus-node-exporter"}
# Of those, the services the one apt run disables again after installing
# them, so that a host whose run stopped before their role would not start
# them at its next boot; their role enables them. As the module's own log
# in the host's journal has the systemctl call.
DISABLED_UNTIL_THEIR_ROLE = {"web1": "prometheus.service", "wk1": "prometheus-node-exporter.service"}


def test_site_yml_installed_each_hosts_packages_in_one_apt_run_and_started_each_service_on_its_settings(cluster):
    """First, before any test restarts or rewrites anything. site.yml's
    first run installed the packages of every role a host runs in one apt
    run (one run in apt's history has any of them, and it has them all, and
    not gearmand's), and no policy-rc.d is left behind. No service ran on
    its packaged settings: each first started after its role had written
    its own. Prometheus and the node exporter, which would listen on every
    address, were disabled right after that run."""
    for name, packages in ONE_RUN.items():
        history = cluster[name].check_output("cat /var/log/apt/history.log")
        runs = [{entry.split(":", 1)[0] for entry in line.split("), ")}
                for line in re.findall(r"^Install: (.*)$", history, re.MULTILINE)]
        with_them = [run for run in runs if packages & run]
        assert len(with_them) == 1, (name, with_them)
        assert packages <= with_them[0] and not APART & with_them[0], (name, with_them[0])
        assert not cluster[name].file("/usr/sbin/policy-rc.d").exists, name
    for (name, unit), settings in FIRST_STARTED_ON.items():
        starts = started_at(cluster[name], unit)
        assert starts, (name, unit, "never started")
        assert starts[0] > written_at(cluster[name], settings), (name, unit, "started before", settings)
    for name, unit in DISABLED_UNTIL_THEIR_ROLE.items():
        logged = cluster[name].check_output("journalctl --no-pager -o cat SYSLOG_FACILITY=1")
        calls = re.findall(r"argv=\[('systemctl', 'disable', [^]]*)\]", logged)
        assert any(f"'{unit}'" in call for call in calls), (name, unit, calls)
        assert cluster[name].service(unit.removesuffix(".service")).is_enabled, (name, unit)


def test_each_job_server_has_its_own_table_with_the_project_schema(cluster):
    # The roles' answer (which the other tests read) is the README's rule:
    # gearman_queue_<inventory host> on the one gearman_db host, for each of
    # several servers.
    assert {s: (e["db_host"], e["table"]) for s, e in cluster.topology.items()} == {
        "gm1": ("db1", "gearman_queue_gm1"), "gm2": ("db1", "gearman_queue_gm2")}
    for server in cluster.servers:
        columns = cluster["db1"].check_output(
            "mysql -N -B -e %s",
            f"SELECT column_name, column_type FROM information_schema.columns "
            f"WHERE table_schema = '{DB}' AND table_name = 'gearman_queue_{server}'",
        )
        found = dict(line.split("\t") for line in columns.splitlines())
        # MariaDB 11 drops the display widths (int, bigint).
        assert {k: re.sub(r"\(\d+\)$", "", v) if "int" in v else v for k, v in found.items()} == {
            k: re.sub(r"\(\d+\)$", "", v) if "int" in v else v for k, v in SCHEMA.items()}, (server, found)
        args = cluster[server].check_output("ps -o args= -C gearmand")
        assert f"--mysql-table=gearman_queue_{server}" not in args, "the table belongs in gearmand.conf, not ps"
        assert f"--mysql-table=gearman_queue_{server}" in cluster[server].check_output("cat /etc/gearmand.conf")


def test_the_queue_user_logs_in_from_each_server_to_its_own_table_only(cluster):
    logins = sorted(cluster["db1"].check_output(
        "mysql -N -B -e %s", "SELECT Host FROM mysql.user WHERE User = 'gearman'").split())
    assert logins == sorted(cluster.address(s) for s in cluster.servers), "one login per job server, never %"
    for server in cluster.servers:
        grants = cluster["db1"].check_output(
            "mysql -N -B -e %s", f"SHOW GRANTS FOR 'gearman'@'{cluster.address(server)}'")
        on = {re.match(r"GRANT .+ ON (\S+) TO ", line).group(1) for line in grants.splitlines()}
        assert on == {"*.*", f"`{DB}`.`gearman_queue_{server}`"}, grants
        # With gearmand's own settings, the server reads its own table and
        # is refused the other's.
        other = next(s for s in cluster.servers if s != server)
        own = cluster[server].run("python3 -c %s %s", READ_AS_GEARMAND, f"gearman_queue_{server}")
        assert own.stdout.startswith("rows "), (server, own.stdout + own.stderr)
        theirs = cluster[server].run("python3 -c %s %s", READ_AS_GEARMAND, f"gearman_queue_{other}")
        # MySQL error 1142: SELECT command denied for that table.
        assert theirs.stdout.startswith("refused (1142"), (server, theirs.stdout + theirs.stderr)


def test_each_job_server_reaches_the_database_over_tls_only(cluster):
    # db1 serves TLS with its lab certificate, and each server's login
    # requires it.
    assert cluster["db1"].check_output("mysql -N -B -e %s", "SHOW GLOBAL VARIABLES LIKE 'have_ssl'").split() == [
        "have_ssl", "YES"]
    required = cluster["db1"].check_output("mysql -N -B -e %s", "SELECT Host, ssl_type FROM mysql.user WHERE User = 'gearman'")
    assert sorted(required.split("\n")) == sorted(f"{cluster.address(s)}\tANY" for s in cluster.servers)
    for server in cluster.servers:
        # gearmand's MySQL client reads its settings where the unit points it,
        # and checks the database's certificate (a bare option would be off).
        environment = cluster[server].check_output("systemctl show -p Environment gearman-job-server")
        assert "MARIADB_HOME=/etc/gearman/mysql" in environment and "MYSQL_HOME=/etc/gearman/mysql" in environment
        settings = cluster[server].check_output("cat /etc/gearman/mysql/my.cnf")
        assert "ssl-ca = /etc/gearman/mysql/ca.crt" in settings
        # Debian's gearmand (MariaDB Connector/C) also checks the name; Ubuntu's
        # (Oracle's libmysqlclient) takes no such option from the file.
        debian = cluster[server].system_info.distribution == "debian"
        assert ("ssl-verify-server-cert = 1" in settings) == debian, settings
        # Logged in as gearmand is, over TLS: a cipher; without TLS: refused
        # (MySQL error 1045, access denied). gearmand itself can only be
        # logging in over TLS: its queue works (the tests around this one).
        tls = cluster[server].run("python3 -c %s %s", READ_AS_GEARMAND, f"gearman_queue_{server}")
        assert re.match(r"rows \d+ cipher (?!none)\S+$", tls.stdout), (server, tls.stdout + tls.stderr)
        plain = cluster[server].run("python3 -c %s %s plain", READ_AS_GEARMAND, f"gearman_queue_{server}")
        assert plain.stdout.startswith("refused (1045"), (server, plain.stdout + plain.stderr)
        # gearmand's own client library (MariaDB's on Debian, Oracle's on
        # Ubuntu) checks the database's certificate: a second gearmand, with
        # the same settings but a CA that did not sign it, gives up.
        # (OpenSSL's words differ between the two: "certificate verify failed",
        # "unable to get local issuer certificate".)
        probe = cluster[server].run(WRONG_CA_GEARMAND)
        assert re.search(r"Failed to connect to database: .*(certificate verify failed|unable to get local issuer)",
                         probe.stderr), (server, probe.rc, probe.stderr[-2000:])


def test_each_exporter_reads_its_own_queue_over_tls_and_answers_scrapers_only(cluster):
    """Each job server's exporter serves where the server is reached, reads
    its queue table with its own login over TLS, and the firewall lets
    web1 (gearman_monitoring) in, not the worker host."""
    for server in cluster.servers:
        url = f"http://{cluster.address(server)}:{EXPORTER_PORT}/metrics"
        body = cluster[server].check_output(
            "python3 -c %s", f"import urllib.request; print(urllib.request.urlopen('{url}', timeout=30).read().decode())")
        scraped = parse_metrics(body)
        assert metric(scraped, "gearman_up") == 1, server
        assert metric(scraped, "gearman_queue_database_up") == 1, server
        assert f'server="{server}"' in body
        reach = f"import socket; socket.create_connection(('{cluster.address(server)}', {EXPORTER_PORT}), timeout=5)"
        assert cluster["web1"].run("python3 -c %s", reach).rc == 0, server
        refused = cluster["wk1"].run("python3 -c %s", reach)
        assert refused.rc != 0 and "timed out" in refused.stderr, (server, refused.stderr)


def test_prometheus_on_web1_sees_waiting_jobs_per_server_then_the_workers_counts(cluster, cluster_restored):
    web = cluster["web1"]
    targets = {("gearman", s): "up" for s in cluster.servers} | {("node", "wk1"): "up", ("prometheus", ""): "up"}
    assert wait_until(lambda: prometheus_targets(web) == targets, timeout=90), prometheus_targets(web)
    before = settled_done_count(cluster["wk1"], web)

    cluster.workers("stop")
    runs = {}
    for server in cluster.servers:
        runs[server] = new_run()
        cluster.submit("php", 5, runs[server], server)
    for server in cluster.servers:
        waiting = f'sum(gearman_function_jobs_queued{{server="{server}"}})'
        assert wait_until(lambda: prometheus_value(web, waiting) == 10, timeout=90), (server, prometheus_value(web, waiting))
        assert prometheus_value(web, f'sum(gearman_queue_rows{{server="{server}"}})') == 10, server
    assert wait_until(lambda: {("GearmanFunctionWithoutWorkers", s, f, "pending") for s in cluster.servers
                               for f in FUNCTIONS} <= prometheus_alerts(web), timeout=90), prometheus_alerts(web)

    cluster.workers("start")
    assert wait_until(lambda: prometheus_value(web, "sum(gearman_function_jobs_queued)") == 0, timeout=120)
    assert settled_done_count(cluster["wk1"], web, expected=before + 20) == before + 20


def test_jobs_submitted_through_each_server_are_done_on_the_worker_host(cluster):
    cluster.workers("stop")
    since = cluster.now()
    runs = {}
    for server in cluster.servers:
        run = new_run()
        cluster.submit("php", 25, run, server)
        cluster.submit("python", 25, run, server)
        # Each server wrote its jobs to its own table.
        assert cluster.rows(server, run) == 100
        assert cluster.status(server)["sendEmail"][0] >= 50
        runs[run] = 25
    cluster.workers("start")
    cluster.drained("through gm1 and gm2", since, runs)


def test_a_stopped_job_server_keeps_its_jobs_and_the_other_takes_new_ones(cluster):
    cluster.workers("stop")
    since = cluster.now()
    held, later = new_run(), new_run()
    cluster.submit("php", 25, held, "gm1")
    cluster.submit("python", 25, held, "gm1")
    cluster["gm1"].check_output("systemctl stop gearman-job-server")
    # gm1's jobs stay in its table while it is down ...
    assert cluster.rows("gm1", held) == 100
    # ... and web1, with both servers listed, goes on submitting through gm2.
    cluster.submit("php", 25, later)
    cluster.submit("python", 25, later)
    assert cluster.rows("gm2", later) == 100
    cluster["gm1"].check_output("systemctl start gearman-job-server")
    assert wait_until(lambda: cluster.accepting("gm1"), timeout=60)
    assert wait_until(lambda: cluster.status("gm1").get("sendEmail", (0,))[0] == 50, timeout=30), "gm1 did not replay"
    cluster.workers("start")
    cluster.drained("gm1 stopped and started", since, {held: 25, later: 25})


def test_jobs_submitted_after_a_database_restart_are_kept_and_done(cluster):
    cluster.workers("stop")
    since = cluster.now()
    before, after = new_run(), new_run()
    cluster.submit("php", 25, before)
    cluster["db1"].check_output("systemctl restart mariadb")
    # Both servers reconnect: what is submitted now is persisted too, in
    # each server's own table (50 jobs through each).
    cluster.submit("python", 25, after, "gm1")
    cluster.submit("php", 25, after, "gm2")
    assert (cluster.rows("gm1", after), cluster.rows("gm2", after)) == (50, 50)
    cluster.submit("python", 25, before)
    cluster.workers("start")
    cluster.drained("MariaDB restarted under both servers", since, {before: 25, after: 25})


def test_the_worker_host_rebooted_with_jobs_waiting_drains_them_by_itself(cluster):
    cluster.workers("stop")
    # Disabled units would not come back: the reboot must start them itself.
    cluster.workers("start")
    cluster.workers("stop")
    since = cluster.now()
    run = new_run()
    cluster.submit("php", 25, run)
    cluster.submit("python", 25, run)
    subprocess.run(["docker", "restart", "wk1"], check=True, capture_output=True)
    assert wait_until(lambda: cluster.booted("wk1"), timeout=120, step=2), "wk1 did not come back"
    cluster.drained("wk1 rebooted", since, {run: 25})


def test_a_worker_host_cut_off_gives_its_job_back_within_the_keepalive_time(cluster):
    """gearmand probes a silent connection (TCP keepalive, the role's
    gearman_keepalive_* settings): when wk1's link is pulled out while one of
    its workers holds a job, gm1 closes that worker's connection after idle +
    interval x count seconds and the job waits in the queue again, to be done
    by the next worker that reaches gm1."""
    params = cluster["gm1"].check_output("cat /etc/default/gearman-job-server")
    idle, interval, count = (int(re.search(rf"--keepalive-{name}=(\d+)", params).group(1))
                             for name in ("idle", "interval", "count"))
    limit = idle + interval * count
    run = new_run()
    address, port = cluster.address("gm1"), str(cluster.port("gm1"))
    cluster["gm1"].check_output("gearman -h %s -p %s -b -f keepaliveProbe %s", address, port, run)
    # A unit left over from an interrupted run would block the name.
    cluster["wk1"].run("systemctl stop keepalive-probe; systemctl reset-failed keepalive-probe")
    cluster["wk1"].check_output("systemd-run --collect --unit keepalive-probe %s -c %s %s %s hold",
                                PROBE_PYTHON, PROBE_WORKER, address, port)
    try:
        assert wait_until(lambda: cluster.status("gm1").get("keepaliveProbe") == (1, 1, 1), timeout=30), (
            cluster.status("gm1"))
        with cluster.cut_off("wk1"):
            pulled = time.monotonic()
            given_back = wait_until(lambda: cluster.status("gm1").get("keepaliveProbe", (0, 1, 1))[1:] == (0, 0),
                                    timeout=limit + 15, step=1)
            after = time.monotonic() - pulled
        print(f"\nCLUSTER keepalive: the job came back {after:.0f} s after wk1's link was pulled "
              f"(keepalive {idle} + {interval} x {count} = {limit} s)")
        assert given_back, f"gm1 still counts the job as running {after:.0f} s after the link was pulled"
        # It waits in gm1's table, and a worker that reaches gm1 does it.
        assert cluster.rows("gm1", run) == 1
        finished = cluster["wk1"].run("timeout 60 %s -c %s %s %s finish", PROBE_PYTHON, PROBE_WORKER, address, port)
        assert finished.stdout.split() == ["took", run, "done"], finished.stdout + finished.stderr
        assert wait_until(lambda: cluster.rows("gm1", run) == 0, timeout=30)
    finally:
        cluster["wk1"].run("systemctl stop keepalive-probe")
        # The samples' connections were cut with it: start them afresh.
        cluster.workers("restart")


def test_check_mode_on_the_converged_cluster_reports_no_change(cluster):
    result = cluster.play("site.yml", "--check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    recaps = re.findall(r"^(\S+)\s+:.*changed=(\d+)", result.stdout, re.MULTILINE)
    assert sorted(name for name, _ in recaps) == sorted(cluster.hosts)
    assert all(changed == "0" for _, changed in recaps), recaps


def test_a_configuration_change_deployed_while_a_client_submits_loses_nothing(cluster):
    """The job server play with a gearmand setting changed restarts gm1 and
    gm2 one at a time (each stops only once the one before answers again),
    while web1 submits batches without pause: every submission succeeds and
    every job is done (background jobs are at-least-once: a job whose answer
    was lost may be queued again, and is counted). The last test: the
    changed setting stays (the scenario's hosts are destroyed next), which
    spares a second deploy."""
    since = cluster.now()
    run = new_run()
    stop = threading.Event()
    batches, failures = [], []

    def submit_until_stopped():
        while not stop.is_set():
            batch = f"{run}x{len(batches) + len(failures)}"
            result = cluster.submit("php", 5, batch, check=False)
            (batches if result.rc == 0 else failures).append(batch if result.rc == 0 else result.stderr)

    threads = int(cluster["gm1"].check_output("sed -n 's/.*--threads=\\([0-9]*\\).*/\\1/p' %s",
                                              "/etc/default/gearman-job-server"))
    client = threading.Thread(target=submit_until_stopped)
    client.start()
    try:
        deployed = cluster.play("playbooks/job_server.yml", "-e", f"gearman_threads={threads + 1}")
        time.sleep(2)
        stop.set()
        client.join(timeout=120)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-2000:]
        # The deploy restarted gearmand on both servers.
        for server in cluster.servers:
            assert f"--threads={threads + 1}" in cluster[server].check_output("ps -o args= -C gearmand")
        # One at a time: each server went down only after the one before was
        # up again, up meaning answering (the unit's start waits for that).
        # The containers share one kernel, so their monotonic clocks agree.
        restarts = sorted(
            (int(unit["InactiveEnterTimestampMonotonic"]), int(unit["ActiveEnterTimestampMonotonic"]))
            for unit in (cluster.unit(server, "gearman-job-server", "InactiveEnterTimestampMonotonic",
                                      "ActiveEnterTimestampMonotonic") for server in cluster.servers))
        for (_, up), (down, _) in zip(restarts, restarts[1:]):
            assert down > up, restarts
    finally:
        stop.set()
    assert failures == [], failures[:3]
    assert len(batches) >= 3, "the client must have been submitting during the deploy"
    assert wait_until(lambda: cluster.rows(run=run) == 0, timeout=180, step=2)
    # Each batch's marker is in its payloads (the e-mail address, the image path).
    done = collections.Counter((re.search(rf"{run}x\d+", json.dumps(p)).group(0), f, p["seq"])
                               for f, p in cluster.done(since, run))
    expected = {(batch, f, seq) for batch in batches for f in FUNCTIONS for seq in range(1, 6)}
    cluster_print("configuration deployed while submitting", len(expected), done, expected)
