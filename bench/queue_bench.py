"""What persistence costs: background jobs per second into and out of
gearmand, with its queue in MySQL and (for comparison) in memory.

Run it on a job server host with the project's Python environment, as root;
make bench (playbooks/bench.yml) does this on the inventory's first job
server, with its address, port and queue table as the roles work them out:

    /opt/gearman-python/bin/python3 queue_bench.py [--jobs N] [--workers K] [--size BYTES]
        [--host ADDRESS] [--port PORT] [--table DB.TABLE]

It uses a function of its own (queueBench), so the sample workers do not take
its jobs. Jobs are submitted with gear (one client) and done by K `gearman -w`
processes (libgearman), which do no work: the figures are the job server's
and its queue's. For the in-memory figures it starts a second gearmand on a spare
port with --queue-type=builtin and stops it afterwards. Prints a table; it
asserts nothing.
"""

import argparse
import subprocess
import tempfile
import time
import uuid

import gear

FUNCTION = "queueBench"


def submit(host, port, jobs, size):
    client = gear.Client("bench-client")
    client.addServer(host, port)
    client.waitForServer(10)
    payload = b"x" * size
    started = time.monotonic()
    for _ in range(jobs):
        job = gear.Job(FUNCTION, payload, unique=str(uuid.uuid4()))
        client.submitJob(job, background=True, timeout=30)
        if not job.handle:
            raise SystemExit("a job was not queued")
    elapsed = time.monotonic() - started
    client.shutdown()
    return elapsed


def drain(host, port, jobs, workers):
    """K libgearman workers (the gearman command), each taking its share."""
    shares = [jobs // workers + (1 if n < jobs % workers else 0) for n in range(workers)]
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            ["gearman", "-h", host, "-p", str(port), "-w", "-f", FUNCTION, "-c", str(share)],
            stdout=subprocess.DEVNULL,
        )
        for share in shares if share
    ]
    for proc in procs:
        proc.wait(600)
    return time.monotonic() - started


# Counts the bench's rows in the queue table, logged in as gearmand is (its
# /etc/gearmand.conf), with the system Python's MySQL driver that the gearman
# role installs: the database may be on another host.
COUNT_ROWS = """
import sys, pymysql
conf = dict(line.strip()[2:].split("=", 1) for line in open("/etc/gearmand.conf") if line.startswith("--"))
db = pymysql.connect(host=conf["mysql-host"], port=int(conf["mysql-port"]), user=conf["mysql-user"],
                     password=conf["mysql-password"], database=conf["mysql-db"])
with db.cursor() as cursor:
    cursor.execute("SELECT COUNT(*) FROM " + sys.argv[1] + " WHERE function_name = %s", (sys.argv[2],))
    print(cursor.fetchone()[0])
"""


def mysql_rows(table):
    out = subprocess.run(["/usr/bin/python3", "-c", COUNT_ROWS, table, FUNCTION], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--host", default="127.0.0.1", help="the MySQL-backed gearmand's address")
    parser.add_argument("--port", type=int, default=4730, help="the MySQL-backed gearmand")
    parser.add_argument("--table", default="gearman.gearman_queue", help="its queue table, DB.TABLE")
    parser.add_argument("--builtin-port", type=int, default=4745)
    args = parser.parse_args()

    rows = []
    elapsed = submit(args.host, args.port, args.jobs, args.size)
    queued_rows = mysql_rows(args.table)
    rows.append(("mysql", args.jobs / elapsed, args.jobs / drain(args.host, args.port, args.jobs, args.workers),
                 queued_rows))

    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            ["gearmand", "--listen=127.0.0.1", f"--port={args.builtin_port}", "--queue-type=builtin",
             f"--log-file={tmp}/log", f"--pid-file={tmp}/pid"],
        )
        try:
            time.sleep(1)
            elapsed = submit("127.0.0.1", args.builtin_port, args.jobs, args.size)
            rows.append(("builtin", args.jobs / elapsed,
                         args.jobs / drain("127.0.0.1", args.builtin_port, args.jobs, args.workers), "-"))
        finally:
            server.terminate()
            server.wait(10)

    print(f"{args.jobs} background jobs of {args.size} bytes, one submitting client, {args.workers} workers")
    print(f"{'queue':<8} {'submit jobs/s':>14} {'drain jobs/s':>13} {'rows after submit':>18}")
    for queue, submit_rate, drain_rate, table_rows in rows:
        print(f"{queue:<8} {submit_rate:>14.0f} {drain_rate:>13.0f} {table_rows:>18}")


if __name__ == "__main__":
    main()
