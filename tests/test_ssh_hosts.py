"""``tools/launch.py --launcher ssh`` over real ssh: two hosts on 127.0.0.2 and 127.0.0.3.

The ``ssh_hosts`` fixture (tests/ssh_hosts.py) starts sshd on both loopback addresses with
throw-away keys; the launcher reaches them with the real ssh client, so each remote process
gets sshd's login environment (no venv, the home folder, root's PATH), its command line
passes through the remote shell, and it is sshd's child, not the client's. The tests skip
with the reason when sshd cannot start (Debian: ``apt-get install openssh-server rsync``).

After every job, nothing of it may run on either host: checked by ``ps`` over ssh on each
address (a marker path in the command line), plus the per-job environment tag and process
groups of tests/test_faults_dist.py. The fault tests print their figures (``pytest -s``):
the error line and the seconds from the fault to the end of the job.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.ssh_hosts import SshHosts, SshHostsUnavailable, free_port
from tests.test_distributed import (LAUNCH, REPO, TOY, dist_train_command, proc_stat,
                                    tagged_pids)
from tests.test_faults_dist import Job, job_roles, kill_and_check
from tools.ssh_launch import GUARD, remote_shell_command, with_interpreter

JOB_TIMEOUT = 90                  # hard limit of one launcher run here, seconds
CLEAN_S = 10.0                    # every remote process must be gone this soon after the end
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "data", "model", "output",
                                     "__pycache__", ".pytest_cache", "*.rec", "*.idx")


@pytest.fixture(scope="module")
def ssh_hosts() -> SshHosts:
    """sshd on 127.0.0.2 and 127.0.0.3 for this module; skipped when it cannot start."""
    try:
        hosts = SshHosts().start()
    except SshHostsUnavailable as err:
        pytest.skip(f"no ssh hosts: {err}")
    yield hosts
    hosts.stop()


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's code without venv, data or git: what --sync-dst-dir sends."""
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (Debian: apt-get install rsync)")
    copy = tmp_path_factory.mktemp("project") / "ssd"
    shutil.copytree(REPO, copy, ignore=COPY_IGNORE, symlinks=True)
    return copy


def remote_leftovers(hosts: SshHosts, marker: str) -> dict[str, list[str]]:
    """``{address: ps lines}`` of the processes whose command line holds ``marker``."""
    return {address: found for address in hosts.addresses
            if (found := [line for line in hosts.processes(address) if marker in line])}


