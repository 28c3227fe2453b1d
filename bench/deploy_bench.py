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
nothing to do, and 20 `debug` tasks, the controller's own cost of a task. It appends a Markdown
section to FILE (make bench: docs/benchmarks.md, which bench/queue_bench.py
has just written) and asserts nothing else.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Actions the controller does by itself: no module runs on the host.
LOCAL_ACTIONS = {"set_fact", "assert", "debug", "fail", "include_role", "include_tasks", "import_role",
                 "import_tasks", "meta", "include_vars", "validate_argument_spec", "group_by", "add_host"}
# Actions that run two modules when nothing changes (stat, then file).
TWO_RUNS = {"template", "copy"}
PROBES = 20
# The one beside this Python (the project's venv), else the one on PATH.
_BESIDE = pathlib.Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_BESIDE) if _BESIDE.exists() else shutil.which("ansible-playbook") or "ansible-playbook"


def playbook(inventory: str, path: pathlib.Path | str, *extra: str) -> tuple[float, dict]:
    env = {**{k: v for k, v in os.environ.items() if k != "ANSIBLE_CALLBACKS_ENABLED"},
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
    text = "\n".join(lines)
    print(text)
    if args.report:
        with open(args.report, "a") as out:
            out.write(text)


if __name__ == "__main__":
    main()
