"""What every scenario's testinfra tests share: the host seen as the tutorial
sees it (gearadmin's view, the queue table's rows, the workers' journal), and
the secrets that must not leak. molecule/pytest.ini makes this folder the
root, so pytest loads this module for every scenario; tests take the
`gearman` fixture and import plain helpers and names from here."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import testinfra
import yaml

PORT = 4730
TLS_PORT = 4731
DB, TABLE = "gearman", "gearman_queue"
FUNCTIONS = ("sendEmail", "resizeImage")
PHP_WORKERS = ["gearman-worker-php@1.service", "gearman-worker-php@2.service"]
PYTHON_WORKERS = ["gearman-worker-python@1.service"]
ALL_WORKERS = PHP_WORKERS + PYTHON_WORKERS
VENV = "/opt/gearman-python"
CLIENTS = {"php": "gearman-client.php", "python": "gearman-client.py"}
PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[1]))
# A PHP client (libgearman) that submits background jobs "RUN-SEQ " for
# SEQ from FIRST to FIRST + COUNT - 1, stops at the first one refused, and
# prints how many gearmand took. Arguments: port function run first count.
BULK_CLIENT = r"""
[, $port, $function, $run, $first, $count] = $argv;
$client = new GearmanClient();
$client->setTimeout(5000);
$client->addServer('127.0.0.1', (int) $port);
$taken = 0;
for ($seq = (int) $first; $taken < (int) $count; $seq++) {
    $client->doBackground($function, "$run-$seq ");
    if ($client->returnCode() != GEARMAN_SUCCESS) {
        fwrite(STDERR, "job $run-$seq refused: " . $client->error() . "\n");
        break;
    }
    $taken++;
}
echo "$taken\n";
"""
# Characters that an output format may escape (JSON, YAML, shell quoting):
# a leak check looks for the pieces of a secret between them.
ESCAPED = re.compile(r"[\"'\\]")


def wait_until(predicate, timeout=30.0, step=0.5):
    """Poll predicate until it is true; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def started_at(host, unit: str) -> list[float]:
    """Each time systemd logged the unit started, in order (seconds since
    the epoch)."""
    out = host.check_output("journalctl --no-pager -o short-unix -u %s", unit)
    return [float(line.split()[0]) for line in out.splitlines() if " Started " in line]


def written_at(host, path: str) -> float:
    """When the file was last written (seconds since the epoch)."""
    return float(host.check_output("stat -c %%.Y %s", path))


def secret_pieces(secret: str) -> list[str]:
    """The parts of a secret that read the same however it is escaped: the
    runs between quotes and backslashes, 6 characters or longer."""
    pieces = [piece for piece in ESCAPED.split(secret) if len(piece) >= 6]
    assert pieces, f"the secret has no run of 6 characters free of {ESCAPED.pattern}: no leak check can find it"
    return pieces


def leaks(text: str, secret: str) -> list[str]:
    """The pieces of the secret found in text (an empty list: no leak)."""
    return [piece for piece in secret_pieces(secret) if piece in text]


# Where the default scenario's dependency step installs the collection it
# builds from this clone (tests/build_collection.py): in the run's own
# ephemeral folder, so that runs side by side never share one.
COLLECTION_PATH = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", PROJECT / ".cache")) / "collection"


def playbook_command(inventory, playbook: str, *extra: str) -> list[str]:
    """One of the project's playbooks (a path from the project's root), or
    one of the installed collection's by name (jobqueue.gearman.site)."""
    target = playbook if re.fullmatch(r"\w+\.\w+\.\w+", playbook) else str(PROJECT / playbook)
    return ["ansible-playbook", "-i", str(inventory), target, *extra]


