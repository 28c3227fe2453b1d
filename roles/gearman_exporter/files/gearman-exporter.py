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
import json
import re
import socket
import sys
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pymysql
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily


# A line of the workers answer: FD ADDRESS CLIENT-ID : FUNCTION...; the
# address may be IPv6, so the fields are taken by position.
WORKER_LINE = re.compile(r"^\S+ \S+ \S+ :\s*\S")


def admin(host: str, port: int, timeout: float) -> tuple[str, list[str], list[str]]:
    """gearmand's version, and the lines of its status and workers answers."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        reader = conn.makefile("r", encoding="utf-8", errors="replace", newline="\n")

        def listing(command: str) -> list[str]:
            conn.sendall(command.encode() + b"\n")
            lines = []
            for line in reader:
                if line == ".\n":
                    return lines
                lines.append(line.rstrip("\n"))
            raise ConnectionError(f"gearmand closed the connection during {command}")

        status = listing("status")
        workers = listing("workers")
        conn.sendall(b"version\n")
        version = reader.readline().strip()
        if not version.startswith("OK "):
            raise ConnectionError(f"unexpected answer to version: {version!r}")
        return version[3:], status, workers


def queue_rows(db: dict, timeout: float) -> list[tuple[str, int, float]]:
    """Per function: rows in the queue table and the oldest row's age (s)."""
    tls = {"ca": db["ca"], "check_hostname": True} if db.get("ca") else None
    conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["password"],
                           database=db["database"], ssl=tls, connect_timeout=timeout,
                           read_timeout=timeout, write_timeout=timeout)
    try:
        with conn.cursor() as cursor:
            # The database's own clock, so that the age does not depend on
            # the two hosts agreeing on the time. The statement time limit
            # keeps a scrape of a deep table from piling up on the server.
            cursor.execute(
                f"SET STATEMENT max_statement_time={timeout:g} FOR "
                "SELECT function_name, COUNT(*), "
                "TIMESTAMPDIFF(MICROSECOND, MIN(queued_at), NOW(6)) / 1e6 "
                f"FROM `{db['table']}` GROUP BY function_name")
            return [(name.decode("utf-8", "replace"), int(count), max(float(age or 0), 0.0))
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
        timeout = self.settings["timeout"]
        functions: set[str] = set()
        yield from self.collect_gearmand(timeout, functions)
        if self.settings.get("database"):
            yield from self.collect_database(timeout, functions)

    def collect_gearmand(self, timeout: float, functions: set[str]):
        """gearmand's own counts; the functions it knows go into functions."""
        up = self.gauge("gearman_up", "1 if the job server answered its admin protocol in this scrape, else 0.")
        took = self.gauge("gearman_scrape_duration_seconds", "Time the job server took to answer the admin commands.")
        started = time.monotonic()
        try:
            version, status, workers = admin(self.settings["host"], self.settings["port"], timeout)
        except (OSError, ValueError) as err:
            print(f"gearmand at {self.settings['host']}:{self.settings['port']}: {err}", file=sys.stderr, flush=True)
            up.add_metric([self.server], 0)
            yield up
            return
        up.add_metric([self.server], 1)
        took.add_metric([self.server], time.monotonic() - started)
        yield up
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
            if len(fields) != 4:
                continue
            name, total, busy, able = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
            functions.add(name)
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

    def collect_database(self, timeout: float, functions: set[str]):
        """The queue table's rows and oldest job per function: 0 for a
        function gearmand knows and the table does not hold."""
        db = self.settings["database"]
        up = self.gauge("gearman_queue_database_up",
                        "1 if the queue table could be read in this scrape, else 0.")
        started = time.monotonic()
        try:
            rows = queue_rows(db, timeout)
        except (pymysql.MySQLError, OSError) as err:
            print(f"queue database at {db['host']}:{db['port']}: {err}", file=sys.stderr, flush=True)
            up.add_metric([self.server], 0)
            yield up
            return
        up.add_metric([self.server], 1)
        yield up
        took = self.gauge("gearman_queue_database_scrape_duration_seconds", "Time the queue table took to read.")
        took.add_metric([self.server], time.monotonic() - started)
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


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def serve(settings: dict) -> None:
    registry = CollectorRegistry()
    registry.register(GearmanCollector(settings))
    listen = settings["listen"]

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in listen else socket.AF_INET

    httpd = make_server(listen, settings["listen_port"], make_wsgi_app(registry),
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
