#!/usr/bin/env python3
"""Run every check of the project and end with one line: N passed, N failed.

Stages: yamllint, ansible-lint, the unit tests, then `molecule test` for each
platform of each scenario, several platforms at a time. A platform whose
base image cannot be built because its archive does not answer is skipped,
with the reason printed. Environment:
    SCENARIOS     scenarios to run (default: every one under molecule/)
    PLATFORMS     platform names to keep (default: all)
    MOLECULE_JOBS platforms run at once (default: 4)
    SKIP_MOLECULE=1 skips the molecule stage
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = [sys.executable, str(ROOT / "lab" / "base_image.py")]
LOG_DIR = Path(os.environ.get("TEST_LOG_DIR", ROOT / ".cache" / "test-logs"))


@dataclasses.dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    # Lines the tests print for the record, such as the fault counts.
    figures: list[str] = dataclasses.field(default_factory=list)

    def add(self, other: "Tally") -> None:
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        self.failures += other.failures
        self.figures += other.figures


def banner(text: str) -> None:
    print(f"\n==== {text}", flush=True)


def run_check(name: str, cmd: list[str]) -> Tally:
    """A check that passes or fails as a whole."""
    banner(name)
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT)
    ok = result.returncode == 0
    print(f"---- {name}: {'ok' if ok else 'FAILED'} ({time.monotonic() - started:.0f} s)", flush=True)
    return Tally(passed=int(ok), failed=int(not ok), failures=[] if ok else [name])


def junit_tally(name: str, xml_path: Path, returncode: int) -> Tally:
    """Count a pytest run from its JUnit report."""
    tally = Tally()
    if xml_path.exists():
        for case in ET.parse(xml_path).getroot().iter("testcase"):
            label = f"{name}: {case.get('classname')}::{case.get('name')}"
            if case.find("failure") is not None or case.find("error") is not None:
                tally.failed += 1
                tally.failures.append(label)
            elif case.find("skipped") is not None:
                tally.skipped += 1
            else:
                tally.passed += 1
    if returncode not in (0, 5) and tally.failed == 0:
        tally.failed += 1
        tally.failures.append(f"{name}: pytest exited {returncode}")
    return tally


def run_unit() -> Tally:
    banner("unit tests")
    xml_path = LOG_DIR / "unit.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/unit", f"--junitxml={xml_path}", "-q"],
        cwd=ROOT,
    )
    return junit_tally("unit", xml_path, result.returncode)


def scenarios() -> list[str]:
    wanted = os.environ.get("SCENARIOS", "").split()
    found = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    return [s for s in found if not wanted or s in wanted]


def platforms(scenario: str) -> list[dict]:
    config = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())
    wanted = os.environ.get("PLATFORMS", "").split()
    return [p for p in config["platforms"] if not wanted or p["name"] in wanted]


def distro_of(image: str) -> str:
    return image.rsplit(":", 1)[1]


def ensure_images(distros: set[str]) -> dict[str, str]:
    """Build missing base images; return {distro: reason} for those skipped."""
    skipped: dict[str, str] = {}

    def one(distro: str) -> tuple[str, str | None]:
        present = subprocess.run(
            ["docker", "image", "inspect", f"gearman-lab/base:{distro}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if present.returncode == 0:
            return distro, None
        if subprocess.run([*BASE_IMAGE, "--probe", distro]).returncode != 0:
            return distro, "its package archive does not answer, so no base image can be built"
        log = LOG_DIR / f"image-{distro}.log"
        with open(log, "w") as out:
            built = subprocess.run([*BASE_IMAGE, distro], stdout=out, stderr=subprocess.STDOUT)
        if built.returncode != 0:
            print(log.read_text()[-3000:])
            return distro, f"building the base image failed (log: {log})"
        return distro, None

    banner(f"base images: {', '.join(sorted(distros))}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for distro, reason in pool.map(one, sorted(distros)):
            if reason:
                skipped[distro] = reason
    return skipped


def run_molecule(scenario: str, platform: str) -> Tally:
    name = f"molecule {scenario}/{platform}"
    log = LOG_DIR / f"molecule-{scenario}-{platform}.log"
    xml_path = LOG_DIR / f"molecule-{scenario}-{platform}.xml"
    xml_path.unlink(missing_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"molecule-{platform}-") as ephemeral:
        env = {
            **os.environ,
            "MOLECULE_EPHEMERAL_DIRECTORY": ephemeral,
            "MOLECULE_JUNIT_XML": str(xml_path),
            "PY_COLORS": "0",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
        }
        with open(log, "w") as out:
            result = subprocess.run(
                ["molecule", "test", "-s", scenario, "-p", platform],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    elapsed = time.monotonic() - started
    tally = junit_tally(name, xml_path, 0)
    # The scenario's own steps (converge, idempotence, ...) count as one check.
    if result.returncode == 0:
        tally.passed += 1
    else:
        tally.failed += 1
        tally.failures.append(f"{name}: molecule test failed (log: {log})")
    text = log.read_text(errors="replace")
    tally.figures += [f"{platform}: {line}" for line in text.splitlines() if line.startswith("FAULT ")]
    status = "ok" if result.returncode == 0 else "FAILED"
    print(f"\n---- {name}: {status} in {elapsed:.0f} s, "
          f"{tally.passed} passed, {tally.failed} failed (log: {log})", flush=True)
    if result.returncode != 0:
        # Show where it broke: the failing tasks and the end of the log.
        interesting = [line for line in text.splitlines() if re.search(r"fatal:|FAILED|ERROR|Error|assert", line)]
        print("\n".join(interesting[-40:]))
        print("...\n" + text[-6000:], flush=True)
    return tally


def run_all_molecule() -> Tally:
    tally = Tally()
    jobs: list[tuple[str, str]] = []
    wanted_distros: set[str] = set()
    plan = {s: platforms(s) for s in scenarios()}
    for scenario_platforms in plan.values():
        wanted_distros |= {distro_of(p["image"]) for p in scenario_platforms}
    skipped = ensure_images(wanted_distros)
    for scenario, scenario_platforms in plan.items():
        for p in scenario_platforms:
            reason = skipped.get(distro_of(p["image"]))
            if reason:
                print(f"SKIPPED molecule {scenario}/{p['name']}: {reason}", flush=True)
                tally.skipped += 1
            else:
                jobs.append((scenario, p["name"]))
    banner(f"molecule: {len(jobs)} platform runs, {os.environ.get('MOLECULE_JOBS', '4')} at a time")
    workers = max(1, int(os.environ.get("MOLECULE_JOBS", "4")))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(lambda job: run_molecule(*job), jobs):
            tally.add(result)
    return tally


def main() -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    total = Tally()
    total.add(run_check("yamllint", ["yamllint", "-s", "."]))
    total.add(run_check("ansible-lint", ["ansible-lint", "--offline", "-q"]))
    total.add(run_unit())
    if os.environ.get("SKIP_MOLECULE") == "1":
        print("SKIPPED molecule: SKIP_MOLECULE=1")
        total.skipped += 1
    else:
        total.add(run_all_molecule())
    banner(f"summary after {time.monotonic() - started:.0f} s")
    for figure in sorted(total.figures):
        print(figure)
    for failure in total.failures:
        print(f"FAILED {failure}")
    line = f"{total.passed} passed, {total.failed} failed"
    if total.skipped:
        line += f", {total.skipped} skipped"
    print(line, flush=True)
    return 0 if total.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
