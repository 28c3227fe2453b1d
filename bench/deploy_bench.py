"""What a re-run of site.yml costs on a converged inventory, and where the
time goes: run from the controller, after make lab, by make bench.

    .venv/bin/python bench/deploy_bench.py -i INVENTORY [--runs 3] [--report FILE]

It runs site.yml RUNS times (each must report changed=0 on every host) and
reads, from Ansible's JSON callback, every task's duration and how many
module runs it cost the busiest host (a loop item is one run; a template or
copy with nothing to change, two: a checksum, then the file's attributes; a
delegated task counts for the host it ran for);
then it times 20 `command: /bin/true` tasks on the inventory's first job
server, the cost of one module run over this connection when the module has
nothing to do, and 20 `debug` tasks, the controller's own cost of a task.

With the all-in-one lab, it then times a first converge against a bare
install, side by side: two fresh hosts from the lab host's image and
container spec (playbooks/lab.yml), both given the controller's CA and
their package lists (neither timing includes that). On one, `apt-get
install` of every package the converged lab host has and a fresh one lacks,
and `pip install` of the lab's pinned requirements into a virtual
environment; then it is stopped, and on the other, site.yml runs with the
lab's settings. The two hosts are removed afterwards.

It appends a Markdown section to FILE (make bench: docs/benchmarks.md,
which bench/queue_bench.py has just written) and asserts nothing else.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Actions the controller does by itself: no module runs on the host.
LOCAL_ACTIONS = {"set_fact", "assert", "debug", "fail", "include_role", "include_tasks", "import_role",
                 "import_tasks", "meta", "include_vars", "validate_argument_spec", "group_by", "add_host"}
# Actions that run two modules when nothing changes (stat, then file).
TWO_RUNS = {"template", "copy"}
PROBES = 20
# The first converge's two fresh hosts (bare install, converge).
BARE, CONVERGE = "gearman-bench-bare", "gearman-bench-converge"
# The one beside this Python (the project's venv), else the one on PATH.
_BESIDE = pathlib.Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_BESIDE) if _BESIDE.exists() else shutil.which("ansible-playbook") or "ansible-playbook"


def playbook(inventory: str, path: pathlib.Path | str, *extra: str,
             env: dict[str, str] | None = None) -> tuple[float, dict]:
    """Seconds and the JSON report of one playbook run (ENV added to this
    process's environment); a failed run ends the bench with its output."""
    env = {**{k: v for k, v in os.environ.items() if k != "ANSIBLE_CALLBACKS_ENABLED"}, **(env or {}),
           "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    started = time.monotonic()
    done = subprocess.run([ANSIBLE_PLAYBOOK, "-i", inventory, str(path), *extra],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed = time.monotonic() - started
    if done.returncode:
        raise SystemExit(f"{path} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed, json.loads(done.stdout)


def seconds(duration: dict) -> float:
    """A task's duration (0 for one the callback never saw end, such as an include)."""
    if "end" not in duration:
        return 0.0
    parse = datetime.datetime.fromisoformat
    return (parse(duration["end"].replace("Z", "+00:00")) - parse(duration["start"].replace("Z", "+00:00"))
            ).total_seconds()


def module_runs(report: dict) -> tuple[int, float, int, float]:
    """(module runs on the busiest host, the time of the tasks that ran
    modules, tasks the controller did alone, their time)."""
    runs: dict[str, int] = {}
    remote_time = local = local_time = 0
    for play in report["plays"]:
        for task in play["tasks"]:
            spent = seconds(task["task"]["duration"])
            executed = {host: r for host, r in task["hosts"].items() if not r.get("skipped")}
            if not executed:
                continue
            action = next(iter(executed.values())).get("action", "").rsplit(".", 1)[-1]
            if action in LOCAL_ACTIONS:
                local += 1
                local_time += spent
                continue
            for host, result in executed.items():
                loop = result.get("results")
                if isinstance(loop, list) and loop and isinstance(loop[0], dict) and "ansible_loop_var" in loop[0]:
                    items = [item for item in loop if not item.get("skipped")]
                else:
                    items = [result]
                runs[host] = runs.get(host, 0) + len(items) * (2 if action in TWO_RUNS else 1)
            remote_time += spent
    return max(runs.values(), default=0), remote_time, local, local_time


def probe(inventory: str, host: str, task: str) -> float:
    """Seconds per task for PROBES copies of TASK on HOST."""
    tasks = "".join(f"    - name: probe {n}\n      {task}\n" for n in range(PROBES))
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as play:
        play.write(f"- name: Probe\n  hosts: {host}\n  gather_facts: false\n  become: true\n  tasks:\n{tasks}")
        play.flush()
        _, report = playbook(inventory, play.name)
    return statistics.median(seconds(t["task"]["duration"]) for t in report["plays"][0]["tasks"])


def docker(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"docker {' '.join(args[:3])} failed: {done.stderr[-2000:]}")
    return done.stdout


def installed(host: str) -> set[str]:
    """The packages dpkg has fully installed on a container."""
    lines = docker("exec", host, "dpkg-query", "--show", "--showformat=${db:Status-Status} ${Package}\n")
    return {line.split()[1] for line in lines.splitlines() if line.startswith("installed ")}


def first_converge(inventory: str) -> list[str]:
    """The first converge of a fresh host against a bare install of what it
    installs: the report's lines (or why it was not measured)."""
    inventory_list = [str(pathlib.Path(ANSIBLE_PLAYBOOK).with_name("ansible-inventory")), "-i", inventory, "--list"]
    listed = json.loads(subprocess.run(inventory_list, capture_output=True, text=True, check=True, cwd=ROOT).stdout)
    lab = listed.get("gearman_lab", {}).get("hosts", [])
    if len(lab) != 1:
        return ["", "### A first converge against a bare install", "",
                "Not measured: it needs the all-in-one lab (one host), not this inventory.", ""]
    source = lab[0]
    image = docker("inspect", "--format", "{{.Config.Image}}", source).strip()
    venv = yaml.safe_load((ROOT / "roles/gearman_python/defaults/main.yml").read_text())["gearman_python_venv"]
    requirements = docker("exec", source, "cat", f"{venv}/requirements.txt")
    lab_dir = pathlib.Path(inventory).resolve()
    lab_dir = lab_dir if lab_dir.is_dir() else lab_dir.parent
    with tempfile.TemporaryDirectory() as hosts_dir, tempfile.TemporaryDirectory() as site_dir:
        # The two hosts, for lab.yml (made and removed) and the CA play.
        hosts = pathlib.Path(hosts_dir, "hosts.yml")
        hosts.write_text(yaml.safe_dump({"all": {"children": {"gearman_lab": {
            "hosts": {BARE: None, CONVERGE: None}, "vars": {"ansible_connection": "community.docker.docker"}}}}}))
        # The converge host in the lab's place, with the lab's settings.
        lab_hosts = yaml.safe_load((lab_dir / "hosts.yml").read_text())
        pathlib.Path(site_dir, "hosts.yml").write_text(yaml.safe_dump(renamed(lab_hosts, source, CONVERGE)))
        pathlib.Path(site_dir, "group_vars").symlink_to(lab_dir / "group_vars")
        lab_play = (str(hosts), ROOT / "playbooks/lab.yml")
        lab_env = {"LAB_DISTRO": image.rsplit(":", 1)[1]}
        try:
            # Fresh: containers an interrupted run left go first.
            playbook(*lab_play, "-e", "lab_state=absent", env=lab_env)
            playbook(*lab_play, env=lab_env)
            playbook(str(hosts), ROOT / "playbooks/controller_ca.yml")
            # Package lists fetched on both, outside the timings.
            for host in (BARE, CONVERGE):
                docker("exec", host, "apt-get", "update", "-q")
            wanted = sorted(installed(source) - installed(BARE))
            docker("exec", "-i", BARE, "tee", "/tmp/requirements.txt", stdin=requirements)
            started = time.monotonic()
            docker("exec", "-e", "DEBIAN_FRONTEND=noninteractive", BARE, "sh", "-ec",
                   f"apt-get install -y -q --no-install-recommends {' '.join(wanted)} >/dev/null\n"
                   f"python3 -m venv {venv}\n{venv}/bin/pip install -q -r /tmp/requirements.txt")
            bare = time.monotonic() - started
            print(f"bare install: {bare:.1f} s ({len(wanted)} packages and the pip requirements)", flush=True)
            # Its services (MariaDB, gearmand, ...) started with the
            # packages: stopped, so that they take nothing from the converge.
            bare_installed = installed(BARE)
            docker("stop", BARE)
            converge, report = playbook(site_dir, "site.yml")
            print(f"first converge: {converge:.1f} s", flush=True)
            differ = bare_installed ^ installed(CONVERGE)
        finally:
            try:
                playbook(*lab_play, "-e", "lab_state=absent", env=lab_env)
            except SystemExit as error:
                print(f"WARNING: the bench's hosts may be left ({BARE}, {CONVERGE}): {error}", file=sys.stderr)
    changed = sum(stats["changed"] for stats in report["stats"].values())
    return [
        "",
        "### A first converge against a bare install of the same packages",
        "",
        f"Two fresh hosts from `{image}`, side by side in one run, their package lists fetched first "
        f"(not timed). Bare: `apt-get install --no-install-recommends` of the {len(wanted)} packages the "
        f"converged lab host has and a fresh one lacks, then `python3 -m venv` and `pip install -r` of its "
        f"pinned requirements. Converge: `site.yml` with the lab's settings ({changed} changes), which also "
        "writes the settings, makes the lab certificates, creates the database, table and logins, and "
        "starts and checks the services.",
        "",
        "| what | measured |",
        "| --- | --- |",
        f"| bare install of the same packages (apt and pip) | {bare:.1f} s |",
        f"| first converge of site.yml | {converge:.1f} s |",
        f"| converge / bare install | {converge / bare:.2f}x |",
        f"| packages that differ between the two hosts afterwards | {len(differ)}"
        + (f" ({', '.join(sorted(differ)[:10])})" if differ else "") + " |",
        "",
    ]


def renamed(node, old: str, new: str):
    """An inventory with host OLD named NEW wherever it is listed."""
    if isinstance(node, dict):
        return {(new if key == old else key): renamed(value, old, new) for key, value in node.items()}
    return node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--inventory", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--report", help="append the Markdown section to this file")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs takes 1 or more")

    reruns, last = [], None
    for _ in range(args.runs):
        elapsed, last = playbook(args.inventory, "site.yml")
        changed = {host: stats["changed"] for host, stats in last["stats"].items() if stats["changed"]}
        if changed:
            raise SystemExit(f"site.yml changed something on a converged inventory: {changed}")
        reruns.append(elapsed)
        print(f"re-run: {elapsed:.1f} s, changed=0", flush=True)
    runs, remote_time, local, local_time = module_runs(last)
    hosts = sorted(last["stats"])
    first = "gearman_servers[0]"
    per_module = probe(args.inventory, first, "ansible.builtin.command: /bin/true\n      changed_when: false")
    per_task = probe(args.inventory, first, "ansible.builtin.debug: {msg: probe}")
    print(f"module run: {per_module:.3f} s; controller-only task: {per_task:.3f} s", flush=True)

    lines = [
        "",
        f"### A re-run of site.yml: {len(hosts)} host(s), nothing to change",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, with ansible-core "
        f"{ansible_core_version()} and the project's `ansible.cfg`. "
        f"`ansible-playbook -i {args.inventory} site.yml` on the converged inventory, {args.runs} runs "
        f"(each changed=0), timed from the controller; then the time of one task, from {PROBES} alike "
        "on the first job server.",
        "",
        "| what | measured |",
        "| --- | --- |",
        f"| re-run, whole playbook | {statistics.median(reruns):.1f} s "
        f"({min(reruns):.1f}-{max(reruns):.1f}) |",
        f"| module runs on the busiest host (each loop item; two for a template or copy) | {runs}, "
        f"in tasks taking {remote_time:.1f} s |",
        f"| tasks the controller does alone (facts set, checks) | {local}, {local_time:.1f} s |",
        f"| one module run with nothing to do (`command: /bin/true`) | {per_module:.3f} s |",
        f"| one controller-only task (`debug`) | {per_task:.3f} s |",
        f"| re-run floor at that cost: module runs x one module run | {runs * per_module:.1f} s |",
        "",
    ]
    # Written before the first converge, which takes minutes and can fail.
    report(lines, args.report)
    report(first_converge(args.inventory), args.report)


def ansible_core_version() -> str:
    """The version of the ansible-core the bench runs (that of ANSIBLE_PLAYBOOK)."""
    done = subprocess.run([ANSIBLE_PLAYBOOK, "--version"], capture_output=True, text=True)
    found = re.search(r"core ([0-9][^\]\s]*)", done.stdout)
    return found.group(1) if found else "(unknown)"


def report(lines: list[str], path: str | None) -> None:
    text = "\n".join(lines)
    print(text, flush=True)
    if path:
        with open(path, "a") as out:
            out.write(text)


if __name__ == "__main__":
    main()
