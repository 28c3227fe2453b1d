#!/usr/bin/env python3
"""Run every check of the project and end with one line: N passed, N failed.

Stages: yamllint, ansible-lint, pyflakes and the unit tests, and beside them the base
images and the cluster's lane; then `molecule test` for each platform of
each scenario, several at a time. The platforms are those of
.config/molecule/config.yml; SCENARIO_PLATFORMS below names fewer for some
scenarios (the README's Tests section says why).

Whatever was asked for and not tested is a failure, with its reason in the
summary: a scenario or platform name that matches nothing, a base image that
cannot be built, a plan with no molecule run at all, a pytest run that
collected no test, and every testinfra test that did not run because
molecule stopped before (or during) verify. The one exception is asked for
by name: ALLOW_UNREACHABLE lists distributions whose platforms may be skipped
when their package archive does not answer (the summary still shows them).

Environment:
    SCENARIOS          scenarios to run (default: every one under molecule/)
    PLATFORMS          platform names to keep (default: all of each scenario)
    MOLECULE_JOBS      platform runs at once (default: 4)
    ALLOW_UNREACHABLE  distributions that may be skipped when their archive
                       does not answer, e.g. "ubuntu-22.04 ubuntu-24.04"
                       (default: none; CI sets none)
    SKIP_MOLECULE=1    skip the molecule stage (shown as skipped)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = [sys.executable, str(ROOT / "lab" / "base_image.py")]
SHARED_CONFIG = ROOT / ".config" / "molecule" / "config.yml"
LOG_DIR = Path(os.environ.get("TEST_LOG_DIR", ROOT / ".cache" / "test-logs"))
# Lines the tests print for the record (fault and cluster counts).
FIGURE = re.compile(r"^(FAULT|CLUSTER) ")
# Scenarios that run on some platforms only: one of each gearmand release
# (1.1.20: Debian 12, Ubuntu 22.04; 1.1.21: Debian 13, Ubuntu 24.04).
SCENARIO_PLATFORMS = {
    "faults": ["gearman-debian-12", "gearman-ubuntu-24.04"],
    "hardening": ["gearman-ubuntu-22.04", "gearman-debian-13"],
    "cluster": ["gearman-debian-12", "gearman-ubuntu-24.04"],
}
# Scenarios that bring their own hosts (several containers at fixed names and
# addresses, made by playbooks/lab.yml): run once per platform's distribution,
# through LAB_DISTRO, and one at a time.
OWN_HOSTS = {"cluster"}


@dataclasses.dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    skips: list[str] = dataclasses.field(default_factory=list)
    figures: list[str] = dataclasses.field(default_factory=list)
    times: list[str] = dataclasses.field(default_factory=list)

    def add(self, other: Tally) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def fail(self, reason: str, count: int = 1) -> Tally:
        self.failed += count
        self.failures.append(reason)
        return self

    def skip(self, reason: str) -> Tally:
        self.skipped += 1
        self.skips.append(reason)
        return self


@dataclasses.dataclass
class Run:
    scenario: str
    platform: str
    distro: str

    @property
    def own_hosts(self) -> bool:
        return self.scenario in OWN_HOSTS


def banner(text: str) -> None:
    print(f"\n==== {text}", flush=True)


def words(variable: str) -> list[str]:
    return os.environ.get(variable, "").split()


def python_files() -> list[str]:
    """The project's Python files, as git knows them."""
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    return listed.stdout.split()


def run_check(name: str, cmd: list[str]) -> Tally:
    """A check that passes or fails as a whole."""
    banner(name)
    started = time.monotonic()
    try:
        result = subprocess.run(cmd, cwd=ROOT)
    except OSError as error:
        print(f"---- {name}: FAILED ({error})", flush=True)
        return Tally().fail(f"{name}: could not start: {error}")
    ok = result.returncode == 0
    print(f"---- {name}: {'ok' if ok else 'FAILED'} ({time.monotonic() - started:.0f} s)", flush=True)
    return Tally(passed=1) if ok else Tally().fail(f"{name}: exited {result.returncode}")


def junit_tally(name: str, xml_path: Path) -> tuple[Tally, int]:
    """Count a pytest run from its JUnit report; also return how many ran."""
    tally, ran = Tally(), 0
    if not xml_path.exists():
        return tally, 0
    try:
        cases = list(ET.parse(xml_path).getroot().iter("testcase"))
    except ET.ParseError as error:
        return tally.fail(f"{name}: its test report {xml_path} is unreadable ({error})"), 0
    for case in cases:
        ran += 1
        label = f"{name}: {case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            tally.fail(label)
        elif case.find("skipped") is not None:
            # A test that skipped tested nothing: not asked for, so a failure.
            tally.fail(f"{label} skipped: {(case.find('skipped').get('message') or '').strip()[:200]}")
        else:
            tally.passed += 1
    return tally, ran


