"""tools/ssh_guard.py and the ssh command line, here without sshd (fast).

The guard is the remote end of ``--launcher ssh``: it must end its command's whole process
group when its stdin closes or it is signalled, and exit with the command's status as a shell
reports it. tests/test_ssh_hosts.py runs the same through real ssh.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.test_distributed import REPO
from tools.dist_utils import Supervisor, describe_status
from tools.ssh_guard import shell_status
from tools.ssh_launch import remote_python, with_interpreter

# the command under the guard: a child of its own (same group) and a long sleep
SLEEPER = ("import os, subprocess, sys, time; "
           "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
           "print(os.getpid(), kid.pid, flush=True); time.sleep(60)")


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def start_guard(code: str) -> tuple[subprocess.Popen, list[int]]:
    """The guard running ``python -c code``; returns it and the pids the code printed."""
    guard = subprocess.Popen([sys.executable, "tools/ssh_guard.py", "--", sys.executable, "-c",
                              code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    first = guard.stdout.readline()
    assert first.startswith("ssh_guard: process on "), first
    pids = [int(word) for word in guard.stdout.readline().split()]
    return guard, pids


def finish(guard: subprocess.Popen, pids: list[int]) -> tuple[int, str, float]:
    """Wait for the guard; (status, its stderr, seconds); its command's processes must be gone."""
    start = time.monotonic()
    try:
        status = guard.wait(timeout=20)
    finally:
        if guard.poll() is None:
            guard.kill()
            guard.wait()
    seconds = time.monotonic() - start
    stderr = guard.stderr.read()
    for pipe in (guard.stdin, guard.stdout, guard.stderr):
        pipe.close()
    deadline = time.monotonic() + 5
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in pids if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"left running: {left}"
    return status, stderr, seconds


def test_stdin_closed_stops_the_command_and_its_children():
    guard, pids = start_guard(SLEEPER)
    assert len(pids) == 2 and all(map(alive, pids))
    guard.stdin.close()                      # what a dead launcher or ssh session looks like
    status, stderr, seconds = finish(guard, pids)
    assert status == 128 + signal.SIGTERM
    assert "the ssh session closed: stopping process" in stderr
    assert seconds < 5


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_to_the_guard_stops_the_command(sig):
    guard, pids = start_guard(SLEEPER)
    guard.send_signal(sig)
    status, stderr, _ = finish(guard, pids)
    assert status == 128 + signal.SIGTERM    # the command got SIGTERM from the guard
    assert f"received {sig.name}" in stderr


def test_command_killed_is_reported_as_a_shell_would_and_its_children_go():
    guard, pids = start_guard(SLEEPER)
    os.kill(pids[0], signal.SIGKILL)         # the command itself; its child stays in the group
    status, _, _ = finish(guard, pids)
    assert status == 137


def run_guard(command: list[str]) -> tuple[int, str]:
    """The guard over ``command`` with its stdin held open to the end; (status, stderr)."""
    with subprocess.Popen([sys.executable, "tools/ssh_guard.py", "--", *command], cwd=REPO,
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as guard:
        stderr = guard.stderr.read()
        return guard.wait(timeout=20), stderr


def test_exit_status_passes_through():
    assert run_guard([sys.executable, "-c", "raise SystemExit(3)"])[0] == 3


def test_missing_program_is_named():
    status, stderr = run_guard(["no-such-program-x"])
    assert status == 127
    assert "cannot start 'no-such-program-x'" in stderr


def test_shell_status():
    assert [shell_status(code) for code in (0, 3, -9, -15)] == [0, 3, 137, 143]


def test_bare_python_becomes_the_launchers_interpreter(tmp_path):
    assert with_interpreter(["python", "train.py"], "/v/bin/python") == ["/v/bin/python",
                                                                         "train.py"]
    assert with_interpreter(["python3.11", "-m", "x"], "/v/bin/python")[0] == "/v/bin/python"
    assert with_interpreter(["/usr/bin/python3", "x.py"], "/v/bin/python")[0] == \
        "/usr/bin/python3"                              # an explicit path is kept
    assert with_interpreter(["pythonic", "x"], "/v/bin/python")[0] == "pythonic"
    inside = os.path.dirname(os.path.dirname(os.path.dirname(sys.executable)))
    assert remote_python(None, inside) == sys.executable
    assert remote_python("/dst/ssd", inside) == os.path.join(
        "/dst/ssd", os.path.relpath(sys.executable, inside))   # the venv's synced copy
    assert remote_python("/dst/ssd", str(tmp_path)) == sys.executable   # venv elsewhere


def test_ssh_failures_are_told_apart_and_placed():
    """255 from an ssh client is ssh's own failure; the host is part of the description."""
    assert describe_status(255, via="ssh") == ("exited with status 255 (ssh's own error: the "
                                               "connection failed or was lost)")
    assert describe_status(255) == "exited with status 255"
    assert describe_status(137, via="ssh").startswith("exited with status 137 (128 + SIGKILL")
    supervisor = Supervisor()
    try:
        supervisor.spawn("scheduler", 0, ["true"], dict(os.environ))
        client = supervisor.spawn("worker", 1, ["true"], dict(os.environ), via="ssh",
                                  host="127.0.0.3:2222", keep_stdin=True)
        assert client.describe() == f"worker 1 (ssh client, pid {client.pid}, on host " \
                                    "127.0.0.3:2222)"
        assert supervisor.where() == "scheduler 0 here; worker 1 on host 127.0.0.3:2222"
    finally:
        supervisor.stop_all()
    assert client.popen.stdin.closed
