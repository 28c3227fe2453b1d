#!/usr/bin/python3
"""Prometheus exporter for one Gearman job server and its MySQL queue table.

Every scrape asks gearmand's admin protocol (status, workers, version) and
the queue table afresh; nothing is cached, so a number is never older than
the scrape. When gearmand or the database does not answer within the
timeout, that part reports up 0 and no other numbers: the scrape itself still
succeeds.

Settings (the database password among them) come from a JSON file that only
root and the exporter's account can read, never from the command line.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import socket
import socketserver
import sys
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pymysql
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily


# A line of the workers answer: FD ADDRESS CLIENT-ID : FUNCTION...; the
# address may be IPv6, so the fields are taken by position.
WORKER_LINE = re.compile(r"^\S+ \S+ \S+ :\s*\S")


def left(deadline: float) -> float:
    """Seconds left until the deadline (time.monotonic()); at least a little."""
    return max(deadline - time.monotonic(), 0.01)


def admin(host: str, port: int, deadline: float) -> tuple[str, list[str], list[str]]:
    """gearmand's version, and the lines of its status and workers answers,
    all before the deadline."""
    with socket.create_connection((host, port), timeout=left(deadline)) as conn:
        reader = conn.makefile("r", encoding="utf-8", errors="replace", newline="\n")

        def listing(command: str) -> list[str]:
            conn.settimeout(left(deadline))
            conn.sendall(command.encode() + b"\n")
            lines = []
            while True:
                conn.settimeout(left(deadline))
                line = reader.readline()
                if not line:
                    raise ConnectionError(f"gearmand closed the connection during {command}")
                if line == ".\n":
                    return lines
                lines.append(line.rstrip("\n"))

        status = listing("status")
        workers = listing("workers")
        conn.settimeout(left(deadline))
        conn.sendall(b"version\n")
        version = reader.readline().strip()
        if not version.startswith("OK "):
            raise ConnectionError(f"unexpected answer to version: {version!r}")
        return version[3:], status, workers


def queue_rows(db: dict, deadline: float) -> list[tuple[str, int, float]]:
    """Per function: rows in the queue table and the oldest row's age (s)."""
    tls = {"ca": db["ca"], "check_hostname": True} if db.get("ca") else None
    conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["password"],
                           database=db["database"], ssl=tls, connect_timeout=left(deadline),
                           read_timeout=left(deadline), write_timeout=left(deadline))
    try:
        # The database's own clock, so that the age does not depend on the
        # two hosts agreeing on the time. The statement time limit keeps a
        # scrape of a deep table from piling up on the server: MariaDB's
        # SET STATEMENT, or MySQL's optimizer hint.
        query = ("SELECT {hint}function_name, COUNT(*), "
                 "TIMESTAMPDIFF(MICROSECOND, MIN(queued_at), NOW(6)) / 1e6 "
                 f"FROM `{db['table']}` GROUP BY function_name")
        timeout = left(deadline)
        if "mariadb" in conn.get_server_info().lower():
            query = f"SET STATEMENT max_statement_time={timeout:.3f} FOR " + query.format(hint="")
        else:
            query = query.format(hint=f"/*+ MAX_EXECUTION_TIME({int(timeout * 1000)}) */ ")
        with conn.cursor() as cursor:
            cursor.execute(query)
            return [(name.decode("utf-8", "replace") if isinstance(name, (bytes, bytearray)) else str(name),
                     int(count), max(float(age or 0), 0.0))
                    for name, count, age in cursor.fetchall()]
    finally:
        conn.close()


