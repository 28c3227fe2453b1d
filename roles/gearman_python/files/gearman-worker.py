"""The tutorial's worker in Python: registers sendEmail and resizeImage and
does the work (here: logs the job and sleeps a while). Lines go to standard
output, which systemd sends to the journal, in the PHP worker's format.

    gearman-worker.py [--servers FILE] [--work-ms N] [--id NAME]

SIGTERM or SIGINT: the job in hand is finished, then the worker exits.
A payload that is not JSON, or a job whose work raises, fails that job
(WORK_FAIL, with the reason in the log); the worker goes on.
The job server list is re-read only at start.
With GEARMAN_METRICS_FILE set, it keeps counts of jobs done and failed, and
their durations, per function, and writes them there in Prometheus' text
format (read by prometheus-node-exporter's textfile collector) once a second
while they change, carrying on from that file after a restart: the PHP
worker's names, labels and buckets.
"""

import argparse
import json
import os
import re
import signal
import socket
import sys
import threading
import time

import gear

SERVERS_FILE = "/etc/gearman/servers"
# TCP keepalive on the worker's connections, as the job servers set it on
# theirs (the gearman role's defaults): a job server whose host vanished is
# noticed within 20 + 5 x 3 = 35 s, and gear reconnects to it, rather than
# waiting for work on a dead connection for the kernel's two hours.
KEEPALIVE = {"keepalive": True, "tcp_keepidle": 20, "tcp_keepintvl": 5, "tcp_keepcnt": 3}
FUNCTIONS = {"sendEmail": "email", "resizeImage": "resize"}


class Worker(gear.Worker):
    """gear's worker, sending each packet at once. gear leaves Nagle's
    algorithm on: after a job the worker writes WORK_COMPLETE, then at once
    GRAB_JOB, and the kernel holds the second small write until the first
    is acknowledged, which the job server delays by up to 40 ms: about 23
    jobs/s. libgearman (the PHP samples) sets TCP_NODELAY; so do we, on
    every connection gear opens (_onConnect runs after each connect and
    reconnect). tests check the rate a worker reaches."""

    def _onConnect(self, conn):
        conn.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._onConnect(conn)


def log(line):
    print(line, flush=True)


# Upper bounds (seconds) of the job duration histogram, as the PHP worker's.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


