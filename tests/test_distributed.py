"""Distributed training through tools/launch.py on localhost (dist kvstore, dmlc tracker).

Every launch runs in its own session under a hard timeout, and every test checks that no
process it started is left: each job carries a unique DIST_TEST_TAG environment variable
(``--env``), and no process in /proc may hold it once the test ends.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tools.dist_utils import Supervisor, JobFailed, describe_status
from tools.launch import get_parser, main, parse_hostfile, validate_args

REPO = Path(__file__).resolve().parent.parent
TOY = [sys.executable, "-m", "tests.dist_worker_toy"]
LAUNCH = [sys.executable, "-m", "tools.launch"]
JOB_TIMEOUT = 60  # hard limit of one launcher run in these tests, seconds


def proc_stat(pid: int | str) -> list[bytes] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def tagged_pids(tag: str) -> list[int]:
    """Pids of live processes whose environment holds DIST_TEST_TAG=tag."""
    needle = f"DIST_TEST_TAG={tag}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        fields = proc_stat(entry)
        if needle in environ and fields is not None and fields[0] != b"Z":
            pids.append(int(entry))
    return pids


def assert_nothing_left(tag: str) -> None:
    """Fail if any process of the job still runs (after a short settling time)."""
    deadline = time.monotonic() + 3.0
    while tagged_pids(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = tagged_pids(tag)
    for pid in left:  # clean up before failing, so one failure does not leak into others
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"processes left behind: {left}"


def launch(launcher_args: list[str], command: list[str], extra_env: dict | None = None,
           timeout: float = JOB_TIMEOUT) -> tuple[int, str, str, float]:
    """Run tools/launch.py in its own session; returns (status, stdout, stderr, wall seconds)."""
    tag = uuid.uuid4().hex
    env = dict(os.environ, OMP_NUM_THREADS="1", DIST_TEST_TAG=tag, **(extra_env or {}))
    argv = LAUNCH + launcher_args + ["--env", f"DIST_TEST_TAG={tag}"] + command
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        assert_nothing_left(tag)
        pytest.fail(f"launcher did not finish within {timeout} s: {argv}")
    wall = time.monotonic() - start
    assert_nothing_left(tag)
    return proc.returncode, out, err, wall


def run_single(out_path: Path, batch_size: int) -> None:
    """The reference: one process, local kvstore."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(TOY + ["--batch-size", str(batch_size), "--out", str(out_path)], cwd=REPO,
                   env=env, check=True, timeout=JOB_TIMEOUT, capture_output=True)


def max_param_diff(path_a: Path, path_b: Path) -> float:
    """Largest absolute difference between two saved parameter sets (same names)."""
    a, b = np.load(path_a), np.load(path_b)
    assert sorted(a.files) == sorted(b.files) == ["fc1_bias", "fc1_weight", "fc2_bias",
                                                  "fc2_weight"]
    return max(float(np.abs(a[name] - b[name]).max()) for name in a.files)


@pytest.fixture(scope="module")
def single_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Parameters of one process at batch 16 (= 2 workers x 8)."""
    path = tmp_path_factory.mktemp("single") / "single.npz"
    run_single(path, batch_size=16)
    return path


# ---- training through the launcher ----------------------------------------------------------
@pytest.mark.parametrize("kv_store", ["dist_sync", "dist_device_sync"])
def test_dist_sync_equals_one_process_at_twice_the_batch(tmp_path, single_params, kv_store):
    out = tmp_path / "dist.npz"
    status, stdout, stderr, _ = launch(
        ["-n", "2", "-s", "1", "--timeout", "50"],
        TOY + ["--kv-store", kv_store, "--batch-size", "8", "--out", str(out)])
    assert status == 0, stderr
    assert "rank 0 of 2" in stdout and "rank 1 of 2" in stdout
    assert max_param_diff(out, single_params) < 1e-5
    # the comparison means something: training moved the weights far from where they began
    from tests.dist_worker_toy import initial_params
    start = {k: v.asnumpy() for k, v in initial_params().items()}
    trained = np.load(out)
    assert max(float(np.abs(trained[k] - start[k]).max()) for k in start) > 1e-2


def test_dist_async_runs_to_completion(tmp_path, single_params):
    out = tmp_path / "async.npz"
    status, stdout, stderr, _ = launch(
        ["-n", "2", "-s", "1", "--timeout", "50"],
        TOY + ["--kv-store", "dist_async", "--batch-size", "8", "--out", str(out)])
    assert status == 0, stderr
    assert stdout.count("done after 8 batches") == 2
    params = np.load(out)
    assert all(np.isfinite(params[name]).all() for name in params.files)


def fake_ssh(tmp_path: Path, hosts: str) -> tuple[Path, dict]:
    """A hostfile holding ``hosts`` and an environment whose ``ssh`` runs the command here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text('#!/bin/bash\n# fake ssh: run the remote command (last argument) here\n'
                   'exec bash -c "${@: -1}"\n')
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    hostfile = tmp_path / "hosts"
    hostfile.write_text(hosts)
    return hostfile, {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_ssh_launcher_through_dmlc_tracker(tmp_path, single_params):
    """--launcher ssh runs dmlc_tracker's ssh submit (patched); a fake ssh runs locally."""
    hostfile, env = fake_ssh(tmp_path, "127.0.0.1\n127.0.0.1:22 # same machine twice\n")
    out = tmp_path / "ssh.npz"
    status, stdout, stderr, _ = launch(
        ["-n", "2", "-s", "1", "--launcher", "ssh", "-H", str(hostfile),
         "--host-ip", "127.0.0.1", "--timeout", "50"],
        TOY + ["--kv-store", "dist_sync", "--batch-size", "8", "--out", str(out)],
        extra_env=env)
    assert status == 0, stderr
    assert "started worker 1 (ssh client" in stderr
    assert max_param_diff(out, single_params) < 1e-5


# ---- the watchdog ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode, expected", [("exit", "exited with status 3"),
                                            ("kill", "was killed by signal SIGKILL")])
