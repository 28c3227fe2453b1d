"""Bad input, secrets and exposure on a converged host: --check changes
nothing and prints no secret; a play with wrong
database settings fails with the database's own error and leaves the running
gearmand alone; a job too large for the queue table is refused at once and
the queue goes on; the password is in no journal; the nftables guard admits
listed sources only; TLS (stunnel in front of gearmand) takes jobs from
clients with a certificate and nobody else; the packaged gearmand's own
--ssl does no TLS."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from conftest import ALL_WORKERS, PORT, TLS_PORT, leaks, wait_until

CONFIG = "/etc/gearmand.conf"
TLS_DIR = "/etc/gearman/tls"  # the lab certificates the scenario asks for


def test_check_mode_on_the_converged_host_reports_no_change_and_no_secret(host, gearman, password):
    """First, before any test touches the host. --check on a converged
    all-in-one host, with the firewall and TLS on: nothing would change, and
    the output with -v (results as JSON) never shows the password. Here on
    Ubuntu 22.04 and Debian 13; the cluster scenario does the same on its
    five hosts on Debian 12 and Ubuntu 24.04."""
    name = host.backend.get_hostname()
    result = gearman.play("site.yml", "--check", "-v")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    recap = re.search(rf"^{re.escape(name)}\s+:.*$", result.stdout, re.MULTILINE)
    assert recap, result.stdout[-3000:]
    assert " changed=0 " in recap.group(0), result.stdout[-5000:]
    assert leaks(result.stdout + result.stderr, password) == []


def test_the_tls_front_was_last_started_after_its_files_and_certificates_were_written(gearman):
    """Second, before any test restarts it: the TLS front runs on the
    configuration, unit and lab certificates its role wrote (its last start,
    as its journal has it, comes after the last write of each). It is
    started by its role after them on a first converge, and restarted where
    it ran before: a restart left out wrongly would keep it on what it
    first read."""
    files = ["/etc/gearman/stunnel.conf", "/etc/systemd/system/gearman-tls.service",
             f"{TLS_DIR}/server.crt", f"{TLS_DIR}/server.key", f"{TLS_DIR}/ca.crt"]
    started = gearman.last_started("gearman-tls.service")
    written = {path: gearman.written(path) for path in files}
    assert started is not None and started > max(written.values()), (started, written)


@pytest.mark.parametrize(
    ("setting", "database_says"),
    [
        ("gearman_mysql_password=not-the-password-7731", "Access denied for user 'gearman'"),
        ("gearman_mysql_port=3399", "Can't connect to MySQL server"),
    ],
    ids=["wrong-password", "database-unreachable"],
)
def test_bad_database_settings_fail_the_play_and_keep_gearmand_running(host, gearman, password, setting, database_says):
    config_before = host.file(CONFIG).sha256sum
    params_before = host.file("/etc/default/gearman-job-server").sha256sum
    pid = gearman.main_pid()
    started = time.monotonic()
    result = gearman.play("playbooks/job_server.yml", "-e", setting)
    print(f"\n{setting.split('=')[0]}: the play failed after {time.monotonic() - started:.0f} s")
    output = result.stdout + result.stderr  # failures may go to stderr
    assert result.returncode != 0
    assert "could not log in to the queue database" in output, output[-3000:]
    assert database_says in output
    assert "configuration was left as it was" in output
    # Neither the real nor the wrong password is printed.
    assert leaks(output, password) == []
    assert leaks(output, "not-the-password-7731") == []
    # gearmand was not touched and still works.
    assert host.file(CONFIG).sha256sum == config_before
    assert host.file("/etc/default/gearman-job-server").sha256sum == params_before
    assert gearman.main_pid() == pid
    host.check_output("gearadmin -h 127.0.0.1 -p %s --status", str(PORT))


def test_a_job_larger_than_max_allowed_packet_is_refused_and_the_queue_goes_on(host, gearman):
    rows_before = gearman.rows()
    allowed = int(gearman.sql("SELECT @@max_allowed_packet"))
    # One byte more than MariaDB accepts in one packet, as gear would send it.
    script = (
        "import sys, uuid, gear\n"
        "c = gear.Client('big'); c.addServer('127.0.0.1', %d); c.waitForServer(5)\n"
        "job = gear.Job('sendEmail', b'x' * %d, unique=str(uuid.uuid4()))\n"
        "try:\n"
        "    c.submitJob(job, background=True, timeout=60)\n"
        "except gear.GearmanError as e:\n"
        "    print('refused:', e); sys.exit(3)\n"
        "print('queued:', job.handle)\n"
    ) % (PORT, allowed + 1)
    started = time.monotonic()
    result = host.run("timeout 120 /opt/gearman-python/bin/python3 -c %s", script)
    print(f"\na job of {allowed + 1} bytes: exit {result.rc} after {time.monotonic() - started:.1f} s")
    assert result.rc == 3, result.stdout + result.stderr
    assert "refused:" in result.stdout and "QUEUE_ERROR" in result.stdout + result.stderr
    assert gearman.rows() == rows_before
    assert "max_allowed_packet" in host.check_output("tail -n 50 /var/log/gearman-job-server/gearmand.log")
    # The next job is queued and done as usual.
    run = uuid.uuid4().hex[:8]
    gearman.submit("php", 1, run)
    assert wait_until(lambda: gearman.rows(run=run) == 0, timeout=30)


def test_password_is_not_in_the_journal(host, password):
    assert leaks(host.check_output("journalctl --no-pager -o cat"), password) == []


def test_the_packaged_gearmand_does_not_speak_tls(host):
    """Why the role refuses --ssl: a gearmand started with it, a key and a
    certificate logs "SSL: true", yet fails every TLS handshake and answers
    plain text. Should a package ever ship working TLS, this fails and the
    refusal must go."""
    tls = "/tmp/gearmand-tls"
    host.check_output(
        f"mkdir -p {tls} && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
        f"-keyout {tls}/key.pem -out {tls}/cert.pem 2>/dev/null"
    )
    host.check_output(
        f"gearmand -d -L 127.0.0.1 -p 4741 --pid-file={tls}/pid --log-file={tls}/log --verbose=INFO "
        f"--ssl --ssl-ca-file={tls}/cert.pem --ssl-certificate={tls}/cert.pem --ssl-key={tls}/key.pem"
    )
    try:
        assert wait_until(lambda: host.run("gearadmin -h 127.0.0.1 -p 4741 --getpid").rc == 0, timeout=15)
        assert "SSL: true" in host.check_output(f"cat {tls}/log")
        handshake = host.run(
            "/opt/gearman-python/bin/python3 -c %s",
            "import socket, ssl\n"
            "c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
            "c.wrap_socket(socket.create_connection(('127.0.0.1', 4741), timeout=5)); print('handshake done')\n",
        )
        assert handshake.rc != 0 and "handshake done" not in handshake.stdout
        # ... while a plain-text admin request is answered.
        assert host.run("gearadmin -h 127.0.0.1 -p 4741 --status").rc == 0
    finally:
        host.run(f"kill $(cat {tls}/pid); rm -rf {tls}")


LINK = """
ip netns add gfw
ip link add gfw0 type veth peer name gfw1
ip link set gfw1 netns gfw
ip addr add 10.99.0.1/24 dev gfw0
ip link set gfw0 up
ip netns exec gfw ip addr add 10.99.0.2/24 dev gfw1
ip netns exec gfw ip addr add 10.99.0.3/24 dev gfw1
ip netns exec gfw ip link set gfw1 up
ip netns exec gfw ip link set lo up
"""
CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(3); s.bind((sys.argv[1], 0))\n"
    "s.connect(('10.99.0.1', int(sys.argv[2]))); print('connected')\n"
)


def test_the_firewall_admits_listed_sources_only(host):
    """A link to a network namespace with two addresses, one of them in
    gearman_firewall_allowed; something listens on gearmand's port and on
    the TLS port there. With the TLS front on, the listed address reaches
    the TLS port only (the plain one would let it skip TLS); the other
    address reaches neither."""
    rules = host.check_output("nft list table inet gearman_firewall")
    assert "10.99.0.2" in rules and f"tcp dport {{ {PORT}, {TLS_PORT} }}" in rules
    assert host.service("gearman-firewall.service").is_enabled
    host.check_output("sh -ec %s", LINK)
    try:
        host.check_output(
            "setsid -f python3 -c %s fw-test-listener",
            "import socket, time\n"
            "for port in (%d, %d):\n"
            "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "    s.bind(('10.99.0.1', port)); s.listen(); globals()['s%%d' %% port] = s\n"
            "time.sleep(60)\n" % (PORT, TLS_PORT),
        )
        time.sleep(1)
        listed_tls = host.run("ip netns exec gfw python3 -c %s 10.99.0.2 %s", CONNECT, str(TLS_PORT))
        listed_plain = host.run("ip netns exec gfw python3 -c %s 10.99.0.2 %s", CONNECT, str(PORT))
        unlisted = host.run("ip netns exec gfw python3 -c %s 10.99.0.3 %s", CONNECT, str(TLS_PORT))
        other_port = host.run("ip netns exec gfw python3 -c %s 10.99.0.3 22", CONNECT)
        assert "connected" in listed_tls.stdout, listed_tls.stderr
        assert listed_plain.rc != 0 and "timed out" in listed_plain.stderr
        assert unlisted.rc != 0 and "timed out" in unlisted.stderr
        # Other ports are not the guard's business: refused, not dropped.
        assert "Connection refused" in other_port.stderr
    finally:
        host.run("pkill -f 'fw-test-listene[r]'; ip link del gfw0; ip netns del gfw")


def test_the_guard_is_in_place_whenever_gearmand_listens(host, gearman):
    """nftables.service starts, reloads and stops with "flush ruleset": the
    guard's table comes back after each, and gearmand is not bounced by it.
    gearmand requires the guard: a guard that stops, or cannot load its
    rules, takes gearmand down with it; gearmand started again brings the
    guard back."""
    def guarded() -> bool:
        return "10.99.0.2" in host.run("nft list table inet gearman_firewall").stdout

    pid = gearman.main_pid()
    try:
        for action in ("restart", "reload", "restart", "stop"):
            host.check_output("systemctl %s nftables.service", action)
            if action != "stop":
                # The stock ruleset is loaded, and ours is still there beside it.
                assert "table inet filter" in host.check_output("nft list tables"), action
            assert guarded(), f"systemctl {action} nftables wiped the guard"
        assert gearman.main_pid() == pid, "nftables took gearmand down with it"
        # The guard stopped: gearmand stops. Rules that do not load: gearmand
        # does not start.
        host.check_output("systemctl stop gearman-firewall.service")
        assert not host.service("gearman-job-server").is_running
        host.check_output("cp /etc/gearman/firewall.nft /tmp/firewall.nft.good")
        host.check_output("echo 'not nft at all' >> /etc/gearman/firewall.nft")
        assert host.run("systemctl start gearman-job-server").rc != 0
        assert not host.service("gearman-job-server").is_running
    finally:
        host.run("cp /tmp/firewall.nft.good /etc/gearman/firewall.nft")
        host.run("systemctl stop nftables.service")
        host.check_output("systemctl start gearman-job-server")
    assert guarded() and host.service("gearman-firewall.service").is_running
    assert host.service("gearman-job-server").is_running


def test_tls_front_takes_jobs_from_a_client_with_a_certificate(host, gearman):
    run = uuid.uuid4().hex[:8]
    since = gearman.now()
    submit = host.run(
        "/opt/gearman-python/bin/python3 -c %s",
        "import json, uuid, gear\n"
        "c = gear.Client('tls-test')\n"
        f"c.addServer('127.0.0.1', {TLS_PORT}, ssl_key='{TLS_DIR}/client.key', ssl_cert='{TLS_DIR}/client.crt',"
        f" ssl_ca='{TLS_DIR}/ca.crt')\n"
        "c.waitForServer(10)\n"
        f"data = json.dumps({{'name': 'tls', 'email': '{run}@example.com', 'seq': 1, 'lang': 'python'}}).encode()\n"
        "job = gear.Job('sendEmail', data, unique=str(uuid.uuid4()))\n"
        "c.submitJob(job, background=True, timeout=10); print('queued:', job.handle); c.shutdown()\n",
    )
    assert submit.rc == 0 and "queued:" in submit.stdout, submit.stdout + submit.stderr
    # Through stunnel into gearmand, the queue table and a worker.
    assert wait_until(lambda: run in gearman.worker_log(since), timeout=30)


@pytest.mark.parametrize("client", ["plain-tcp", "tls-without-certificate"])
def test_tls_front_turns_away_clients_without_a_certificate(host, client):
    script = (
        "import socket, ssl, sys\n"
        f"s = socket.create_connection(('127.0.0.1', {TLS_PORT}), timeout=5)\n"
        "if sys.argv[1] != 'plain-tcp':\n"
        "    c = ssl.create_default_context(cafile='%s/ca.crt')\n"
        "    s = c.wrap_socket(s, server_hostname='localhost')\n"
        "try:\n"
        "    s.sendall(b'status\\n'); answer = s.recv(100)\n"
        "except (OSError, ssl.SSLError) as e:\n"
        "    answer = repr(e).encode()\n"
        "print('answer:', answer)\n"
    ) % TLS_DIR
    result = host.run("/opt/gearman-python/bin/python3 -c %s %s", script, client)
    # gearmand would answer a status request with lines ending in ".\n".
    assert "answer:" in result.stdout, result.stderr
    assert ".\\n" not in result.stdout and "sendEmail" not in result.stdout, result.stdout


def test_stunnel_can_read_the_server_key_only(host):
    """The CA's key could mint client certificates that the TLS front
    accepts, and the client's key is a client's: root's alone. stunnel
    reads the server's."""
    keys = {name: host.file(f"{TLS_DIR}/{name}.key") for name in ("ca", "server", "client")}
    assert {name: (f.user, f.group, f.mode) for name, f in keys.items()} == {
        "ca": ("root", "root", 0o600), "server": ("root", "stunnel4", 0o640), "client": ("root", "root", 0o600)}
    for name in keys:
        readable = host.run("runuser -u stunnel4 -- head -c1 %s", f"{TLS_DIR}/{name}.key").rc == 0
        assert readable == (name == "server"), name


def test_a_new_queue_table_while_jobs_wait_in_the_old_one_is_refused(host, gearman, workers_restored):
    """gearmand replays only its configured table: renaming it while jobs
    wait would leave them in a table nobody reads. The database play stops,
    naming the count, before the queue user's logins change, so the running
    gearmand still reads its table and the jobs are done."""
    gearman.systemctl("stop", *ALL_WORKERS)
    since = gearman.now()
    run = uuid.uuid4().hex[:8]
    gearman.submit("php", 2, run)
    try:
        result = gearman.play("playbooks/queue_db.yml", "-e", "gearman_mysql_table=gearman_queue_renamed")
        output = result.stdout + result.stderr
        assert result.returncode != 0
        held = re.search(r"gearman\.gearman_queue holds (\d+) jobs: no job server of the inventory replays", output)
        assert held, output[-3000:]
        assert int(held.group(1)) == gearman.rows() >= 4
        assert "The queue user's logins were left as they were" in output
    finally:
        gearman.sql("DROP TABLE IF EXISTS gearman.gearman_queue_renamed")
    gearman.systemctl("start", *ALL_WORKERS)
    assert wait_until(lambda: gearman.rows(run=run) == 0, timeout=60)
    assert len(gearman.done(since, run)) == 4