def wait_hosts_clean(hosts: SshHosts, marker: str, since: float) -> float:
    """Seconds from ``since`` until ``ps`` on every host lists no process holding ``marker``."""
    deadline = time.monotonic() + CLEAN_S
    while (left := remote_leftovers(hosts, marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for lines in left.values():  # clean up before failing
        for line in lines:
            subprocess.run(["kill", "-9", line.split()[0]], check=False)
    assert not left, f"processes left on the hosts {CLEAN_S:g} s after the end: {left}"
    return time.monotonic() - since


class GoneWatch:
    """When the last process of the job tagged ``tag`` went, local or "remote" (both hosts are
    this machine, so /proc sees the remote processes and their tag too), polled every 50 ms
    from a thread started now. ``ps`` over ssh takes about 2 s a round here: too coarse."""

    def __init__(self, tag: str) -> None:
        self.tag, self.start, self.gone_at = tag, time.monotonic(), None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while time.monotonic() - self.start < JOB_TIMEOUT:
            if not tagged_pids(self.tag):
                self.gone_at = time.monotonic()
                return
            time.sleep(0.05)

    def seconds(self) -> float:
        """Seconds from the start of the watch until nothing was left (fails if never)."""
        self._thread.join(timeout=JOB_TIMEOUT)
        assert self.gone_at is not None, "processes of the job still run"
        return self.gone_at - self.start


def launch_ssh(hosts: SshHosts, argv: list[str], cwd: Path, timeout: float = JOB_TIMEOUT,
               launcher: list[str] = LAUNCH) -> tuple[int, str, str, float]:
    """Run the launcher (one process, its own session); (status, stdout, stderr, seconds)."""
    env = hosts.env(dict(os.environ, OMP_NUM_THREADS="1"))
    start = time.monotonic()
    proc = subprocess.Popen(launcher + argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"launcher still running after {timeout} s:\n{err[-3000:]}")
    return proc.returncode, out, err, time.monotonic() - start


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ---- the hosts and the remote command line (fast) -----------------------------------------
def test_hosts_are_real_ssh_logins(ssh_hosts):
    """Each address answers as itself, with sshd's environment and not the test's venv."""
    for address in ssh_hosts.addresses:
        out = ssh_hosts.ssh(address, "echo $SSH_CONNECTION; pwd; echo ${VIRTUAL_ENV:-none}"
                            ).stdout.split("\n")
        assert out[0].split()[2] == address
        assert out[1] != str(REPO)           # another working folder: the login's home
        assert out[2] == "none"
        assert len(ssh_hosts.processes(address)) > 1


def test_remote_command_line_survives_the_remote_shell(ssh_hosts):
    """Words with spaces, quotes, ``$`` and ``*`` reach the remote process unchanged."""
    words = ["a b", "it's", "$HOME", "*", 'say "hi"', ""]
    script = "import os, sys; print(repr(sys.argv[1:])); print(os.environ['ODD'])"
    command = with_interpreter(["python3", "-c", script, *words], sys.executable)
    remote = remote_shell_command(str(REPO), {"ODD": "x y'z $PATH"}, sys.executable, command)
    address = ssh_hosts.addresses[1]
    with subprocess.Popen(   # stdin kept open, as the launcher does: the guard watches it
            [str(ssh_hosts.bin_dir / "ssh"), "-p", str(ssh_hosts.ports[address]), address,
             remote], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as client:
        out = client.stdout.read().splitlines()
        assert client.wait(timeout=30) == 0
    assert out[0].startswith(f"ssh_guard: process on {os.uname().nodename}")
    assert f"in {REPO}," in out[0]
    assert out[1:] == [repr(words), "x y'z $PATH"]


def test_guard_ends_its_command_when_the_session_closes(ssh_hosts):
    """The ssh client killed with SIGKILL: the remote command (no terminal) goes too."""
    marker = f"guard-test-{os.getpid()}-{time.monotonic_ns()}"
    remote = remote_shell_command(str(REPO), {}, sys.executable,
                                  [sys.executable, "-c", "import time; time.sleep(60)", marker])
    with subprocess.Popen([str(ssh_hosts.bin_dir / "ssh"), "-p",
                           str(ssh_hosts.ports["127.0.0.2"]), "127.0.0.2", remote],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as client:
        assert client.stdout.readline().startswith(b"ssh_guard: process on")
        assert remote_leftovers(ssh_hosts, marker)           # it runs, under sshd
        client.kill()
        client.wait()
    killed_at = time.monotonic()
    while running_with(marker) and time.monotonic() - killed_at < CLEAN_S:
        time.sleep(0.05)                                 # /proc: the host is this machine
    seconds = time.monotonic() - killed_at
    wait_hosts_clean(ssh_hosts, marker, killed_at)       # and ps over ssh agrees
    print(f"\nssh client SIGKILL: remote command gone {seconds:.2f} s later")


def running_with(marker: str) -> list[int]:
    """Pids of live processes of this machine whose command line holds ``marker``."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = proc_stat(entry)
        if marker.encode() in cmdline and fields is not None and fields[0] != b"Z":
            pids.append(int(entry))
    return pids


# ---- training on two hosts ----------------------------------------------------------------
@pytest.mark.slow
def test_train_py_on_two_hosts_with_sync(ssh_hosts, project_copy, synth_data, tmp_path):
    """docs/DISTRIBUTED.md "Several machines with ssh", steps 1-4, on the two addresses.

    One server and one worker a host; the project rsync'd to another folder (--sync-dst-dir)
    and run from there with the launcher's interpreter; rank 0 writes the checkpoint.
    """
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# one host a line; :port for a non-standard ssh port\n"
                        + "".join(f"{a}:{p}\n" for a, p in ssh_hosts.ports.items()))
    dst = tmp_path / "remote-ssd"
    prefix = tmp_path / "ssd"
    train = ["python"] + dist_train_command(synth_data, prefix, end_epoch=1)[1:]
    status, stdout, stderr, wall = launch_ssh(
        ssh_hosts, ["--launcher", "ssh", "-H", str(hostfile), "-n", "2", "-s", "2",
                    "--host-ip", "127.0.0.1", "--env", "OMP_NUM_THREADS=1",
                    "--sync-dst-dir", str(dst), "--timeout", "80", "--stall-timeout", "30"]
        + train, cwd=project_copy)
    assert status == 0, stderr[-3000:]
    assert (dst / "train.py").is_file() and (dst / GUARD).is_file()       # rsync'd
    for role, index, address in (("server", 0, "127.0.0.2"), ("worker", 0, "127.0.0.2"),
                                 ("server", 1, "127.0.0.3"), ("worker", 1, "127.0.0.3")):
        assert f"[{role} {index}] ssh_guard: {role} on {address} in {dst}," in stdout
    for index in (0, 1):   # both workers' training logs reach this terminal
        assert any(line.startswith(f"[worker {index}]") and "Batch [" in line
                   for line in stdout.splitlines()), stdout[-3000:]
    assert (tmp_path / "ssd_tiny_128-0001.params").is_file()            # rank 0's checkpoint
    assert (tmp_path / "ssd_tiny_128-symbol.json").is_file()
    assert not list(tmp_path.glob("*.tmp*"))
    wait_hosts_clean(ssh_hosts, str(prefix), time.monotonic())
    print(f"\ntrain.py 1 epoch on 2 hosts (sync included): {wall:.1f} s wall")


# ---- faults -------------------------------------------------------------------------------
def start_toy_job(ssh_hosts: SshHosts, tmp_path: Path) -> Job:
    """Toy job, one server and one worker a host, 8 batches of 1 s; waits until it trains."""
    marker = tmp_path / "toy.npz"
    job = Job(["--launcher", "ssh", "-H", str(ssh_hosts.hostfile), "-n", "2", "-s", "2",
               "--host-ip", "127.0.0.1", "--timeout", "60"],
              TOY + ["--kv-store", "dist_sync", "--step-sleep", "1", "--out", str(marker)],
              tmp_path, extra_env={"PATH": ssh_hosts.env()["PATH"]})
    job.wait_for(lambda: "rank 0 of 2" in job.stdout() and "rank 1 of 2" in job.stdout()
                 and len(job_roles(job.tag)) == 5, "both workers training", timeout=60)
    return job


@pytest.mark.slow
@pytest.mark.parametrize("role, index, address", [("worker", 1, "127.0.0.3"),
                                                  ("server", 0, "127.0.0.2")])
def test_remote_process_killed(ssh_hosts, tmp_path, role, index, address):
    """SIGKILL to a remote worker or server: one line naming host, role and signal."""
    job = start_toy_job(ssh_hosts, tmp_path)
    watch = GoneWatch(job.tag)
    _, stderr = kill_and_check(job, role, index, signal.SIGKILL, via="ssh")
    line = error_lines(stderr)[0]
    assert f"on host {address}:{ssh_hosts.ports[address]})" in line, line
    assert "exited with status 137 (128 + SIGKILL" in line, line
    wait_hosts_clean(ssh_hosts, str(tmp_path), watch.start)
    print(f"every process of the job gone {watch.seconds():.1f} s after the kill")


def session_of(tag: str, role: str, index: int) -> int:
    """Pid of the sshd process that serves ``role index`` of the job (the guard's parent)."""
    tagged = tagged_pids(tag)
    for pid in tagged:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            parent = int(proc_stat(pid)[1])
        except (OSError, TypeError):
            continue
        if (f"DMLC_ROLE={role}".encode() in environ
                and f"DMLC_TASK_ID={index}".encode() in environ and parent not in tagged):
            return parent
    raise AssertionError(f"no ssh session found for {role} {index}")


def ssh_client_pid(stderr: str, name: str) -> int:
    """Pid of the ssh client of ``name`` (``worker 1``) from the launcher's ``started`` line."""
    line = next(line for line in stderr.splitlines()
                if f"started {name} (ssh client, pid " in line)
    return int(line.split("(ssh client, pid ", 1)[1].split(",")[0])


@pytest.mark.slow
def test_connection_lost(ssh_hosts, tmp_path):
    """The sshd process of worker 1's session killed: ssh's own failure (255), named."""
    job = start_toy_job(ssh_hosts, tmp_path)
    session = session_of(job.tag, "worker", 1)
    assert b"sshd" in Path(f"/proc/{session}/cmdline").read_bytes()
    job.note_groups()
    watch = GoneWatch(job.tag)
    os.kill(session, signal.SIGKILL)
    status, _ = job.finish()
    ended = time.monotonic() - watch.start
    stderr = job.stderr()
    errors = error_lines(stderr)
    assert status == 1 and len(errors) == 1, stderr[-3000:]
    port = ssh_hosts.ports["127.0.0.3"]
    assert errors[0].startswith(
        f"error: worker 1 (ssh client, pid {ssh_client_pid(stderr, 'worker 1')}, on host "
        f"127.0.0.3:{port}) exited with status 255 (ssh's own error: the connection failed "
        "or was lost)"), errors[0]
    wait_hosts_clean(ssh_hosts, str(tmp_path), watch.start)
    job.assert_nothing_left()
    print(f"\nconnection lost: launcher exit {status} {ended:.1f} s later, every process of "
          f"the job gone after {watch.seconds():.1f} s: {errors[0]}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_launcher_stopped(ssh_hosts, tmp_path, sig):
    """Ctrl-C (SIGINT) or SIGTERM to the launcher: the job ends on both hosts."""
    job = start_toy_job(ssh_hosts, tmp_path)
    job.note_groups()
    watch = GoneWatch(job.tag)
    os.kill(job.proc.pid, sig)
    status, _ = job.finish()
    ended = time.monotonic() - watch.start
    stderr = job.stderr()
    job.assert_nothing_left()
    assert status == 130, stderr[-3000:]
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith(f"error: received {sig.name}; stopped every process"), errors
    for address, port in ssh_hosts.ports.items():
        assert f"on host {address}:{port}" in errors[0], errors[0]
    assert ended < 8.0, f"the launcher ended {ended:.1f} s after {sig.name}"
    wait_hosts_clean(ssh_hosts, str(tmp_path), watch.start)
    print(f"\n{sig.name}: launcher exit {status} {ended:.1f} s later, every process of the job "
          f"gone after {watch.seconds():.1f} s: {errors[0]}")


@pytest.mark.slow
def test_launcher_killed_with_sigkill(ssh_hosts, tmp_path):
    """SIGKILL to the launcher (no clean-up runs): the ssh clients die with it (pdeathsig), the
    remote guards see their stdin close and stop the job on both hosts."""
    job = start_toy_job(ssh_hosts, tmp_path)
    job.note_groups()
    watch = GoneWatch(job.tag)
    os.kill(job.proc.pid, signal.SIGKILL)
    job.proc.wait()
    wait_hosts_clean(ssh_hosts, str(tmp_path), watch.start)
    job.assert_nothing_left()
    print(f"\nlauncher SIGKILL: every process of the job gone {watch.seconds():.1f} s later")


@pytest.mark.slow
def test_refused_host_is_named_before_anything_starts(ssh_hosts, tmp_path):
    """127.0.0.4 has no sshd: the launcher names it at once; nothing runs on 127.0.0.2."""
    refused = ("127.0.0.4", free_port("127.0.0.4"))
    hostfile = tmp_path / "hosts"
    hostfile.write_text(f"127.0.0.2:{ssh_hosts.ports['127.0.0.2']}\n{refused[0]}:{refused[1]}\n")
    status, stdout, stderr, wall = launch_ssh(
        ssh_hosts, ["--launcher", "ssh", "-H", str(hostfile), "-n", "2", "-s", "2",
                    "--host-ip", "127.0.0.1", "--timeout", "60"]
        + TOY + ["--kv-store", "dist_sync", "--out", str(tmp_path / "toy.npz")], cwd=REPO)
    errors = error_lines(stderr)
    assert status == 1 and len(errors) == 1, stderr[-3000:]
    assert f"host {refused[0]}:{refused[1]} (-H/--hostfile): ssh failed before the start" \
        in errors[0] and "Connection refused" in errors[0], errors[0]
    assert errors[0].endswith("nothing was started")
    assert "started" not in stderr.replace("nothing was started", "") and not stdout
    assert wall < 10.0
    assert not remote_leftovers(ssh_hosts, str(tmp_path))
    print(f"\nrefused host: launcher exit {status} after {wall:.1f} s: {errors[0]}")


@pytest.mark.slow
def test_wrong_sync_dst_dir_is_named_before_anything_starts(ssh_hosts, project_copy, tmp_path):
    """--sync-dst-dir whose parent does not exist: rsync fails, the launcher says where."""
    dst = tmp_path / "no-such-folder" / "ssd"
    status, stdout, stderr, wall = launch_ssh(
        ssh_hosts, ["--launcher", "ssh", "-H", str(ssh_hosts.hostfile), "-n", "2", "-s", "2",
                    "--host-ip", "127.0.0.1", "--sync-dst-dir", str(dst)]
        + ["python", "train.py", "--kv-store", "dist_sync"], cwd=project_copy)
    errors = error_lines(stderr)
    assert status == 1 and len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith(f"error: --sync-dst-dir {str(dst)!r}: rsync to host 127.0.0."), \
        errors[0]
    assert "No such file or directory" in errors[0] and "nothing was started" in errors[0]
    assert "started scheduler" not in stderr and not stdout and not dst.exists()
    print(f"\nwrong --sync-dst-dir: launcher exit {status} after {wall:.1f} s: {errors[0]}")


def test_relative_sync_dst_dir_is_a_bad_argument(ssh_hosts):
    status, _, stderr, _ = launch_ssh(
        ssh_hosts, ["--launcher", "ssh", "-H", str(ssh_hosts.hostfile), "-n", "1",
                    "--sync-dst-dir", "relative/dir", "python", "train.py"], cwd=REPO)
    assert status == 2
    assert error_lines(stderr) == ["error: --sync-dst-dir 'relative/dir' must be an absolute "
                                   "path (the same folder on every host)"]


def test_folder_that_is_not_the_project_is_named(ssh_hosts, tmp_path):
    """Launched from a folder without this repository: each host says what is missing."""
    hostfile = tmp_path / "hosts"
    hostfile.write_text(ssh_hosts.hostfile.read_text())
    status, stdout, stderr, _ = launch_ssh(
        ssh_hosts, ["--launcher", "ssh", "-H", str(hostfile), "-n", "1", "-s", "1",
                    "python", "train.py"], cwd=tmp_path, launcher=[sys.executable,
                                                                  str(REPO / "tools/launch.py")])
    errors = error_lines(stderr)
    assert status == 1 and len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith("error: host 127.0.0."), errors[0]
    assert errors[0].endswith(f"{tmp_path} is not this repository ({GUARD} missing) (status 3) "
                              "(and 1 more host(s)); nothing was started"), errors[0]
    assert "started scheduler" not in stderr and not stdout