def run_unit() -> Tally:
    banner("unit tests")
    xml_path = LOG_DIR / "unit.xml"
    xml_path.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/unit", f"--junitxml={xml_path}", "-q"],
        cwd=ROOT,
    )
    tally, ran = junit_tally("unit", xml_path)
    if ran == 0:
        tally.fail(f"unit: no test ran (pytest exited {result.returncode})")
    elif result.returncode != 0 and tally.failed == 0:
        tally.fail(f"unit: pytest exited {result.returncode}")
    return tally


def scenario_tests(scenario: str, platform: str) -> int:
    """How many testinfra tests the scenario has on this platform (what
    verify must run there: tests marked for other platforms aside, see
    molecule/conftest.py)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         str(ROOT / "molecule" / scenario / "tests")],
        cwd=ROOT / "molecule" / scenario,
        capture_output=True,
        text=True,
        env={**os.environ, "GEARMAN_TEST_PLATFORM": platform},
    )
    # "11 tests collected", or "9/11 tests collected (2 deselected)".
    found = re.search(r"^(\d+)(?:/\d+)? tests? collected", result.stdout, re.MULTILINE)
    return int(found.group(1)) if found else 0


def plan() -> tuple[list[Run], Tally]:
    """The molecule runs asked for, and a failure for every name that matches nothing."""
    tally = Tally()
    found = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    wanted = words("SCENARIOS") or found
    for name in sorted(set(wanted) - set(found)):
        tally.fail(f"SCENARIOS: no scenario named {name!r} (there are: {', '.join(found)})")
    platforms = {p["name"]: p["image"].rsplit(":", 1)[1]
                 for p in yaml.safe_load(SHARED_CONFIG.read_text())["platforms"]}
    for scenario, names in SCENARIO_PLATFORMS.items():
        for name in sorted(set(names) - set(platforms)):
            tally.fail(f"SCENARIO_PLATFORMS: {scenario} names {name!r}, which is no platform "
                       f"of {SHARED_CONFIG.relative_to(ROOT)}")
    runs = [
        Run(scenario, name, distro)
        for scenario in found if scenario in wanted
        for name, distro in platforms.items() if name in SCENARIO_PLATFORMS.get(scenario, platforms)
    ]
    keep = words("PLATFORMS")
    for name in sorted(set(keep) - {r.platform for r in runs}):
        tally.fail(f"PLATFORMS: {name!r} is not a platform of the scenarios asked for "
                   f"(there are: {', '.join(sorted({r.platform for r in runs}))})")
    if keep:
        runs = [r for r in runs if r.platform in keep]
        for scenario in [s for s in found if s in wanted]:
            if not any(r.scenario == scenario for r in runs):
                tally.fail(f"molecule {scenario}: runs on none of PLATFORMS ({' '.join(keep)})")
    return runs, tally


def ensure_image(distro: str) -> tuple[str, bool] | None:
    """Build a missing base image; None when it is there, else (reason, may_skip).

    Runs beside the linters: it prints nothing, its output goes to a log file."""

    def quiet(*args: str) -> int:
        return subprocess.run([*BASE_IMAGE, *args], capture_output=True).returncode

    # There, and made by the current recipe (else it is rebuilt).
    if quiet("--present", distro) == 0:
        return None
    if quiet("--probe", distro) != 0:
        return ("its package archive does not answer, so no base image can be built",
                distro in words("ALLOW_UNREACHABLE"))
    log = LOG_DIR / f"image-{distro}.log"
    with open(log, "w") as out:
        built = subprocess.run([*BASE_IMAGE, distro], stdout=out, stderr=subprocess.STDOUT)
    if built.returncode != 0:
        return (f"building the base image failed (log: {log})", False)
    return None


def run_molecule(run: Run, expected: int) -> tuple[Tally, float, str]:
    """One molecule test run: its tally, time, and what to print about it."""
    name = f"molecule {run.scenario}/{run.platform}"
    log = LOG_DIR / f"molecule-{run.scenario}-{run.platform}.log"
    xml_path = LOG_DIR / f"molecule-{run.scenario}-{run.platform}.xml"
    xml_path.unlink(missing_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"molecule-{run.platform}-") as ephemeral:
        env = {
            **os.environ,
            "MOLECULE_EPHEMERAL_DIRECTORY": ephemeral,
            "MOLECULE_JUNIT_XML": str(xml_path),
            # Tests marked for some platforms only run there (molecule/conftest.py).
            "GEARMAN_TEST_PLATFORM": run.platform,
            "PY_COLORS": "0",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
        }
        with open(log, "w") as out:
            result = subprocess.run(
                ["molecule", "test", "-s", run.scenario, *([] if run.own_hosts else ["-p", run.platform])],
                cwd=ROOT,
                env={**env, "LAB_DISTRO": run.distro} if run.own_hosts else env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    elapsed = time.monotonic() - started
    tally, ran = junit_tally(name, xml_path)
    if ran < expected:
        tally.fail(f"{name}: {expected - ran} of {expected} testinfra tests never ran "
                   f"(molecule stopped before verify ended; log: {log})", count=expected - ran)
    # The scenario's own steps (check, converge, idempotence, ...) count as one check.
    if result.returncode == 0:
        tally.passed += 1
    else:
        tally.fail(f"{name}: molecule test exited {result.returncode} (log: {log})")
    text = log.read_text(errors="replace")
    tally.figures += [f"{run.platform}: {line}" for line in text.splitlines() if FIGURE.match(line)]
    tally.times.append(f"{name}: {elapsed:.0f} s")
    status = "ok" if result.returncode == 0 else "FAILED"
    report = [f"\n---- {name}: {status} in {elapsed:.0f} s, {tally.passed} passed, {tally.failed} failed (log: {log})"]
    if result.returncode != 0:
        # Show where it broke: the failing tasks and the end of the log.
        interesting = [line for line in text.splitlines() if re.search(r"fatal:|FAILED|ERROR|Error|assert", line)]
        report += interesting[-40:] + ["...", text[-6000:]]
    return tally, elapsed, "\n".join(report)


def run_all_molecule(runs: list[Run], tally: Tally, started: float,
                     checks_done: threading.Event, cancelled: threading.Event) -> Tally:
    """The molecule stage, run beside the linters and the unit tests.

    The base images are built first (mostly downloads), and each run waits
    for its own. The runs with their own hosts (the cluster) are the
    longest chain, so their lane starts at once; the other runs wait for the
    linters and unit tests to end. Nothing of this stage is printed before they end,
    and each run's report is printed whole, one at a time. When the checks
    were cancelled (Ctrl-C), no further run starts."""
    if not runs:
        checks_done.wait()
        return tally.fail("molecule: nothing to run (check SCENARIOS and PLATFORMS)")
    distros = sorted({r.distro for r in runs})
    images_started = time.monotonic()
    builds = concurrent.futures.ThreadPoolExecutor(max_workers=len(distros))
    def build(distro: str) -> tuple[tuple[str, bool] | None, float]:
        try:
            missing = ensure_image(distro)
        except Exception as error:  # noqa: BLE001 - a failure of this image, reported as such
            missing = (f"building the base image failed: {error!r}", False)
        return missing, time.monotonic() - images_started

    images = {distro: builds.submit(build, distro) for distro in distros}
    builds.shutdown(wait=False)
    expected = {(r.scenario, r.platform): scenario_tests(r.scenario, r.platform) for r in runs}
    for (scenario, platform), count in sorted(expected.items()):
        if count == 0:
            tally.fail(f"molecule {scenario}/{platform}: no testinfra test collected from molecule/{scenario}/tests")
    jobs = max(1, int(os.environ.get("MOLECULE_JOBS", "4")))
    # The longest scenarios first, so that the short ones fill in at the end.
    todo = sorted(runs, key=lambda r: ["cluster", "faults", "hardening"].index(r.scenario)
                  if r.scenario in ("faults", "cluster", "hardening") else 9)

    # Per scenario: the time of each platform run, and when its last one ended.
    spent: dict[str, list[float]] = {}
    ended: dict[str, float] = {}
    announced = threading.Event()
    printing = threading.Lock()

    # A platform's container is named after it, whatever the scenario: two
    # scenarios never use one platform at the same time.
    platform_locks = {r.platform: threading.Lock() for r in todo}

    def one(run: Run) -> Tally:
        name = f"molecule {run.scenario}/{run.platform}"
        # Each run waits for its own distribution's image only.
        missing, _ = images[run.distro].result()
        if missing:
            reason, may_skip = missing
            return (Tally().skip(f"{name}: {reason} (allowed by ALLOW_UNREACHABLE)") if may_skip
                    else Tally().fail(f"{name}: {reason}"))
        with contextlib.nullcontext() if run.own_hosts else platform_locks[run.platform]:
            if cancelled.is_set():
                return Tally().fail(f"{name}: not run (cancelled)")
            try:
                result, elapsed, report = run_molecule(run, expected[run.scenario, run.platform])
            except Exception as error:  # noqa: BLE001 - this run failed; the others still count
                return Tally().fail(f"{name}: the test runner broke: {error!r}")
        spent.setdefault(run.scenario, []).append(elapsed)
        ended[run.scenario] = time.monotonic() - started
        announced.wait()
        with printing:
            print(report, flush=True)
        return result

    # Runs with their own hosts go one after another in a lane of their own;
    # the others share the remaining slots.
    lane = [r for r in todo if r.own_hosts]
    rest = [r for r in todo if not r.own_hosts]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as serial, \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs - bool(lane))) as pool:
        futures = [serial.submit(one, r) for r in lane]
        checks_done.wait()
        try:
            built = {distro: image.result() for distro, image in images.items()}
            missing = {distro: gone for distro, (gone, _) in built.items() if gone}
            with printing:
                banner(f"base images: {', '.join(distros)}")
                for distro, (reason, _) in sorted(missing.items()):
                    log = LOG_DIR / f"image-{distro}.log"
                    if "failed" in reason and log.exists():
                        print(log.read_text(errors="replace")[-3000:])
                    print(f"{distro}: {reason}")
                print(f"---- base images: {f'{len(missing)} missing' if missing else 'ready'} "
                      f"after {max(took for _, took in built.values()):.0f} s", flush=True)
                banner(f"molecule: {len(todo)} platform runs, "
                       + (f"{', '.join(f'{r.scenario}/{r.platform}' for r in lane)} one after another "
                          f"(started beside the unit tests), the others {max(1, jobs - 1)} at a time"
                          if lane else f"{jobs} at a time")
                       + ": " + ", ".join(f"{r.scenario}/{r.platform}" for r in todo))
        finally:
            # Whatever happened above, the runs that ended may print.
            announced.set()
        futures += [pool.submit(one, r) for r in rest]
        for future in futures:
            tally.add(future.result())
        if all(r.distro in missing for r in todo):
            tally.fail("molecule: no platform could be run")
    for scenario, times in sorted(spent.items()):
        tally.times.insert(0, f"scenario {scenario}: {len(times)} platform runs of {min(times):.0f}-{max(times):.0f} s, "
                              f"all done {ended[scenario]:.0f} s after the start")
    return tally


def main() -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    total = Tally()
    molecule = os.environ.get("SKIP_MOLECULE") != "1"
    checks_done, cancelled = threading.Event(), threading.Event()
    interrupted = False
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as background:
        if molecule:
            stage = background.submit(run_all_molecule, *plan(), started, checks_done, cancelled)
        try:
            total.add(run_check("yamllint", ["yamllint", "-s", "."]))
            total.add(run_check("ansible-lint", ["ansible-lint", "--offline", "-q"]))
            # Python's names and imports: an undefined name in a molecule
            # test would otherwise show only when its scenario runs.
            total.add(run_check("pyflakes", ["pyflakes", *python_files()]))
            total.add(run_unit())
            checks_done.set()
            if molecule:
                total.add(stage.result())
            else:
                total.skip("molecule: SKIP_MOLECULE=1")
        except KeyboardInterrupt:
            # No further molecule run starts; the ones under way got the
            # signal too and end.
            interrupted = True
            cancelled.set()
            checks_done.set()
            total.fail("make test: interrupted (Ctrl-C)")
            if molecule:
                total.add(stage.result())
        except Exception as error:  # noqa: BLE001 - reported in the summary, never swallowed
            checks_done.set()
            total.fail(f"the test runner broke: {error!r}")
    banner(f"summary after {time.monotonic() - started:.0f} s")
    for line in total.times + sorted(total.figures):
        print(line)
    for skip in total.skips:
        print(f"SKIPPED {skip}")
    for failure in total.failures:
        print(f"FAILED {failure}")
    line = f"{total.passed} passed, {total.failed} failed"
    if total.skipped:
        line += f", {total.skipped} skipped"
    print(line, flush=True)
    return 130 if interrupted else 0 if total.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
