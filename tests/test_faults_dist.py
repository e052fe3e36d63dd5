"""Faults in a distributed job: a scheduler or a server killed at any moment (issue 17, case 5).

A dist kvstore job is one scheduler, ``-s`` servers and ``-n`` workers under ``tools/launch.py``.
ps-lite never notices a dead peer, so without the launcher's watchdog every survivor would
wait forever. Each test here starts a job of the toy worker (``tests/dist_worker_toy.py``),
kills one scheduler or server from outside at a known moment, and checks that

- the launcher exits 1 within seconds, with one error line naming the role, the launch index,
  the pid and the signal of the killed process;
- no process of the job is left: none carries the job's DIST_TEST_TAG, and every process
  group that any of them ran in is empty.

The moments: *kv.create* (one worker is held back before ``kv.create``, so the other waits
inside it for the rendezvous), *training* (both workers past ``kv.create`` and pushing/pulling)
and *final save* (rank 0 holds between the end of training and its save; the other worker
has finished and waits at exit for its peers).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tools.dist_utils import JobFailed, Supervisor, describe_status, die_with_parent_prefix
from tests.test_distributed import (LAUNCH, REPO, TOY, assert_nothing_left,
                                    dist_train_command, fake_ssh, proc_stat, tagged_pids)

JOB_TIMEOUT = 60   # hard limit of one launcher run, seconds
WATCHDOG_S = 8.0   # the launcher must end the job this soon after the kill (poll 0.2 s, TERM 3 s)


def job_roles(tag: str) -> dict[tuple[str, int], int]:
    """``{(DMLC_ROLE, DMLC_TASK_ID): pid}`` of the live processes of the job tagged ``tag``.

    A process without DMLC_TASK_ID (the scheduler that dmlc_tracker's tracker starts) counts as
    index 0.
    """
    roles = {}
    for pid in tagged_pids(tag):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                items = handle.read().split(b"\0")
        except OSError:
            continue
        env = dict(item.split(b"=", 1) for item in items if b"=" in item)
        role, task = env.get(b"DMLC_ROLE"), env.get(b"DMLC_TASK_ID", b"0")
        if role is not None:
            # with a shell wrapper (ssh) the shell and its child share the role: keep the
            # innermost one, the process that serves the role
            key = (role.decode(), int(task))
            if key not in roles or _is_ancestor(roles[key], pid):
                roles[key] = pid
    return roles


def _is_ancestor(ancestor: int, pid: int) -> bool:
    """True when ``ancestor`` is a parent, grandparent, ... of ``pid``."""
    while pid > 1:
        fields = proc_stat(pid)
        if fields is None:
            return False
        pid = int(fields[1])                                  # the parent
        if pid == ancestor:
            return True
    return False


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid`` (zombies not counted: a zombie
    whose parent died waits for PID 1 to reap it, and it runs nothing)."""
    members = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        fields = proc_stat(entry)                             # state, ppid, pgrp, ...
        if fields is not None and int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


class Job:
    """One launcher run in its own session; stdout/stderr go to files that the test reads."""

    def __init__(self, launcher_args: list[str], command: list[str], tmp: Path,
                 extra_env: dict | None = None) -> None:
        self.tag = uuid.uuid4().hex
        env = dict(os.environ, OMP_NUM_THREADS="1", DIST_TEST_TAG=self.tag, **(extra_env or {}))
        argv = (LAUNCH + launcher_args + ["--env", f"DIST_TEST_TAG={self.tag}",
                                          "--env", "OMP_NUM_THREADS=1"] + command)
        self.out_path, self.err_path = tmp / "launch.out", tmp / "launch.err"
        self.start = time.monotonic()
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            # the launcher writes through its own copies of the descriptors
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=err,
                                         start_new_session=True)
        self.groups: set[int] = {self.proc.pid}

    def stdout(self) -> str:
        return self.out_path.read_text()

    def stderr(self) -> str:
        return self.err_path.read_text()

    def note_groups(self) -> None:
        """Remember the process group of every live process of the job."""
        for pid in tagged_pids(self.tag):
            try:
                self.groups.add(os.getpgid(pid))
            except ProcessLookupError:
                pass

    def wait_for(self, predicate, what: str, timeout: float = 40.0) -> None:
        """Poll until ``predicate()``; fail (after stopping the job) when it does not come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.note_groups()
            if predicate():
                return
            if self.proc.poll() is not None:
                self.fail(f"the job ended (status {self.proc.returncode}) before {what}")
            time.sleep(0.05)
        self.fail(f"no {what} within {timeout:g} s")

    def finish(self) -> tuple[int, float]:
        """Wait for the launcher; returns its status and the seconds since the job started."""
        try:
            status = self.proc.wait(timeout=JOB_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail(f"launcher still running after {JOB_TIMEOUT} s")
        return status, time.monotonic() - self.start

    def fail(self, message: str) -> None:
        self.kill()
        pytest.fail(f"{message}\nstdout:\n{self.stdout()[-3000:]}\nstderr:\n"
                    f"{self.stderr()[-3000:]}")

    def kill(self) -> None:
        """Clean-up: SIGKILL the launcher's session and everything tagged."""
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        for pid in tagged_pids(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def assert_nothing_left(self) -> None:
        """No tagged process and no live process group of the job (after the launcher ended)."""
        assert_nothing_left(self.tag)
        # a killed MXNet process can take a moment to be torn down (its environ is already
        # unreadable, so it no longer counts as tagged): give the groups the same settling time
        deadline = time.monotonic() + 5.0
        left = {g: group_members(g) for g in self.groups if group_members(g)}
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = {g: group_members(g) for g in self.groups if group_members(g)}
        assert not left, f"process groups still holding processes: {left}"


def kill_and_check(job: Job, role: str, index: int, sig: signal.Signals,
                   via: str = "") -> tuple[str, str]:
    """Kill ``role index`` with ``sig``; check the launcher's error, its timing and the clean-up."""
    pid = job_roles(job.tag)[(role, index)]
    job.note_groups()
    killed_at = time.monotonic()
    os.kill(pid, sig)
    try:
        status, _ = job.finish()
    finally:
        if job.proc.poll() is None:
            job.kill()
    ended_after = time.monotonic() - killed_at
    stdout, stderr = job.stdout(), job.stderr()
    job.assert_nothing_left()
    assert status == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith(f"error: {role} {index} ("), errors[0]
    assert f"{sig.name}" in errors[0], errors[0]
    if not via:   # the local launcher runs the role's process itself: its pid is named
        assert f"(pid {pid})" in errors[0], errors[0]
    assert "stopped the whole job" in errors[0]
    assert "Traceback" not in stderr
    assert ended_after < WATCHDOG_S, f"the job ended {ended_after:.1f} s after the kill"
    print(f"\n{role} {index} {sig.name}: launcher exit {status} {ended_after:.1f} s after the "
          f"kill: {errors[0]}")   # the figures of docs/notes/RELIABILITY.md (pytest -s)
    return stdout, stderr


# ---- the local launcher: every moment, both roles ------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("role", ["scheduler", "server"])
def test_kill_during_kv_create(tmp_path, role):
    """Worker 1 is held before kv.create; worker 0 waits inside it for the rendezvous."""
    job = Job(["-n", "2", "-s", "1", "--timeout", "50"],
              TOY + ["--kv-store", "dist_sync", "--create-delay", "30", "--delay-task", "1"],
              tmp_path)
    job.wait_for(lambda: "task 0 creating kvstore" in job.stdout()
                 and len(job_roles(job.tag)) == 4, "worker 0 in kv.create")
    time.sleep(0.5)   # well inside kv.create: it cannot return before worker 1 registers
    stdout, _ = kill_and_check(job, role, 0, signal.SIGKILL)
    assert "rank 0 of" not in stdout and "rank 1 of" not in stdout   # kv.create never returned


@pytest.mark.slow
@pytest.mark.parametrize("role, sig", [("scheduler", signal.SIGKILL), ("server", signal.SIGKILL),
                                       ("scheduler", signal.SIGTERM), ("server", signal.SIGTERM)])
def test_kill_during_training(tmp_path, role, sig):
    """Both workers are past kv.create and training (8 batches, 1 s each)."""
    job = Job(["-n", "2", "-s", "1", "--timeout", "50"],
              TOY + ["--kv-store", "dist_sync", "--step-sleep", "1"], tmp_path)
    job.wait_for(lambda: "rank 0 of 2" in job.stdout() and "rank 1 of 2" in job.stdout(),
                 "both workers training")
    time.sleep(1.5)
    stdout, _ = kill_and_check(job, role, 0, sig)
    assert "done after" not in stdout   # training did not finish


@pytest.mark.slow
@pytest.mark.parametrize("role", ["scheduler", "server"])
def test_kill_during_final_save(tmp_path, role):
    """Rank 0 finished training and holds before its save; the job ends, no partial file."""
    out = tmp_path / "params.npz"
    job = Job(["-n", "2", "-s", "1", "--timeout", "50"],
              TOY + ["--kv-store", "dist_sync", "--save-sleep", "30", "--out", str(out)], tmp_path)
    job.wait_for(lambda: "rank 0 saving" in job.stdout(), "rank 0 saving")
    kill_and_check(job, role, 0, signal.SIGKILL)
    assert not out.exists()
    assert not list(tmp_path.glob("params.npz.tmp*"))   # nothing half-written left


@pytest.mark.slow
def test_kill_second_server_names_it(tmp_path):
    """With two servers, the one killed is named by its index and pid."""
    job = Job(["-n", "2", "-s", "2", "--timeout", "50"],
              TOY + ["--kv-store", "dist_sync", "--step-sleep", "1"], tmp_path)
    job.wait_for(lambda: "rank 1 of 2" in job.stdout() and "rank 0 of 2" in job.stdout(),
                 "both workers training")
    kill_and_check(job, "server", 1, signal.SIGKILL)


# ---- the ssh launcher (dmlc_tracker): the scheduler runs here, servers through ssh ---------
@pytest.mark.slow
@pytest.mark.parametrize("role", ["scheduler", "server"])
def test_ssh_launcher_kill_during_training(tmp_path, role):
    hostfile, env = fake_ssh(tmp_path, "127.0.0.1\n")
    job = Job(["-n", "2", "-s", "1", "--launcher", "ssh", "-H", str(hostfile),
               "--host-ip", "127.0.0.1", "--timeout", "50"],
              TOY + ["--kv-store", "dist_sync", "--step-sleep", "1"], tmp_path, extra_env=env)
    job.wait_for(lambda: "rank 0 of 2" in job.stdout() and "rank 1 of 2" in job.stdout(),
                 "both workers training")
    time.sleep(1.0)
    _, stderr = kill_and_check(job, role, 0, signal.SIGKILL,
                               via="" if role == "scheduler" else "ssh")
    if role == "server":
        assert "server 0 (ssh client, pid" in stderr


# ---- train.py end to end -------------------------------------------------------------------
@pytest.mark.slow
def test_train_py_server_killed_while_training(tmp_path, synth_data):
    """train.py --kv-store dist_sync, 2 workers: the server killed once training runs.

    Epochs are 3 batches a worker here, so the kill lands in a batch or in rank 0's epoch-end
    checkpoint write. Either way the job ends naming the server, and every checkpoint file under
    its real name is complete: a worker stopped inside an atomic write leaves at most its hidden
    ``.NAME.tmpPID`` file (a pull from the dead server never returns, so SIGKILL ends it there).
    """
    from config.mxnet_compat import mx

    train = dist_train_command(synth_data, tmp_path / "ssd", end_epoch=20)
    job = Job(["-n", "2", "-s", "1", "--timeout", "55"], train, tmp_path)
    job.wait_for(lambda: job.stdout().count("Batch [") >= 4, "training batches", timeout=45)
    kill_and_check(job, "server", 0, signal.SIGKILL)
    for path in tmp_path.glob("ssd_tiny_128-*.params"):
        assert mx.nd.load(str(path)), path              # loads: never a half-written file
    for path in tmp_path.glob("*.tmp*"):
        assert path.name.startswith(".ssd_tiny_128-"), path


@pytest.mark.slow
@pytest.mark.skipif(not die_with_parent_prefix(), reason="no setpriv --pdeathsig here")
def test_launcher_killed_with_sigkill_leaves_nothing(tmp_path):
    """SIGKILL to the launcher itself (the watchdog cannot run): the kernel ends its children.

    The job is silent for 40 s (8 batches of 5 s), so nothing would die of a broken pipe.
    """
    job = Job(["-n", "2", "-s", "1", "--timeout", "50"],
              TOY + ["--kv-store", "dist_sync", "--step-sleep", "5"], tmp_path)
    job.wait_for(lambda: "rank 0 of 2" in job.stdout() and "rank 1 of 2" in job.stdout()
                 and len(job_roles(job.tag)) == 4, "both workers training")
    job.note_groups()
    os.kill(job.proc.pid, signal.SIGKILL)
    job.proc.wait()
    deadline = time.monotonic() + 5.0
    while tagged_pids(job.tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    job.assert_nothing_left()

# ---- the watchdog itself (in-process, fast) ------------------------------------------------
def test_shell_wrapped_server_killed_is_named_with_its_signal():
    """A role run through a shell (ssh, mpirun): the shell reports 128 + the signal."""
    tag = uuid.uuid4().hex
    env = dict(os.environ, DIST_TEST_TAG=tag)
    supervisor = Supervisor(timeout=30)
    server = supervisor.spawn("server", 0, f"{sys.executable} -c 'import time; "
                              "time.sleep(60)'; exit $?", env, shell=True)
    supervisor.spawn("worker", 0, [sys.executable, "-c", "import time; time.sleep(60)"], env)
    deadline = time.monotonic() + 10
    child = None
    while child is None and time.monotonic() < deadline:   # the python under the shell
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        child = int(children[0]) if children else None
        time.sleep(0.05)
    assert child is not None
    os.kill(child, signal.SIGKILL)
    with pytest.raises(JobFailed, match=rf"server 0 \(pid {server.pid}\) exited with status "
                                        r"137 \(128 \+ SIGKILL"):
        supervisor.run()
    assert_nothing_left(tag)


def test_server_that_exits_cleanly_mid_job_ends_it_after_exit_grace():
    """Status 0 from a server while workers still run: they would wait for it forever."""
    tag = uuid.uuid4().hex
    env = dict(os.environ, DIST_TEST_TAG=tag)
    supervisor = Supervisor(timeout=30, exit_grace=1.0)
    supervisor.spawn("scheduler", 0, [sys.executable, "-c", "import time; time.sleep(60)"], env)
    supervisor.spawn("server", 0, [sys.executable, "-c", "pass"], env)
    supervisor.spawn("worker", 0, [sys.executable, "-c", "import time; time.sleep(60)"], env)
    start = time.monotonic()
    with pytest.raises(JobFailed, match=r"server 0 \(pid \d+\) exited while worker 0 "
                                        r"\(pid \d+\) still ran 1 s later"):
        supervisor.run()
    assert time.monotonic() - start < 10
    assert_nothing_left(tag)


@pytest.mark.parametrize("status, text", [
    (-9, "was killed by signal SIGKILL"),
    (-15, "was killed by signal SIGTERM"),
    (1, "exited with status 1"),
    (137, "exited with status 137 (128 + SIGKILL: how a shell or ssh reports a process "
          "killed by SIGKILL)"),
    (143, "exited with status 143 (128 + SIGTERM"),
    (255, "exited with status 255"),
])
def test_describe_status_names_the_signal(status, text):
    assert describe_status(status).startswith(text)
