"""The tutorial's client in Python: submits sendEmail and resizeImage as
background jobs and returns at once; the job server keeps them (in MySQL)
until a worker is free. Same options and JSON payloads as gearman-client.php.

    gearman-client.py [--count N] [--function sendEmail|resizeImage|both]
                      [--email ADDRESS] [--name NAME] [--image PATH]
                      [--servers FILE]

Prints one job handle a line; exits 1 with a message when no job server
takes a job.
"""

import argparse
import json
import socket
import sys
import uuid

import gear

SERVERS_FILE = "/etc/gearman/servers"
# Seconds a job server has to take a job before the next one is tried: one
# that is stuck, or still replaying its queue after a start, accepts the
# connection and says nothing (the PHP client waits as long).
SUBMIT_TIMEOUT = 5


class Client(gear.Client):
    """gear's client, sending each packet at once (TCP_NODELAY, as
    libgearman does), on every connection gear opens, reconnects included.
    This client waits for each job's answer before it sends the next, so
    Nagle's algorithm seldom holds it back; code copied from here that
    writes twice before an answer would wait up to 40 ms each time (see the
    worker, which did)."""

    def _onConnect(self, conn):
        conn.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._onConnect(conn)


def fail(message):
    print(f"gearman-client: {message}", file=sys.stderr)
    sys.exit(1)


def read_servers(path):
    """host:port lines; blank lines and # comments are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except OSError as e:
        fail(f"cannot read the job server list {path}: {e.strerror}")
    servers = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        # host:port, or [IPv6 address]:port
        bracketed = line.startswith("[") and "]" in line
        host, _, port = line[1:].partition("]") if bracketed else line.rpartition(":")
        if not host:  # no port given
            host, port = line, ""
        port = port.lstrip(":") or "4730"
        servers.append((host, int(port)))
    if not servers:
        fail(f"no job server in {path}")
    return servers


def payloads(args, seq):
    if args.function in ("sendEmail", "both"):
        yield "sendEmail", {"name": args.name, "email": args.email, "seq": seq, "lang": "python"}
    if args.function in ("resizeImage", "both"):
        yield "resizeImage", {"image": args.image, "seq": seq, "lang": "python"}


def main():
    parser = argparse.ArgumentParser(prog="gearman-client.py", description="Queue the tutorial's background jobs.")
    parser.add_argument("--count", type=int, default=1, help="jobs of each function (default 1)")
    parser.add_argument("--function", choices=["sendEmail", "resizeImage", "both"], default="both")
    parser.add_argument("--name", default="web")
    parser.add_argument("--email", default="member@example.com")
    parser.add_argument("--image", default="/var/www/pub/image/test.png")
    parser.add_argument("--servers", default=SERVERS_FILE, help=f"job server list (default {SERVERS_FILE})")
    args = parser.parse_args()
    if args.count < 1:
        fail("--count takes a whole number from 1")

    servers = read_servers(args.servers)
    listed = ", ".join(f"{h}:{p}" for h, p in servers)
    client = Client("gearman-client.py")
    try:
        for host, port in servers:
            client.addServer(host, port)
        try:
            client.waitForServer(timeout=5)
        except gear.TimeoutError:
            fail(f"no job server answers at {listed}; nothing was queued")
        for seq in range(1, args.count + 1):
            for function, payload in payloads(args, seq):
                # A unique id of our own: gear sends none, and gearmand's MySQL
                # queue keys its rows on it, so a second job without one is
                # refused (QUEUE_ERROR). libgearman (PHP) makes one itself.
                data = json.dumps(payload, separators=(",", ":")).encode()
                job = gear.Job(function, data, unique=str(uuid.uuid4()))
                # gear offers the job to each connected server in turn, and
                # drops (to reconnect later) one that does not answer in time.
                try:
                    client.submitJob(job, background=True, timeout=SUBMIT_TIMEOUT)
                except (gear.GearmanError, gear.NoConnectedServersError):
                    fail(f"{function} was not queued: no job server at {listed} took it within "
                         f"{SUBMIT_TIMEOUT} s (a server that refused it says why in its log)")
                if not job.handle:
                    fail(f"{function} was not queued: no job server at {listed} took it")
                handle = job.handle.decode() if isinstance(job.handle, bytes) else job.handle
                print(f"{function} queued: {handle}", flush=True)
    finally:
        client.shutdown()


if __name__ == "__main__":
    main()