class GearmanCollector:
    def __init__(self, settings: dict):
        self.settings = settings
        self.server = settings["name"]

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=("server",) + labels)

    def collect(self):
        # Both parts at once, each within the timeout, and the whole within
        # what Prometheus waits (its X-Prometheus-Scrape-Timeout-Seconds,
        # less a margin): a part that hangs reports up 0 rather than
        # failing the scrape.
        deadline = time.monotonic() + min(float(self.settings["timeout"]), max(SCRAPE.limit - 0.5, 0.5))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        parts = [pool.submit(self.ask_gearmand, deadline)]
        if self.settings.get("database"):
            parts.append(pool.submit(self.ask_database, deadline))
        concurrent.futures.wait(parts, timeout=left(deadline) + 0.2)
        # A part still at it past the deadline is down for this scrape; its
        # thread ends on its own socket timeouts.
        pool.shutdown(wait=False)
        answers = [part.result() if part.done() else (False, None) for part in parts]
        yield from self.collect_gearmand(answers[0])
        if len(answers) > 1:
            status = answers[0][1][1] if answers[0][0] else []
            functions = {line.split("\t")[0] for line in status if line.count("\t") == 3}
            yield from self.collect_database(answers[1], functions)

    def ask_gearmand(self, deadline: float):
        """(True, (version, status, workers, seconds)) or (False, None)."""
        started = time.monotonic()
        try:
            version, status, workers = admin(self.settings["host"], self.settings["port"], deadline)
        except Exception as err:  # whatever fails, this part is down, the scrape goes on
            print(f"gearmand at {self.settings['host']}:{self.settings['port']}: {err}", file=sys.stderr, flush=True)
            return False, None
        return True, (version, status, workers, time.monotonic() - started)

    def ask_database(self, deadline: float):
        """(True, (rows, seconds)) or (False, None)."""
        db = self.settings["database"]
        started = time.monotonic()
        try:
            rows = queue_rows(db, deadline)
        except Exception as err:  # whatever fails, this part is down, the scrape goes on
            print(f"queue database at {db['host']}:{db['port']}: {err}", file=sys.stderr, flush=True)
            return False, None
        return True, (rows, time.monotonic() - started)

    def collect_gearmand(self, answer):
        """gearmand's own counts, from its answer."""
        up = self.gauge("gearman_up", "1 if the job server answered its admin protocol in this scrape, else 0.")
        ok, found = answer
        up.add_metric([self.server], 1 if ok else 0)
        yield up
        if not ok:
            return
        version, status, workers, seconds = found
        took = self.gauge("gearman_scrape_duration_seconds", "Time the job server took to answer the admin commands.")
        took.add_metric([self.server], seconds)
        yield took
        info = InfoMetricFamily("gearman_version", "The job server's version.", labels=("server",))
        info.add_metric([self.server], {"version": version})
        yield info
        queued = self.gauge("gearman_function_jobs_queued",
                            "Jobs of this function waiting for a worker (not yet handed to one).", ("function",))
        running = self.gauge("gearman_function_jobs_running", "Jobs of this function in a worker's hands.",
                             ("function",))
        available = self.gauge("gearman_function_workers", "Workers that have registered this function.",
                               ("function",))
        for line in status:
            fields = line.split("\t")
            if len(fields) != 4 or not all(f.isdigit() for f in fields[1:]):
                continue
            name, total, busy, able = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
            queued.add_metric([self.server, name], max(total - busy, 0))
            running.add_metric([self.server, name], busy)
            available.add_metric([self.server, name], able)
        yield queued
        yield running
        yield available
        # A connection that registered no function is a client, not a worker.
        connected = self.gauge("gearman_workers_connected",
                               "Connections to the job server that have registered at least one function.")
        connected.add_metric([self.server], sum(1 for line in workers if WORKER_LINE.match(line)))
        yield connected

    def collect_database(self, answer, functions: set[str]):
        """The queue table's rows and oldest job per function: 0 for a
        function gearmand knows and the table does not hold."""
        up = self.gauge("gearman_queue_database_up",
                        "1 if the queue table could be read in this scrape, else 0.")
        ok, found = answer
        up.add_metric([self.server], 1 if ok else 0)
        yield up
        if not ok:
            return
        rows, seconds = found
        took = self.gauge("gearman_queue_database_scrape_duration_seconds", "Time the queue table took to read.")
        took.add_metric([self.server], seconds)
        yield took
        count = self.gauge("gearman_queue_rows", "Jobs of this function persisted in the queue table.", ("function",))
        oldest = self.gauge("gearman_queue_oldest_job_age_seconds",
                            "Age of this function's oldest job in the queue table.", ("function",))
        held = {name: (n, age) for name, n, age in rows}
        for name in sorted(functions | set(held)):
            n, age = held.get(name, (0, 0.0))
            count.add_metric([self.server, name], n)
            oldest.add_metric([self.server, name], age)
        yield count
        yield oldest


class ScrapeLimit(threading.local):
    """What Prometheus waits for this request (seconds), per serving thread."""
    limit = 10.0


SCRAPE = ScrapeLimit()


class QuietHandler(WSGIRequestHandler):
    # A client that connects and sends nothing holds one thread this long.
    timeout = 15

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread a request: a slow or idle client holds up no other scrape."""
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that went quiet or away is no fault of ours: one line,
        # not a traceback.
        error = sys.exc_info()[1]
        print(f"request from {client_address[0]}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)


def with_scrape_limit(app):
    def wrapped(environ, start_response):
        try:
            SCRAPE.limit = float(environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS") or 10.0)
        except ValueError:
            SCRAPE.limit = 10.0
        return app(environ, start_response)
    return wrapped


def serve(settings: dict) -> None:
    registry = CollectorRegistry()
    registry.register(GearmanCollector(settings))
    listen = settings["listen"]

    class Server(ThreadingServer):
        address_family = socket.AF_INET6 if ":" in listen else socket.AF_INET

    httpd = make_server(listen, settings["listen_port"], with_scrape_limit(make_wsgi_app(registry)),
                        server_class=Server, handler_class=QuietHandler)
    print(f"serving metrics on {listen}:{settings['listen_port']}", file=sys.stderr, flush=True)
    httpd.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the settings, as JSON")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as f:
        settings = json.load(f)
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