# A sample line of the counts file, and its labels.
SAMPLE = re.compile(r"^(gearman_worker_[a-z_]+)\{(.*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def label(value):
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class JobMetrics:
    """Jobs done and failed, and their durations, per function, written as
    Prometheus text to a file, whole (write, then rename), by a helper
    thread once a second while they change, and at the end: counting costs
    the worker a lock and a few additions per job, not a file write."""

    def __init__(self, path, worker_id, functions):
        self.path, self.worker, self.functions = path, label(worker_id), list(functions)
        self.lock = threading.Lock()
        self.jobs = {(f, outcome): 0 for f in self.functions for outcome in ("done", "failed")}
        self.buckets = {f: [0] * len(DURATION_BUCKETS) for f in self.functions}
        self.sums = {f: 0.0 for f in self.functions}
        self.changed = threading.Event()
        self.changed.set()
        self.resume()

    def resume(self):
        """Carry on from the counts a previous run of this worker wrote, so
        that a restart (a deploy, a stop) does not reset them."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        buckets = [f"{le:g}" for le in DURATION_BUCKETS]
        for line in lines:
            sample = SAMPLE.match(line)
            if not sample:
                continue
            name, labels, value = sample.group(1), dict(LABEL.findall(sample.group(2))), sample.group(3)
            f = labels.get("function")
            if f not in self.sums:
                continue
            try:  # a line that does not parse is left out
                if name == "gearman_worker_jobs_total" and (f, labels.get("outcome")) in self.jobs:
                    self.jobs[(f, labels["outcome"])] = int(value)
                elif name == "gearman_worker_job_duration_seconds_bucket" and labels.get("le") in buckets:
                    self.buckets[f][buckets.index(labels["le"])] = int(value)
                elif name == "gearman_worker_job_duration_seconds_sum":
                    self.sums[f] = float(value)
            except ValueError:
                continue

    def observe(self, function, outcome, seconds):
        with self.lock:
            self.jobs[(function, outcome)] += 1
            for i, le in enumerate(DURATION_BUCKETS):
                if seconds <= le:
                    self.buckets[function][i] += 1
            self.sums[function] += seconds
        self.changed.set()

    def render(self):
        with self.lock:
            lines = ["# HELP gearman_worker_jobs_total Jobs a sample worker finished, by function and outcome.",
                     "# TYPE gearman_worker_jobs_total counter"]
            lines += [f'gearman_worker_jobs_total{{worker="{self.worker}",function="{label(f)}",outcome="{o}"}} {n}'
                      for (f, o), n in self.jobs.items()]
            lines += ["# HELP gearman_worker_job_duration_seconds Time a sample worker took per job, "
                      "from taking it to answering.",
                      "# TYPE gearman_worker_job_duration_seconds histogram"]
            for f in self.functions:
                labels = f'worker="{self.worker}",function="{label(f)}"'
                count = self.jobs[(f, "done")] + self.jobs[(f, "failed")]
                lines += [f'gearman_worker_job_duration_seconds_bucket{{{labels},le="{le:g}"}} {n}'
                          for le, n in zip(DURATION_BUCKETS, self.buckets[f])]
                lines += [f'gearman_worker_job_duration_seconds_bucket{{{labels},le="+Inf"}} {count}',
                          f"gearman_worker_job_duration_seconds_sum{{{labels}}} {self.sums[f]:.6f}",
                          f"gearman_worker_job_duration_seconds_count{{{labels}}} {count}"]
        return "\n".join(lines) + "\n"

    def write(self):
        self.changed.clear()
        try:
            with open(self.path + ".tmp", "w", encoding="utf-8") as f:
                f.write(self.render())
            os.replace(self.path + ".tmp", self.path)
        except OSError as e:
            log(f"{self.worker}: could not write {self.path}: {e}")
            self.changed.set()  # tried again a second later

    def keep_writing(self, stopped):
        while not stopped.is_set():
            if self.changed.wait(1.0):
                self.write()
                stopped.wait(1.0)


def read_servers(path):
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except OSError:
        return []
    servers = []
    for line in lines:
        if line and not line.startswith("#"):
            # host:port, or [IPv6 address]:port
            bracketed = line.startswith("[") and "]" in line
            host, _, port = line[1:].partition("]") if bracketed else line.rpartition(":")
            if not host:  # no port given
                host, port = line, ""
            port = port.lstrip(":") or "4730"
            servers.append((host, int(port)))
    return servers


class Stopper:
    """Turns SIGTERM/SIGINT into a clean stop. A signal handler must not take
    the library's locks, so a helper thread interrupts the wait for a job,
    and only while no job is in hand."""

    def __init__(self, worker, worker_id):
        self.worker = worker
        self.worker_id = worker_id
        self.requested = threading.Event()
        self.busy = threading.Event()
        self.finished = threading.Event()

    def install(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame):
        if not self.requested.is_set():
            self.requested.set()
            log(f"{self.worker_id}: stop asked, finishing the job in hand")
            threading.Thread(target=self._interrupt, daemon=True).start()

    def _interrupt(self):
        while not self.finished.wait(0.5):
            if not self.busy.is_set():
                self.worker.stopWaitingForJobs()


def text(value):
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def work(job, worker_id, work_ms):
    """Does the job; returns what to report: WORK_COMPLETE's data, or None
    for WORK_FAIL. Raises when the work itself fails."""
    function = job.name
    handle_text = text(job.handle)
    try:
        payload = json.loads(job.arguments.decode("utf-8"))
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
    except ValueError:
        shown = job.arguments[:200].decode("utf-8", "replace")
        log(f"{worker_id}: FAILED {function} {handle_text}: payload is not JSON: {shown}")
        return None
    # A payload may ask for slower work ("work_ms") or for the work to raise
    # ("fail", the message), to try out faults.
    if "fail" in payload:
        raise RuntimeError(str(payload["fail"]))
    if "work_ms" in payload:
        try:
            work_ms = min(max(int(payload["work_ms"]), 0), 600000)
        except (TypeError, ValueError):
            pass
    time.sleep(work_ms / 1000)
    log(f"{worker_id}: done {function} {handle_text} {json.dumps(payload, separators=(',', ':'))}")
    return f"{FUNCTIONS[function]} done by {worker_id}".encode()


def handle(job, worker_id, work_ms, metrics=None):
    """Works the job and reports the outcome, whatever happens: work that
    raises fails the job (unreported, it would stay assigned to this live
    worker for ever); a report that cannot be sent means the connection went
    away, and the job server hands the job out again."""
    started = time.monotonic()
    try:
        result = work(job, worker_id, work_ms)
    except Exception as e:  # any failure of the work fails the job
        log(f"{worker_id}: FAILED {job.name} {text(job.handle)}: {type(e).__name__}: {e}")
        result = None
    try:
        if result is None:
            job.sendWorkFail()
        else:
            job.sendWorkComplete(result)
    except Exception as e:  # socket errors and gear's own alike
        log(f"{worker_id}: could not report {job.name} {text(job.handle)}: {e}; going on")
    if metrics:
        metrics.observe(job.name, "failed" if result is None else "done", time.monotonic() - started)


def main():
    parser = argparse.ArgumentParser(prog="gearman-worker.py", description="Do sendEmail and resizeImage jobs.")
    parser.add_argument("--servers", default=SERVERS_FILE)
    parser.add_argument("--work-ms", type=int, default=int(os.environ.get("GEARMAN_WORK_MS") or "100"))
    parser.add_argument("--id", default=os.environ.get("GEARMAN_WORKER_ID", f"python-{os.getpid()}"))
    args = parser.parse_args()
    args.work_ms = max(args.work_ms, 0)

    servers = read_servers(args.servers)
    if not servers:
        print(f"{args.id}: no job server listed in {args.servers}", file=sys.stderr)
        sys.exit(1)
    # gear reconnects on its own, and registers the functions again, when a
    # job server goes away and comes back.
    worker = Worker(args.id)
    stopper = Stopper(worker, args.id)
    stopper.install()
    for host, port in servers:
        worker.addServer(host, port, **KEEPALIVE)
    for function in FUNCTIONS:
        worker.registerFunction(function)
    log(f"{args.id}: ready for {', '.join(FUNCTIONS)} ({args.work_ms} ms of work a job)")
    metrics = None
    metrics_stopped = threading.Event()
    if os.environ.get("GEARMAN_METRICS_FILE"):
        metrics = JobMetrics(os.environ["GEARMAN_METRICS_FILE"], args.id, FUNCTIONS)
        writer = threading.Thread(target=metrics.keep_writing, args=(metrics_stopped,), daemon=True)
        writer.start()

    while not stopper.requested.is_set():
        try:
            job = worker.getJob()
        except gear.InterruptedError:
            continue
        stopper.busy.set()
        try:
            handle(job, args.id, args.work_ms, metrics)
        finally:
            stopper.busy.clear()
    stopper.finished.set()
    worker.shutdown()
    if metrics:
        metrics_stopped.set()
        writer.join()
        metrics.write()
    log(f"{args.id}: stopped")


if __name__ == "__main__":
    main()
