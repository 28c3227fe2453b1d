"""The service definitions the gearman role writes, checked without a host.

No container can run upstart, so the upstart job (the tutorial's bug fix,
Launchpad #1260830) is proven here: its script is run by sh against a
stand-in start-stop-daemon that records what gearmand would have been given.
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
from pathlib import Path


def script_block(job: str, name: str) -> str:
    match = re.search(rf"^{name}\n(.*?)^end script$", job, re.MULTILINE | re.DOTALL)
    assert match, f"no '{name}' block in the job"
    return match.group(1)


def run_upstart_script(job: str, defaults: Path, tmp_path: Path) -> list[str]:
    """Run the job's main script with a fake start-stop-daemon; return its argv."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    record = tmp_path / "argv"
    ssd = fake_bin / "start-stop-daemon"
    ssd.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {record}\n')
    ssd.chmod(0o755)
    script = script_block(job, "script").replace("/etc/default/gearman-job-server", str(defaults))
    subprocess.run(["sh", "-eu", "-c", script], check=True, env={"PATH": f"{fake_bin}:/usr/bin:/bin"})
    return record.read_text().splitlines()


def test_upstart_job_sources_defaults_and_passes_params_unquoted(rendered, tmp_path):
    out = rendered["upstart"]
    job = (out / "upstart.conf").read_text()
    assert "respawn" in job.split()
    argv = run_upstart_script(job, out / "gearman-job-server.default", tmp_path)
    # start-stop-daemon runs gearmand as gearman, in the foreground...
    assert argv[:5] == ["--start", "--chuid", "gearman", "--exec", "/usr/sbin/gearmand"]
    gearmand_args = argv[argv.index("--") + 1 :]
    assert "--daemon" not in gearmand_args
    # ...with every PARAMS word as its own argument (unquoted $PARAMS).
    for word in ("--queue-type=mysql", "--listen=127.0.0.1", "--port=4731", "--job-retries=3"):
        assert word in gearmand_args


def test_upstart_job_runs_without_a_defaults_file(rendered, tmp_path):
    job = (rendered["default"] / "upstart.conf").read_text()
    argv = run_upstart_script(job, tmp_path / "missing", tmp_path)
    assert argv[argv.index("--") + 1 :] == ["--pid-file=/run/gearman/gearmand.pid"]


def test_upstart_job_waits_for_local_mysql_only_when_the_database_is_local(rendered):
    assert "started mysql" in (rendered["local_db"] / "upstart.conf").read_text()
    assert "started mysql" not in (rendered["remote_db"] / "upstart.conf").read_text()


def test_defaults_file_parses_in_sh_to_the_tutorial_options(rendered):
    out = rendered["extra_params"]
    params = subprocess.run(
        ["sh", "-c", f'. {shlex.quote(str(out / "gearman-job-server.default"))}; printf "%s" "$PARAMS"'],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert params[0] == "--queue-type=mysql"
    assert "--round-robin" in params
    assert not any("password" in p for p in params)


@pytest.mark.parametrize(
    ("variant", "buckets"),
    [("default", 1048573), ("small_queue", 262139), ("huge_queue", 134217689)],
)
def test_the_job_hash_table_is_sized_for_the_expected_queue_depth(rendered, variant, buckets):
    """gearmand's own 991 chains make a deep queue's replay quadratic: the
    table gets the first prime under a power of two that holds the expected
    depth one job to a chain."""
    params = (rendered[variant] / "gearman-job-server.default").read_text()
    assert re.findall(r"--hashtable-buckets=(\d+)", params) == [str(buckets)]


def test_builtin_queue_drops_the_queue_type_and_database_settings(rendered):
    out = rendered["builtin"]
    assert "--queue-type" not in (out / "gearman-job-server.default").read_text()
    assert (out / "gearmand.conf").read_text().strip() == ""


def test_gearmand_conf_holds_only_option_words(rendered):
    conf = (rendered["odd_password"] / "gearmand.conf").read_text()
    lines = conf.splitlines()
    # gearmand reads the file as command-line words: a comment would be one.
    assert all(re.fullmatch(r"--[a-z-]+=\S+", line) for line in lines), lines
    assert "--mysql-password=s3cr$t#%" in lines
    assert "--mysql-table=gearman_queue" in lines


def test_systemd_dropin_runs_gearmand_in_the_foreground(rendered):
    dropin = (rendered["default"] / "systemd-override.conf").read_text()
    assert "Type=simple" in dropin
    assert re.search(r"^PIDFile=$", dropin, re.MULTILINE)
    # ExecStart is reset before it is set again, as a drop-in must.
    assert dropin.index("ExecStart=\n") < dropin.index("ExecStart=/usr/sbin/gearmand")
    assert "$PARAMS" in dropin and "--daemon" not in dropin
    assert "Restart=on-failure" in dropin
    # The memory guard: a backlog beyond it stops gearmand alone.
    assert re.search(r"^MemoryMax=50%$", dropin, re.MULTILINE)


def test_systemd_dropin_wants_the_database_only_when_it_is_local(rendered):
    local = rendered["local_db"] / "systemd-override.conf"
    wants = re.search(r"^Wants=(.*)$", local.read_text(), re.MULTILINE).group(1).split()
    assert "mariadb.service" in wants
    remote = rendered["remote_db"] / "systemd-override.conf"
    wants = re.search(r"^Wants=(.*)$", remote.read_text(), re.MULTILINE).group(1).split()
    assert "mariadb.service" not in wants
    # Ordering after the database costs nothing when it is absent: always there.
    assert "mariadb.service" in re.search(r"^After=(.*)$", remote.read_text(), re.MULTILINE).group(1)
