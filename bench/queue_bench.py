"""What the MySQL queue costs, and what a deep backlog costs: measured on a
job server host, against gearmands the bench starts itself.

Run as root on a job server with the job server's packages (gearmand,
gearman-tools), php-gearman and the system Python's pymysql, with a queue
table of its own that gearmand's login may use (playbooks/bench.yml, run by
`make bench`, creates it, grants it and removes both afterwards):

    /usr/bin/python3 queue_bench.py --table DB.TABLE [--jobs N] [--clients 1,4]
        [--repeat 3] [--no-settings] [--depths 10000,100000,1000000] [--report FILE]

Every gearmand it starts gets the deployed job server's flags (PARAMS in
/etc/default/gearman-job-server and the database settings in
/etc/gearmand.conf) with these changes only: it listens on 127.0.0.1 on a
spare port, logs errors only, and uses the bench's table (MySQL queue) or
no queue at all (--queue-type=builtin). The deployed gearmand, its table and
its workers are not touched; but a database setting the settings section
changes at runtime is the whole server's, the deployed gearmand's commits
included, until it is put back (--no-settings leaves the database alone).

Throughput: C PHP clients (libgearman) submit N background jobs between
them; once every client has exited 0, every job is a row (counted); then
4 `gearman -w` workers (libgearman) do them, and the figure ends when every
worker has exited 0, the table is empty and gearadmin shows no job left.
Repeated, with the median and the range; each MySQL figure with its ratio to
the in-memory queue's in the same run.

Settings (database on the same host only): the MySQL queue at the most
clients under each setting that could matter, taking turns (gearmand
flags, or MariaDB variables set at runtime and put back), and the latency of
a round trip and of one job's committed INSERT and DELETE, over TCP and the
socket: where a job's time goes.

Depth: D rows are written straight into the table (as gearmand would have),
a gearmand started on it, timed until it answers (the replay: it says
nothing before), its memory read; then 20,000 jobs submitted and 20,000
done on top of that backlog. With gearmand's own 991 hash chains and with
the table sized as the role sizes it.

It prints a Markdown report (and writes it with --report); it asserts
nothing beyond the checks that make a figure valid.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pymysql

FUNCTION = "queueBench"
DEFAULTS = "/etc/default/gearman-job-server"
CONFIG = "/etc/gearmand.conf"
OPTION_DIR = "/etc/gearman/mysql"  # the unit's MARIADB_HOME / MYSQL_HOME
# The deployed flags the bench replaces with its own.
REPLACED = ("--listen", "-L", "--port", "-p", "--log-file", "-l", "--pid-file", "-P", "--verbose",
            "--queue-type", "-q", "--mysql-table", "--config-file", "--daemon", "-d")
WORKERS = 4
DEPTH_JOBS = 20000
GEARMAND_DEFAULT_BUCKETS = 991

PHP_CLIENT = r"""
$client = new GearmanClient();
$client->addServer('127.0.0.1', (int) $argv[1]);
$payload = str_repeat('x', (int) $argv[3]);
for ($i = 0; $i < (int) $argv[2]; $i++) {
    $client->doBackground($argv[4], $payload);
    if ($client->returnCode() != GEARMAN_SUCCESS) {
        fwrite(STDERR, "job $i not queued: " . $client->error() . "\n");
        exit(1);
    }
}
"""


def deployed_flags():
    """The deployed PARAMS, less what the bench sets itself."""
    params = ""
    with open(DEFAULTS) as defaults:
        for line in defaults:
            if line.startswith("PARAMS="):
                params = shlex.split(line.strip()[len("PARAMS="):])[0]
    flags = []
    words = iter(shlex.split(params))
    for word in words:
        name = word.split("=", 1)[0]
        if name not in REPLACED:
            flags.append(word)
        elif "=" not in word and name not in ("--daemon", "-d"):
            next(words, None)  # its value, given as the next word
    return flags


def database():
    conf = {}
    with open(CONFIG) as config:
        for line in config:
            if line.startswith("--") and "=" in line:
                key, value = line.strip()[2:].split("=", 1)
                conf[key] = value
    ssl = None
    option_file = os.path.join(OPTION_DIR, "my.cnf")
    if os.path.exists(option_file):
        with open(option_file) as options:
            for line in options:
                key, _, value = line.partition("=")
                if key.strip() == "ssl-ca":
                    ssl = {"ca": value.strip()}
    return conf, ssl


class Queue:
    """One gearmand started by the bench, and the table it uses (if any)."""

    def __init__(self, kind, port, flags, table, buckets=None, extra=()):
        """EXTRA flags replace the deployed ones of the same name (the command
        line wins over gearmand's config file, too)."""
        self.kind, self.port, self.table = kind, port, table
        if buckets:
            extra = [*extra, f"--hashtable-buckets={buckets}"]
        replaced = {f.split("=", 1)[0] for f in extra}
        command = ["gearmand", "--listen=127.0.0.1", f"--port={port}", "--verbose=ERROR"] + [
            f for f in flags if f.split("=", 1)[0] not in replaced] + list(extra)
        if kind == "mysql":
            command += [f"--config-file={CONFIG}", "--queue-type=mysql",
                        f"--mysql-table={table.split('.', 1)[1]}"]
        else:
            command += ["--config-file=/dev/null", "--queue-type=builtin"]
        self.tmp = tempfile.TemporaryDirectory()
        command += [f"--log-file={self.tmp.name}/log", f"--pid-file={self.tmp.name}/pid"]
        env = dict(os.environ, MARIADB_HOME=OPTION_DIR, MYSQL_HOME=OPTION_DIR)
        started = time.monotonic()
        self.process = subprocess.Popen(command, env=env)
        while not self.answers():
            if self.process.poll() is not None:
                raise SystemExit(f"gearmand ({kind}) exited {self.process.returncode}: "
                                 + open(f"{self.tmp.name}/log").read()[-2000:])
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - started

    def answers(self):
        return subprocess.run(["gearadmin", "-h", "127.0.0.1", "-p", str(self.port), "--getpid"],
                              capture_output=True, timeout=600).returncode == 0

    def memory_mib(self, field="VmRSS"):
        """Resident memory now (VmRSS), or at its peak so far (VmHWM)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def waiting(self):
        """Jobs gearmand holds for the bench's function."""
        out = subprocess.run(["gearadmin", "-h", "127.0.0.1", "-p", str(self.port), "--status"],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            fields = line.split("\t")
            if fields[0] == FUNCTION:
                return int(fields[1])
        return 0

    def stop(self):
        self.process.terminate()
        self.process.wait(60)
        self.tmp.cleanup()


def submit(queue, jobs, clients, size):
    shares = [jobs // clients + (1 if n < jobs % clients else 0) for n in range(clients)]
    started = time.monotonic()
    procs = [subprocess.Popen(["php", "-r", PHP_CLIENT, "--", str(queue.port), str(share), str(size), FUNCTION])
             for share in shares]
    codes = [proc.wait(3600) for proc in procs]
    elapsed = time.monotonic() - started
    if any(codes):
        raise SystemExit(f"a bench client failed: exit codes {codes}")
    return elapsed


def drain(queue, jobs, rows):
    """WORKERS libgearman workers take JOBS jobs between them; done when each
    exited 0, gearmand holds no job of the bench's and its table holds ROWS."""
    shares = [jobs // WORKERS + (1 if n < jobs % WORKERS else 0) for n in range(WORKERS)]
    started = time.monotonic()
    procs = [subprocess.Popen(["gearman", "-h", "127.0.0.1", "-p", str(queue.port), "-w", "-f", FUNCTION,
                               "-c", str(share)], stdout=subprocess.DEVNULL) for share in shares if share]
    codes = [proc.wait(3600) for proc in procs]
    if any(codes):
        raise SystemExit(f"a bench worker failed: exit codes {codes}")
    deadline = time.monotonic() + 60
    while queue.waiting() != rows or (queue.kind == "mysql" and db_rows(queue.table) != rows):
        if time.monotonic() > deadline:
            raise SystemExit(f"after the workers: gearmand holds {queue.waiting()} jobs, "
                             f"the table {db_rows(queue.table)} rows, {rows} expected")
        time.sleep(0.05)
    return time.monotonic() - started


def connect(unix_socket=None):
    """gearmand's login: over TCP as its config says, or over UNIX_SOCKET."""
    conf, ssl = database()
    return pymysql.connect(host=conf["mysql-host"], port=int(conf.get("mysql-port", 3306)),
                           unix_socket=unix_socket, user=conf["mysql-user"], password=conf["mysql-password"],
                           database=conf["mysql-db"], ssl=None if unix_socket else ssl, autocommit=True)


def db_rows(table):
    with connect() as db, db.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {table}")
        return cursor.fetchone()[0]


def server_version():
    with connect() as db, db.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        return cursor.fetchone()[0]


def clear(table):
    with connect() as db, db.cursor() as cursor:
        while cursor.execute(f"DELETE FROM {table} LIMIT 50000"):
            pass


def fill(table, rows, size):
    """ROWS queued jobs written as gearmand writes them (normal priority)."""
    payload = b"x" * size
    with connect() as db, db.cursor() as cursor:
        for first in range(0, rows, 5000):
            cursor.executemany(
                f"INSERT INTO {table} (unique_key, function_name, priority, data, when_to_run)"
                " VALUES (%s, %s, %s, %s, %s)",  # placeholders only: pymysql then sends one statement
                [(f"bench-{n}", FUNCTION, 1, payload, 0) for n in range(first, min(rows, first + 5000))])


def version(command):
    try:
        return subprocess.run(command, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def figure(values):
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def runs(args, kind, port, flags, clients, extra=(), repeat=None):
    """REPEAT (default args.repeat) rounds of args.jobs jobs: submit rates, drain rates."""
    submits, drains = [], []
    for _ in range(args.repeat if repeat is None else repeat):
        if kind == "mysql":
            clear(args.table)
        queue = Queue(kind, port, flags, args.table, extra=extra)
        try:
            submits.append(args.jobs / submit(queue, args.jobs, clients, args.size))
            if kind == "mysql" and db_rows(args.table) != args.jobs:
                raise SystemExit(f"{db_rows(args.table)} rows after {args.jobs} submissions")
            drains.append(args.jobs / drain(queue, args.jobs, 0))
        finally:
            queue.stop()
    return submits, drains


def throughput(args, flags, report):
    """Jobs per second, submit and drain, for each client count and queue."""
    results = {}
    for clients in args.clients:
        for kind, port in (("builtin", args.port + 1), ("mysql", args.port)):
            results[clients, kind] = submits, drains = runs(args, kind, port, flags, clients)
            print(f"throughput: {clients} clients, {kind}: submit {figure(submits)}, drain {figure(drains)}",
                  flush=True)
    report.append(f"### Throughput: {args.jobs:,} background jobs of {args.size} bytes, "
                  f"{WORKERS} workers, {args.repeat} runs each")
    report.append("")
    report.append("Jobs per second, median (range). A MySQL figure's ratio is to the in-memory "
                  "queue's median in the same run.")
    report.append("")
    report.append("| clients | queue | submit | ratio | drain (done, row deleted) | ratio |")
    report.append("| --- | --- | --- | --- | --- | --- |")
    for clients in args.clients:
        memory = results[clients, "builtin"]
        for kind in ("builtin", "mysql"):
            submits, drains = results[clients, kind]
            ratio_submit = statistics.median(submits) / statistics.median(memory[0])
            ratio_drain = statistics.median(drains) / statistics.median(memory[1])
            name = "MySQL" if kind == "mysql" else "in memory"
            report.append(f"| {clients} | {name} | {figure(submits)} | {ratio_submit:.2f} | "
                          f"{figure(drains)} | {ratio_drain:.2f} |")
    report.append("")


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def socket_path():
    with connect() as db, db.cursor() as cursor:
        cursor.execute("SELECT @@socket")
        return cursor.fetchone()[0]


def admin():
    """The database's root over its socket (how the role's own server lets
    root in), for SET GLOBAL (database on this host only)."""
    return pymysql.connect(unix_socket=socket_path(), user="root", autocommit=True)


def get_global(name):
    with admin() as db, db.cursor() as cursor:
        cursor.execute(f"SELECT @@GLOBAL.{name}")
        return cursor.fetchone()[0]


def set_global(name, value):
    """Set a server variable at runtime; returns the value it had."""
    before = get_global(name)
    with admin() as db, db.cursor() as cursor:
        cursor.execute(f"SET GLOBAL {name} = %s", (value,))
    return before


def statement_ms(table, unix_socket=None, count=2000):
    """Milliseconds per statement for gearmand's login, over TCP or the
    socket: a bare round trip (SELECT 1), a committed INSERT of one job's
    row, and the committed DELETE of it."""
    keys = [(f"rtt-{n}", FUNCTION) for n in range(count // 4)]
    with connect(unix_socket) as db, db.cursor() as cursor:
        started = time.monotonic()
        for _ in range(count):
            cursor.execute("SELECT 1")
        select = (time.monotonic() - started) * 1000 / count
        started = time.monotonic()
        for key in keys:
            cursor.execute(f"INSERT INTO {table} (unique_key, function_name, priority, data, when_to_run)"
                           " VALUES (%s, %s, 1, %s, 0)", (*key, b"x" * 100))
        insert = (time.monotonic() - started) * 1000 / len(keys)
        started = time.monotonic()
        for key in keys:
            cursor.execute(f"DELETE FROM {table} WHERE unique_key = %s AND function_name = %s", key)
        delete = (time.monotonic() - started) * 1000 / len(keys)
    return select, insert, delete


def settings(args, flags, report):
    """The MySQL queue at the most clients, under each setting that could
    matter, against the deployed configuration, in turns: each round runs every
    setting once, so that a slow spell of the machine falls on all of them."""
    conf, _ = database()
    clients = max(args.clients)
    if conf["mysql-host"] not in LOCAL_HOSTS:
        report.append("### Queue database settings\n\nNot measured: the database is on another host "
                      f"({conf['mysql-host']}); the bench changes its settings only on this one.\n")
        return
    flush = "innodb_flush_log_at_trx_commit"
    try:
        deployed = get_global(flush)
    except pymysql.err.MySQLError as error:
        report.append("### Queue database settings\n\nNot measured: root cannot log in over the "
                      f"database's socket to change its settings ({error}).\n")
        return
    socket_flag = ("--mysql-host=localhost",)
    trials = [
        (f"deployed: TCP to {conf['mysql-host']}, `{flush}={deployed}`", (), {}),
        (f"unix socket (`--mysql-host=localhost`), `{flush}={deployed}`", socket_flag, {}),
        ("`--threads=1`", ("--threads=1",), {}),
        *((f"`{flush}={value}`", (), {flush: value}) for value in (1, 2, 0) if value != deployed),
        *((f"unix socket and `{flush}={value}`", socket_flag, {flush: value}) for value in (2,) if value != deployed),
    ]
    results = {name: ([], []) for name, _, _ in trials}
    for round_ in range(args.repeat):
        # Each round in another order: what one trial leaves behind (InnoDB
        # purging its deleted rows) falls on a different next one each time.
        turn = round_ % len(trials)
        for name, extra, variables in trials[turn:] + trials[:turn]:
            before = {}
            try:
                for key, value in variables.items():
                    before[key] = set_global(key, value)
                submits, drains = runs(args, "mysql", args.port, flags, clients, extra, repeat=1)
            finally:
                for key, value in before.items():
                    set_global(key, value)
            results[name][0].extend(submits)
            results[name][1].extend(drains)
            print(f"settings: {name}: submit {submits[0]:,.0f}, drain {drains[0]:,.0f}", flush=True)
    results = [(name, *results[name]) for name, _, _ in trials]
    clear(args.table)
    latency = {f"TCP to {conf['mysql-host']}, `{flush}={deployed}`": statement_ms(args.table),
               f"unix socket, `{flush}={deployed}`": statement_ms(args.table, unix_socket=socket_path())}
    other = 2 if deployed != 2 else 1
    before = set_global(flush, other)
    try:
        latency[f"TCP to {conf['mysql-host']}, `{flush}={other}`"] = statement_ms(args.table)
    finally:
        set_global(flush, before)
    base_submit, base_drain = (statistics.median(v) for v in results[0][1:])
    report.append(f"### Queue database settings: {clients} clients, MySQL queue, {args.jobs:,} jobs, "
                  f"{args.repeat} runs each")
    report.append("")
    report.append("Each setting changed for the bench's gearmand (flags) or at runtime in the "
                  "database (`SET GLOBAL`, put back afterwards), the settings taking turns round by round. "
                  "Ratio: to the deployed configuration's median in the same run. Only `innodb_flush_log_at_trx_commit=1` is fully durable: "
                  "with 2, an operating system crash or power loss can lose the last second of "
                  "accepted jobs; with 0, a crash of MariaDB alone can, too.")
    report.append("")
    report.append("| setting | submit | ratio | drain | ratio |")
    report.append("| --- | --- | --- | --- | --- |")
    for name, submits, drains in results:
        report.append(f"| {name} | {figure(submits)} | {statistics.median(submits) / base_submit:.2f} | "
                      f"{figure(drains)} | {statistics.median(drains) / base_drain:.2f} |")
    report.append("")
    report.append("Where a job's time goes: gearmand's MySQL queue runs, on one connection, a ping and a "
                  "prepared INSERT, committed on its own, for every job it accepts, and a ping and a DELETE "
                  "for every job done: two round trips and one commit per job each way. The same statements "
                  "timed one after another on one connection with gearmand's login, from Python (pymysql), "
                  "and the rate that gives one such client; gearmand's C client goes faster, the more so "
                  "once the flush no longer dominates:")
    report.append("")
    report.append("| connection | round trip (`SELECT 1`) | INSERT, committed | DELETE, committed | "
                  "round trip + INSERT: jobs/s | round trip + DELETE: jobs/s |")
    report.append("| --- | --- | --- | --- | --- | --- |")
    for name, (select, insert, delete) in latency.items():
        report.append(f"| {name} | {select:.3f} ms | {insert:.3f} ms | {delete:.3f} ms | "
                      f"{1000 / (select + insert):,.0f} | {1000 / (select + delete):,.0f} |")
    report.append("")


def depths(args, flags, report):
    """Replay time, memory, and rates on top of each backlog."""
    deployed = [int(f.split("=", 1)[1]) for f in flags if f.startswith("--hashtable-buckets=")]
    sized = deployed[0] if deployed else GEARMAND_DEFAULT_BUCKETS
    rows = []
    for depth in args.depths:
        for buckets in (GEARMAND_DEFAULT_BUCKETS, sized):
            clear(args.table)
            fill(args.table, depth, args.size)
            queue = Queue("mysql", args.port, flags, args.table, buckets=buckets)
            try:
                held = queue.waiting()
                if held != depth:
                    raise SystemExit(f"gearmand replayed {held} of {depth} jobs")
                memory = queue.memory_mib(), queue.memory_mib("VmHWM")
                submit_rate = DEPTH_JOBS / submit(queue, DEPTH_JOBS, max(args.clients), args.size)
                drain_rate = DEPTH_JOBS / drain(queue, DEPTH_JOBS, depth)
            finally:
                queue.stop()
            rows.append((depth, buckets, queue.start_seconds, memory, submit_rate, drain_rate))
            print(f"depth {depth}, {buckets} buckets: replay {queue.start_seconds:.1f} s, {memory[0]:.0f} MiB "
                  f"(peak {memory[1]:.0f}), "
                  f"submit {submit_rate:.0f}/s, drain {drain_rate:.0f}/s", flush=True)
            if buckets == sized:
                break
    clear(args.table)
    report.append(f"### Deep queues: a gearmand started on a table of queued jobs ({args.size} bytes each)")
    report.append("")
    report.append(f"Replay: from start until gearmand answers, all jobs back (gearadmin shows them). "
                  f"Memory: gearmand's resident set then, and its peak during the replay (its MySQL queue "
                  f"reads the whole table into memory before it makes the jobs). Then {DEPTH_JOBS:,} jobs submitted by "
                  f"{max(args.clients)} clients and {DEPTH_JOBS:,} done by {WORKERS} workers, on top of the backlog.")
    report.append("")
    report.append("| queued jobs | hash chains | replay | memory | peak memory | submit jobs/s | drain jobs/s |")
    report.append("| --- | --- | --- | --- | --- | --- | --- |")
    for depth, buckets, seconds, memory, submit_rate, drain_rate in rows:
        name = f"{buckets:,}" + (" (gearmand's default)" if buckets == GEARMAND_DEFAULT_BUCKETS else " (the role's)")
        report.append(f"| {depth:,} | {name} | {seconds:.1f} s | {memory[0]:,.0f} MiB | {memory[1]:,.0f} MiB | "
                      f"{submit_rate:,.0f} | {drain_rate:,.0f} |")
    report.append("")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="the bench's own queue table, DB.TABLE")
    parser.add_argument("--jobs", type=int, default=20000, help="jobs per throughput figure")
    parser.add_argument("--clients", default="1,4", help="submitting clients at once, a list")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--depths", default="10000,100000,1000000", help="backlogs to replay, a list ('' : none)")
    parser.add_argument("--no-settings", dest="settings", action="store_false",
                        help="skip the queue database settings")
    parser.add_argument("--port", type=int, default=4750, help="the bench's gearmands: this one and the next")
    parser.add_argument("--command", default="", help="how the bench was run, for the report")
    parser.add_argument("--report", help="write the Markdown report here too")
    args = parser.parse_args()
    # Stopped from outside (the play interrupted): still stop the gearmands
    # and put back any database setting changed at runtime (the finally blocks).
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, lambda number, _: sys.exit(128 + number))
    args.clients = [int(c) for c in args.clients.split(",") if c]
    args.depths = [int(d) for d in args.depths.split(",") if d]
    for port in (args.port, args.port + 1):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"port {port} is taken: choose others with --port")

    flags = deployed_flags()
    conf, ssl = database()
    report = [
        "# Benchmarks",
        "",
        "Written by `make bench`; do not edit by hand.",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Host: {platform.node()}, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB, "
        f"{version(['sh', '-c', '. /etc/os-release && echo $PRETTY_NAME'])}",
        f"- {version(['gearmand', '--version'])}; database {server_version()} on {conf['mysql-host']}"
        f"{' over TLS' if ssl else ''}",
        f"- gearmand flags (deployed, the bench's own address, port and table aside): `{' '.join(flags)}`",
        f"- Command: `{args.command or 'queue_bench.py'}`",
        "",
    ]
    throughput(args, flags, report)
    if args.settings:
        settings(args, flags, report)
    if args.depths:
        depths(args, flags, report)
    text = "\n".join(report)
    print(text)
    if args.report:
        with open(args.report, "w") as out:
            out.write(text)


if __name__ == "__main__":
    main()