def playbook_env(**env: str) -> dict[str, str]:
    """No colours, and the built collection first on the collections path."""
    found = [p for p in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(":") if p]
    return {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_COLLECTIONS_PATH": ":".join([str(COLLECTION_PATH), *found]), **env}


def shares(count: int, parts: int) -> list[int]:
    """COUNT split into PARTS as evenly as can be."""
    return [count // parts + (1 if n < count % parts else 0) for n in range(parts)]


def run_playbook(inventory, playbook: str, *extra: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """ansible-playbook with one of the project's playbooks, output captured, no colours."""
    return subprocess.run(
        playbook_command(inventory, playbook, *extra),
        capture_output=True, text=True, timeout=timeout, env=playbook_env(**env),
    )


def jobs_done(log: str, run: str) -> list[tuple[str, dict]]:
    """(function, payload) of each job a worker journal reports done for this run."""
    return [
        (function, json.loads(payload.replace("\\/", "/")))
        for function, payload in re.findall(r": done (\w+) \S+ (\{.*\})$", log, re.MULTILINE)
        if run in payload
    ]


EXPORTER_PORT = 9418
PROMETHEUS_PORT = 9090
SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(body: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus' text format: {(name, labels): value}, the server label left out."""
    found = {}
    for line in body.splitlines():
        sample = SAMPLE.match(line)
        if sample:
            name, labels, value = sample.groups()
            pairs = frozenset((k, v) for k, v in LABEL.findall(labels or "") if k != "server")
            found[(name, pairs)] = float(value)
    return found


def metric(metrics: dict, name: str, **labels: str) -> float | None:
    """A metric's value for these labels (None: not in the scrape)."""
    return metrics.get((name, frozenset(labels.items())))


def prometheus(host, path: str, **params: str) -> dict:
    """Prometheus' HTTP API on the host's loopback: the data of an answer
    that must be a success."""
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/{path}"
    answer = json.loads(host.check_output(
        "python3 -c %s %s %s", "import sys, urllib.request; print(urllib.request.urlopen("
                               "sys.argv[1] + '?' + sys.argv[2], timeout=30).read().decode())",
        url, urllib.parse.urlencode(params)))
    assert answer["status"] == "success", answer
    return answer["data"]


def prometheus_value(host, expr: str) -> float | None:
    """One instant query whose answer is a single number (None: no series)."""
    result = prometheus(host, "query", query=expr)["result"]
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def prometheus_alerts(host) -> set[tuple[str, str, str, str]]:
    """The alerts Prometheus has: (name, server, function, state)."""
    return {(a["labels"]["alertname"], a["labels"].get("server", ""), a["labels"].get("function", ""), a["state"])
            for a in prometheus(host, "alerts")["alerts"]}


def jobs_done_in_files(host) -> int:
    """The workers' own done counts on the host: what Prometheus must come to."""
    out = host.check_output("cat /var/lib/prometheus/node-exporter/gearman-worker-*.prom")
    return sum(int(line.rsplit(" ", 1)[1]) for line in out.splitlines()
               if line.startswith("gearman_worker_jobs_total{") and 'outcome="done"' in line)


def settled_done_count(host, prometheus_host=None, expected: int | None = None) -> int:
    """The workers' done count once Prometheus has scraped what their files
    say (the files are written within a second, scraped every few). With
    expected, first wait (a minute at most) for the files to reach it: a
    job just done is counted in memory before it is in a file."""
    query = 'sum(gearman_worker_jobs_total{outcome="done"})'
    if expected is not None:
        wait_until(lambda: jobs_done_in_files(host) >= expected, timeout=60)
    assert wait_until(lambda: prometheus_value(prometheus_host or host, query) == jobs_done_in_files(host),
                      timeout=90), (prometheus_value(prometheus_host or host, query), jobs_done_in_files(host))
    return jobs_done_in_files(host)


def prometheus_targets(host) -> dict[tuple[str, str], str]:
    """{(job, host label): health} of Prometheus' scrape targets."""
    return {(t["labels"]["job"], t["labels"].get("host", "")): t["health"]
            for t in prometheus(host, "targets")["activeTargets"]}


class Gearman:
    """One all-in-one host: job server, queue table, sample workers and clients."""

    def __init__(self, host):
        self.host = host

    # --- the job server -------------------------------------------------
    def status(self) -> dict[str, tuple[int, int, int]]:
        """gearadmin --status: {function: (queued, running, workers)}."""
        out = self.host.check_output("gearadmin --status -h 127.0.0.1 -p %s", str(PORT))
        table = {}
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) == 4:
                table[fields[0]] = tuple(int(f) for f in fields[1:])
        return table

    def queued(self, *functions: str) -> dict[str, int]:
        """Jobs gearmand holds per function (functions it does not know are left out)."""
        return {f: counts[0] for f, counts in self.status().items() if f in (functions or FUNCTIONS)}

    def running(self, function: str) -> int:
        return self.status().get(function, (0, 0, 0))[1]

    def main_pid(self, unit: str = "gearman-job-server") -> int:
        return int(self.host.check_output("systemctl show -p MainPID --value %s", unit))

    def accepting(self) -> bool:
        return self.host.run("gearadmin --getpid -h 127.0.0.1 -p %s", str(PORT)).rc == 0

    def restart_gearmand(self) -> None:
        before = self.main_pid()
        self.host.check_output("systemctl restart gearman-job-server")
        assert wait_until(self.accepting), "gearmand did not come back after restart"
        assert self.main_pid() not in (0, before)

    # --- the queue table ------------------------------------------------
    def sql(self, query: str) -> str:
        return self.host.check_output("mysql -N -B -e %s", query)

    def rows(self, *functions: str, run: str | None = None) -> int:
        """Rows in the queue table: of these functions (default: the samples'),
        or whose payload carries this run's marker."""
        where = (f"data LIKE '%{run}%'" if run
                 else "function_name IN (" + ", ".join(f"'{f}'" for f in functions or FUNCTIONS) + ")")
        return int(self.sql(f"SELECT COUNT(*) FROM {DB}.{TABLE} WHERE {where}"))

    # --- the exporter --------------------------------------------------
    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """One scrape of the exporter on loopback: {(name, labels): value};
        labels as a frozenset of (label, value) pairs, the server's left out."""
        body = self.host.check_output(
            "python3 -c %s", f"import urllib.request; print(urllib.request.urlopen("
                             f"'http://127.0.0.1:{EXPORTER_PORT}/metrics', timeout=30).read().decode())")
        return parse_metrics(body)

    def prometheus(self, path: str, **params: str) -> dict:
        return prometheus(self.host, path, **params)

    def query(self, expr: str) -> float | None:
        return prometheus_value(self.host, expr)

    def alerts(self) -> set[tuple[str, str, str]]:
        return prometheus_alerts(self.host)

    # --- workers and clients --------------------------------------------
    def systemctl(self, action: str, *units: str, check: bool = True):
        """systemctl ACTION UNIT..., each unit its own argument."""
        command = "systemctl " + action + " %s" * len(units)
        return self.host.check_output(command, *units) if check else self.host.run(command, *units)

    def unit(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.host.check_output("systemctl show %s" + " -p %s" * len(properties), unit, *properties)
        return dict(line.split("=", 1) for line in out.splitlines())

    def now(self) -> str:
        """A journal timestamp; what is logged from the next second on is after it."""
        since = self.host.check_output("date '+%Y-%m-%d %H:%M:%S'").strip()
        time.sleep(1)
        return since

    def worker_log(self, since: str, *units: str) -> str:
        """What the given worker units (default: all) logged since then."""
        units = units or ("gearman-worker-*@*.service",)
        return self.host.check_output(
            "journalctl --no-pager -o cat" + " -u %s" * len(units) + " --since %s", *units, since
        )

    def logged_at(self, since: str, unit: str, text: str) -> list[tuple[float, str]]:
        """When (Unix time), and by which process, the unit logged a line
        holding text, since then."""
        out = self.host.check_output("journalctl --no-pager -o short-unix -u %s --since %s", unit, since)
        return [(float(line.split(" ", 1)[0]), re.search(r" \S+\[(\d+)\]: ", line).group(1))
                for line in out.splitlines() if text in line]

    def done(self, since: str, run: str, *units: str) -> list[tuple[str, dict]]:
        return jobs_done(self.worker_log(since, *units), run)

    def submit(self, language: str, count: int, run: str, *options: str):
        """COUNT sendEmail and COUNT resizeImage jobs from a sample client, marked with run."""
        result = self.host.run(
            f"{CLIENTS[language]} --count %s --email %s --image %s" + " %s" * len(options),
            str(count), f"{run}@example.com", f"/tmp/{run}.png", *options,
        )
        assert result.rc == 0, result.stderr
        assert len(re.findall(r"queued: (\S+)", result.stdout)) == 2 * count, result.stdout
        return result

    # --- many jobs at once (a function the sample workers do not take) ---
    def submit_many(self, function: str, run: str, count: int, clients: int = 4, timeout: int = 900) -> int:
        """CLIENTS PHP (libgearman) processes submit COUNT background jobs
        between them, payload "RUN-SEQ "; each stops at its first refusal.
        Returns how many gearmand took (answered with a handle)."""
        parts = shares(count, clients)
        # Client n numbers its jobs from the sum of the shares before it: 0 to COUNT - 1 in all.
        command = " & ".join(f"php -r {shlex.quote(BULK_CLIENT)} {PORT} {function} {run} {sum(parts[:n])} {share}"
                             for n, share in enumerate(parts))
        result = self.host.run(f"timeout {timeout} sh -c %s", f"{command} & wait")
        return sum(int(line) for line in result.stdout.split())

    def drain_many(self, function: str, count: int, workers: int = 4, timeout: int = 900) -> list[str]:
        """WORKERS libgearman workers (gearman -w) do COUNT jobs of FUNCTION
        between them, each exiting 0; returns the payloads they were handed."""
        # With no command, gearman -w writes each job's payload to stdout
        # (the client ends each with a space) and answers it done.
        script = ("d=$(mktemp -d); pids=; "
                  + " ".join(f"gearman -h 127.0.0.1 -p {PORT} -w -f {function} -c {share} > $d/{n} & pids=\"$pids $!\";"
                             for n, share in enumerate(shares(count, workers)) if share)
                  + " for p in $pids; do wait $p || exit 1; done; cat $d/*; rm -r $d")
        out = self.host.run(f"timeout {timeout} sh -c %s", script)
        assert out.rc == 0, f"a worker failed: {out.stderr[-2000:]}"
        return out.stdout.split()

    # --- plays against this host ----------------------------------------
    def play(self, playbook: str, *extra: str) -> subprocess.CompletedProcess:
        """ansible-playbook against this molecule host."""
        return run_playbook(self.inventory(), playbook, "--limit", self.host.backend.get_hostname(), *extra)

    def last_started(self, unit: str) -> float | None:
        """When systemd last logged the unit started (seconds since the epoch)."""
        starts = started_at(self.host, unit)
        return starts[-1] if starts else None

    def written(self, path: str) -> float:
        """When the file was last written (seconds since the epoch)."""
        return written_at(self.host, path)

    def play_report(self, playbook: str, *extra: str) -> tuple[subprocess.CompletedProcess, list[tuple[str, dict]]]:
        """ansible-playbook against this molecule host, read through the JSON
        callback: the run, and each task that ran for the host, in order, as
        (role : task name, its result), the roles named without the
        collection's prefix; nothing when the run failed."""
        name = self.host.backend.get_hostname()
        result = run_playbook(self.inventory(), playbook, "--limit", name, *extra,
                              ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
        if result.returncode:
            return result, []
        report = json.loads(result.stdout)
        return result, [(task["task"]["name"].removeprefix("jobqueue.gearman."), task["hosts"][name])
                        for play in report["plays"] for task in play["tasks"] if name in task["hosts"]]

    @contextlib.contextmanager
    def play_started(self, playbook: str, *extra: str, timeout: int = 600):
        """ansible-playbook against this molecule host, started: its output
        (stderr included) is read line by line while it runs. Killed when
        the block ends, or after timeout seconds, if it still runs."""
        play = subprocess.Popen(
            playbook_command(self.inventory(), playbook, "--limit", self.host.backend.get_hostname(), *extra),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=playbook_env(),
        )
        def stop() -> None:
            play.send_signal(signal.SIGINT)
            time.sleep(15)
            play.kill()

        deadline = threading.Timer(timeout, stop)
        deadline.daemon = True
        deadline.start()
        try:
            yield play
        finally:
            deadline.cancel()
            if play.poll() is None:
                # As Ctrl-C: ansible stops its workers too.
                play.send_signal(signal.SIGINT)
                try:
                    play.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    play.kill()
            play.wait()

    @staticmethod
    def read_until(play: subprocess.Popen, *needles: str) -> str:
        """A started play's output up to the first line holding every needle
        (or to its end, when none does)."""
        said = []
        for line in play.stdout:
            said.append(line)
            if all(needle in line for needle in needles):
                break
        return "".join(said)

    @staticmethod
    def inventory() -> Path:
        inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
        if not inventory:
            pytest.fail("not run by molecule: no inventory to play against")
        return Path(inventory).parent


@pytest.fixture
def gearman(host) -> Gearman:
    return Gearman(host)


@pytest.fixture
def password(host) -> str:
    """The queue password the scenario's inventory gives this host."""
    return host.ansible.get_variables()["gearman_mysql_password"]


def pytest_configure(config):
    config.addinivalue_line("markers", "platforms(*names): run on these molecule platforms only")


def pytest_collection_modifyitems(config, items):
    """A test marked platforms(...) runs on those platforms only, when the
    run names its platform (GEARMAN_TEST_PLATFORM, which make test sets both
    for the run and for its count of the tests it expects); run by hand,
    every test runs. For the longest tests, whose subject does not differ
    between platforms: the README's Tests section names them."""
    platform = os.environ.get("GEARMAN_TEST_PLATFORM")
    if not platform:
        return
    known = {p["name"] for p in yaml.safe_load((PROJECT / ".config" / "molecule" / "config.yml").read_text())["platforms"]}
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("platforms")
        if marker and not set(marker.args) <= known:
            raise pytest.UsageError(f"{item.nodeid}: platforms{marker.args} names no platform of .config/molecule/config.yml")
        (dropped if marker and platform not in marker.args else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def workers_restored(gearman):
    """Whatever a test stops, gearmand, MariaDB and every worker run again afterwards."""
    yield
    gearman.host.run("systemctl start gearman-job-server mariadb")
    gearman.systemctl("start", *ALL_WORKERS, check=False)


# --- the cluster scenario: five hosts over SSH -----------------------------
CLUSTER_INVENTORY = PROJECT / "inventories" / "cluster" / "hosts.yml"
SSH_KEY = PROJECT / ".cache" / "ssh" / "id_ed25519"


def cluster_print(name: str, submitted: int, done: collections.Counter, expected: set) -> None:
    lost = expected - set(done)
    duplicated = sum(done.values()) - len(done)
    print(f"\nCLUSTER {name}: submitted {submitted}, done {len(set(done) & expected)}, "
          f"lost {len(lost)}, duplicated {duplicated}")
    assert not lost, f"lost: {sorted(lost)[:10]}"
    assert set(done) <= expected


class Cluster:
    """db1, gm1, gm2, wk1 and web1 of inventories/cluster, each reached over
    SSH as the inventory's user with sudo, as the plays reach them. Where
    each job server is reached and where its queue lives come from the
    roles' own answer (playbooks/topology.yml), not from the inventory."""

    def __init__(self, folder: Path):
        inventory = yaml.safe_load(CLUSTER_INVENTORY.read_text())["all"]
        user = inventory["vars"]["ansible_user"]
        self.network = inventory["children"]["gearman_lab"]["vars"]["lab_network"]
        # A host listed in several groups (web1: clients and monitoring) has
        # the settings of every listing.
        self.vars = collections.defaultdict(dict)
        for group in inventory["children"].values():
            for name, hvars in (group or {}).get("hosts", {}).items():
                self.vars[name].update(hvars or {})
        self.hosts = {
            name: testinfra.get_host(
                f"ssh://{user}@{hvars['ansible_host']}", sudo=True, ssh_identity_file=str(SSH_KEY),
                ssh_extra_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            )
            for name, hvars in self.vars.items()
        }
        found = self.play("playbooks/topology.yml", "-e", f"topology_file={folder / 'topology.json'}")
        assert found.returncode == 0, found.stdout[-3000:] + found.stderr[-2000:]
        self.topology = {entry["name"]: entry for entry in json.loads((folder / "topology.json").read_text())}
        self.servers = list(self.topology)

    def __getitem__(self, name: str):
        return self.hosts[name]

    # --- job servers ------------------------------------------------------
    def address(self, server: str) -> str:
        """Where clients and workers on other hosts reach the server."""
        return self.topology[server]["address"]

    def port(self, server: str) -> int:
        return self.topology[server]["port"]

    def table(self, server: str) -> str:
        """The server's queue table, database included."""
        return f"{self.topology[server]['db']}.{self.topology[server]['table']}"

    def status(self, server: str) -> dict[str, tuple[int, int, int]]:
        out = self[server].check_output("gearadmin --status -h %s -p %s", self.address(server), str(self.port(server)))
        return {f[0]: tuple(int(n) for n in f[1:]) for f in (line.split("\t") for line in out.splitlines())
                if len(f) == 4}

    def accepting(self, server: str) -> bool:
        return self[server].run("gearadmin --getpid -h %s -p %s", self.address(server), str(self.port(server))).rc == 0

    def unit(self, name: str, unit: str, *properties: str) -> dict[str, str]:
        return Gearman(self[name]).unit(unit, *properties)

    @contextlib.contextmanager
    def cut_off(self, name: str):
        """The host's link to the lab network pulled out, and put back (at
        its own address) afterwards: its peers hear nothing from it, not
        even a reset."""
        subprocess.run(["docker", "network", "disconnect", self.network, name], check=True, capture_output=True)
        try:
            yield
        finally:
            subprocess.run(["docker", "network", "connect", "--ip", self.vars[name]["ansible_host"], self.network, name],
                           check=True, capture_output=True)
            # Back only once it answers over its link again (a failure of the
            # block itself is what the test reports, if there was one).
            back = wait_until(lambda: self.booted(name), timeout=60, step=2)
        assert back, f"{name} unreachable after its link came back"

    def booted(self, name: str) -> bool:
        """The host answers over SSH and systemd has finished starting it."""
        try:
            state = self[name].run("systemctl is-system-running --wait").stdout.strip()
        except RuntimeError:  # ssh itself failed: the host is not up yet
            return False
        return state in ("running", "degraded")

    # --- the queue tables on db1 -----------------------------------------
    def rows(self, server: str | None = None, run: str | None = None) -> int:
        """Rows in one server's table (default: both), of one run (default: all)."""
        where = f" WHERE data LIKE '%{run}%'" if run else ""
        total = 0
        for name in [server] if server else self.servers:
            total += int(self[self.topology[name]["db_host"]].check_output(
                "mysql -N -B -e %s", f"SELECT COUNT(*) FROM {self.table(name)}{where}"))
        return total

    # --- clients on web1, workers on wk1 ---------------------------------
    def submit(self, language: str, count: int, run: str, *servers: str, check: bool = True):
        """COUNT sendEmail and COUNT resizeImage jobs from web1, through the
        given servers only (default: web1's own list, both)."""
        web = self["web1"]
        options = []
        if servers:
            listing = f"/tmp/servers-{'-'.join(servers)}"
            web.check_output("printf '%s\\n' > %s", "\n".join(f"{self.address(s)}:{self.port(s)}" for s in servers), listing)
            options = ["--servers", listing]
        result = web.run(
            f"{CLIENTS[language]} --count %s --email %s --image %s" + " %s" * len(options),
            str(count), f"{run}@example.com", f"/tmp/{run}.png", *options,
        )
        if check:
            assert result.rc == 0, result.stderr
            assert len(re.findall(r"queued: (\S+)", result.stdout)) == 2 * count, result.stdout
        return result

    def workers(self, action: str) -> None:
        self["wk1"].check_output("systemctl " + action + " %s %s %s", *ALL_WORKERS)

    def now(self) -> str:
        since = self["wk1"].check_output("date '+%Y-%m-%d %H:%M:%S'").strip()
        time.sleep(1)
        return since

    def done(self, since: str, run: str) -> list[tuple[str, dict]]:
        return jobs_done(self["wk1"].check_output(
            "journalctl --no-pager -o cat -u %s --since %s", "gearman-worker-*@*.service", since), run)

    def drained(self, name: str, since: str, runs: dict[str, int]) -> None:
        """Wait until the runs' rows are gone and their jobs logged done, then
        print and check the counts: runs maps each run to its jobs per
        function and language submitted."""
        assert wait_until(lambda: all(self.rows(run=run) == 0 for run in runs), timeout=180, step=2), (
            {run: self.rows(run=run) for run in runs})
        total = sum(4 * n for n in runs.values())
        assert wait_until(lambda: sum(len(self.done(since, run)) for run in runs) >= total, timeout=30)
        done = collections.Counter((run, f, p["lang"], p["seq"]) for run in runs for f, p in self.done(since, run))
        expected = {(run, f, lang, seq) for run, n in runs.items() for f in FUNCTIONS for lang in ("php", "python")
                    for seq in range(1, n + 1)}
        cluster_print(name, total, done, expected)

    def play(self, playbook: str, *extra: str) -> subprocess.CompletedProcess:
        return run_playbook(CLUSTER_INVENTORY.parent, playbook, *extra, timeout=1200,
                            ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    return Cluster(tmp_path_factory.mktemp("cluster"))


@pytest.fixture
def cluster_restored(cluster):
    """Whatever a test stops, every service of the cluster runs again afterwards."""
    yield
    for server in cluster.servers:
        cluster[server].run("systemctl start gearman-job-server")
    cluster["db1"].run("systemctl start mariadb")
    cluster["wk1"].run("systemctl start %s %s %s", *ALL_WORKERS)