def test_dead_worker_ends_the_job(mode, expected):
    status, _, stderr, wall = launch(
        ["-n", "2", "-s", "1", "--timeout", "50"],
        TOY + ["--kv-store", "dist_sync", "--fail-rank", "1", "--fail-after", "2",
               "--fail-mode", mode])
    assert status == 1
    assert "error: worker" in stderr and expected in stderr
    assert wall < 40  # ended by the watchdog, not by --timeout


def test_worker_that_raises_ends_the_job():
    """An uncaught exception: the worker blocks at exit in ps-lite; the watchdog ends it."""
    status, _, stderr, wall = launch(
        ["-n", "2", "-s", "1", "--timeout", "50", "--exit-grace", "3"],
        TOY + ["--kv-store", "dist_sync", "--fail-rank", "0", "--fail-after", "2",
               "--fail-mode", "raise"])
    assert status == 1
    assert "raised 'RuntimeError: toy worker: injected failure'" in stderr
    assert wall < 40


def test_silent_worker_hits_stall_timeout():
    status, _, stderr, wall = launch(
        ["-n", "2", "-s", "1", "--timeout", "50", "--stall-timeout", "5"],
        TOY + ["--kv-store", "dist_sync", "--fail-rank", "1", "--fail-after", "1",
               "--fail-mode", "hang"])
    assert status == 124
    assert "--stall-timeout" in stderr and "worker 1" in stderr
    assert wall < 40


def test_job_timeout():
    status, _, stderr, wall = launch(
        ["-n", "1", "-s", "1", "--timeout", "4"],
        TOY + ["--kv-store", "dist_sync", "--step-sleep", "5"])
    assert status == 124
    assert "exceeded --timeout 4 s" in stderr and "worker 0" in stderr
    assert wall < 20


def test_sigterm_to_launcher_stops_every_process():
    tag = uuid.uuid4().hex
    env = dict(os.environ, OMP_NUM_THREADS="1", DIST_TEST_TAG=tag)
    argv = LAUNCH + ["-n", "2", "-s", "1", "--timeout", "50"] + TOY + [
        "--kv-store", "dist_sync", "--step-sleep", "5"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(tagged_pids(tag)) < 5 and time.monotonic() < deadline:  # launcher + 4
            time.sleep(0.2)
        assert len(tagged_pids(tag)) >= 5
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130
    assert "received SIGTERM" in stderr
    assert_nothing_left(tag)


def test_supervisor_reports_first_failure_and_kills_grandchildren():
    """In-process: a process group with a grandchild is fully stopped."""
    tag = uuid.uuid4().hex
    env = dict(os.environ, DIST_TEST_TAG=tag)
    supervisor = Supervisor(timeout=20)
    supervisor.spawn("server", 0, "sleep 60 & sleep 60; true", env, shell=True)
    supervisor.spawn("worker", 0, [sys.executable, "-c", "import sys; sys.exit(7)"], env)
    with pytest.raises(JobFailed, match=r"worker 0 \(pid \d+\) exited with status 7"):
        supervisor.run()
    assert_nothing_left(tag)


def test_describe_status():
    assert describe_status(3) == "exited with status 3"
    assert describe_status(-9) == "was killed by signal SIGKILL"


# ---- bad input ------------------------------------------------------------------------------
def parse(argv: list[str]):
    return validate_args(get_parser().parse_args(argv))


@pytest.mark.parametrize("argv, error, message", [
    (["-n", "0", "true"], ValueError, "-n/--num-workers must be >= 1, got 0"),
    (["-n", "2", "-s", "0", "true"], ValueError, "-s/--num-servers must be >= 1"),
    (["-n", "2"], ValueError, "no command given"),
    (["-n", "2", "--"], ValueError, "no command given"),
    (["-n", "2", "no-such-program-xyz"], FileNotFoundError, "'no-such-program-xyz' not found"),
    (["-n", "2", sys.executable, "missing_script.py"], FileNotFoundError,
     "'missing_script.py' does not exist"),
    (["-n", "2", "--env", "1BAD=x", "true"], ValueError, "--env '1BAD=x'"),
    (["-n", "2", "--env", "DIST_UNSET_VARIABLE_XYZ", "true"], ValueError, "not set in this shell"),
    (["-n", "2", "--launcher", "ssh", "true"], ValueError, "needs -H/--hostfile"),
    (["-n", "2", "-H", "/nonexistent/hosts", "--launcher", "mpi", "true"],
     (ValueError, FileNotFoundError), "hostfile"),
    (["-n", "2", "--timeout", "-1", "true"], ValueError, "--timeout must be >= 0"),
])
def test_bad_arguments(argv, error, message):
    with pytest.raises(error, match=None) as info:
        parse(argv)
    assert message in str(info.value)


def test_hostfile_with_local_launcher_is_rejected(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("127.0.0.1\n")
    with pytest.raises(ValueError, match="not local"):
        parse(["-n", "2", "-H", str(hostfile), "true"])


def test_parse_hostfile(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# cluster\nnode1\n\nnode2:2222\n10.0.0.3 slots=4  # mpi style\n")
    assert parse_hostfile(str(hostfile)) == [("node1", 22), ("node2", 2222), ("10.0.0.3", 22)]


@pytest.mark.parametrize("text, message", [
    ("", "lists no host"),
    ("node1:abc\n", "port 'abc'"),
    ("node1 extra words\n", "line 1"),
    ("node1\nnode2:99999\n", "line 2: port '99999'"),
])
def test_bad_hostfile(tmp_path, text, message):
    hostfile = tmp_path / "hosts"
    hostfile.write_text(text)
    with pytest.raises(ValueError) as info:
        parse_hostfile(str(hostfile))
    assert message in str(info.value) and str(hostfile) in str(info.value)


def test_missing_hostfile():
    with pytest.raises(FileNotFoundError, match="-H/--hostfile '/nonexistent/hosts'"):
        parse_hostfile("/nonexistent/hosts")


def test_cli_bad_input_exits_2_with_one_line(capsys):
    assert main(["-n", "0", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: -n/--num-workers must be >= 1") and "Traceback" not in err


def test_command_keeps_its_own_flags():
    args = parse(["-n", "2", "--timeout", "9", "true", "--timeout", "3", "-n", "5"])
    assert args.command == ["true", "--timeout", "3", "-n", "5"]
    assert args.timeout == 9 and args.num_workers == 2 and args.num_servers == 2
    assert args.host_ip == "127.0.0.1"


# ---- end to end: train.py ------------------------------------------------------------------
def dist_train_command(synth_data, prefix: Path, end_epoch: int) -> list[str]:
    """train.py on the synthetic set with ``--kv-store dist_sync``: tiny at 128, batch 8."""
    return [sys.executable, "train.py", "--train-path", synth_data.train_rec, "--val-path", "",
            "--network", "tiny", "--data-shape", "128", "--num-class",
            str(synth_data.num_classes), "--class-names", ",".join(synth_data.class_names),
            "--pretrained", "", "--end-epoch", str(end_epoch), "--frequent", "1", "--log", "",
            "--batch-size", "8", "--kv-store", "dist_sync", "--prefix", str(prefix)]


@pytest.mark.slow
def test_train_py_dist_sync_end_to_end(tmp_path, synth_data):
    """train.py --kv-store dist_sync, 2 workers, tiny preset, one epoch: rank 0 checkpoints.

    Both workers must run the same number of batches per epoch, or dist_sync waits forever
    (ImageDetRecordIter's num_parts shards are unequal: 23 and 25 of these 48 images).
    """
    train = dist_train_command(synth_data, tmp_path / "ssd", end_epoch=1)
    status, stdout, stderr, _ = launch(
        ["-n", "2", "-s", "1", "--timeout", "50", "--stall-timeout", "15"], train)
    assert status == 0, stderr[-2000:]
    assert "Node[0]" in stdout and "Node[1]" in stdout
    assert (tmp_path / "ssd_tiny_128-0001.params").is_file()
    assert (tmp_path / "ssd_tiny_128-symbol.json").is_file()
    assert not list(tmp_path.glob("*.tmp*"))  # atomic writes finished
