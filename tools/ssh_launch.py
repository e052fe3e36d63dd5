"""``tools/launch.py --launcher ssh``: start servers and workers on other hosts over ssh.

The scheduler runs on this machine, started by ``dmlc_tracker``'s tracker (as in MXNet); the
servers and workers go round-robin over the hostfile (servers first, then workers, as
``dmlc_tracker.ssh`` orders them) through the ``ssh`` client on PATH. What differs from
``dmlc_tracker.ssh`` (which this replaces; the tracker itself is still dmlc's):

- **Before anything starts**, every host is checked with ``ssh host true`` (BatchMode: no
  prompt): a host that refuses, times out or rejects the key is named at once and nothing
  runs anywhere. ``--sync-dst-dir`` is then rsync'd to every host and the outcome checked
  (dmlc ignores a failed rsync), then each host is asked whether the folder, the guard and
  the interpreter are there.
- **The environment**: a command starting with a bare ``python``/``python3`` runs with the
  launcher's own interpreter (``sys.executable``, so the venv it belongs to), or with its
  copy under ``--sync-dst-dir`` when that venv lies inside the synced folder. Nothing needs
  activating on the hosts; ssh's login environment is otherwise left as it is.
- **Quoting**: every word of the command, every environment value and the folder are
  quoted for the remote shell (dmlc joins them with spaces inside single quotes).
- **No process outlives its session**: each remote process runs under
  ``tools/ssh_guard.py``, which ends it when the ssh channel's stdin closes (launcher or
  client gone, connection lost) or it is signalled. The launcher holds that stdin open.
- **Named failures**: the watchdog knows the host of each ssh client, so an error names host,
  role and cause; ssh's own failure (status 255) is told apart from the command's.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from tools.dist_utils import JobFailed, Supervisor

logger = logging.getLogger("launch")

GUARD = "tools/ssh_guard.py"          # relative to the remote working folder
BARE_PYTHON = re.compile(r"python(\d+(\.\d+)?)?")
# variables of this shell that every remote process gets (dmlc_tracker.ssh's list, less the
# cloud credentials, which would show in `ps` there; pass those with --env when needed)
FORWARDED_ENV = ("OMP_NUM_THREADS", "KMP_AFFINITY", "LD_LIBRARY_PATH", "DMLC_INTERFACE")
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
               "-o", "StrictHostKeyChecking=accept-new",
               "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3")
CHECK_TIMEOUT_S = 30  # one pre-flight ssh or rsync may take this long


class HostFailed(JobFailed):
    """A host failed its check before anything was started."""


# ---- the command --------------------------------------------------------------------------
def remote_python(sync_dst_dir: str | None, local_dir: str | None = None) -> str:
    """Interpreter the remote command uses for a bare ``python``.

    The launcher's own ``sys.executable`` (unresolved, so a venv keeps its packages); with
    ``--sync-dst-dir``, its copy there when it lies inside the synced folder.
    """
    executable = sys.executable
    local_dir = os.path.abspath(local_dir or os.getcwd())
    if sync_dst_dir and executable.startswith(local_dir + os.sep):
        return os.path.join(sync_dst_dir, os.path.relpath(executable, local_dir))
    return executable


def with_interpreter(command: list[str], python: str) -> list[str]:
    """``command`` with a leading bare ``python``/``python3``/``python3.11`` replaced."""
    if command and BARE_PYTHON.fullmatch(command[0]):
        return [python] + command[1:]
    return list(command)


def remote_shell_command(working_dir: str, env: dict[str, Any], python: str,
                         command: list[str]) -> str:
    """The one string ssh hands to the remote login shell: cd, environment, guard, command."""
    assignments = " ".join(shlex.quote(f"{key}={value}") for key, value in env.items())
    folder = shlex.quote(working_dir)
    return (f"cd {folder} || {{ echo \"error: cannot enter {folder} on $(hostname)\" >&2; "
            f"exit 97; }}; exec env {assignments} {shlex.quote(python)} {GUARD} -- "
            + shlex.join(command))


def ssh_argv(host: str, port: int, remote: str) -> list[str]:
    """``ssh`` client command line for ``remote`` on ``host:port`` (remote string last)."""
    return ["ssh", *SSH_OPTIONS, "-p", str(port), host, remote]


# ---- before the start ---------------------------------------------------------------------
def _run_quiet(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` without stdin; returns (status, last line of its output)."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {CHECK_TIMEOUT_S} s"
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    # rsync ends with a generic "rsync error: ... (code 11)": the line before says what failed
    telling = [line for line in lines if not line.startswith("rsync error:")] or lines
    return done.returncode, (telling[-1] if telling else "no output")


def _on_every_host(hosts: list[tuple[str, int]], check: Callable[[str, int], str | None]) -> None:
    """Run ``check(host, port)`` on all hosts at once; raise naming the first that failed."""
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        problems = list(pool.map(lambda hp: check(*hp), hosts))
    failed = [problem for problem in problems if problem]
    if failed:
        more = f" (and {len(failed) - 1} more host(s))" if len(failed) > 1 else ""
        raise HostFailed(failed[0] + more + "; nothing was started")


def check_reachable(hosts: list[tuple[str, int]]) -> None:
    """``ssh host true`` on every host, no prompt allowed."""
    def check(host: str, port: int) -> str | None:
        status, line = _run_quiet(ssh_argv(host, port, "true"))
        if status == 0:
            return None
        return (f"host {host}:{port} (-H/--hostfile): ssh failed before the start "
                f"(status {status}): {line}")
    _on_every_host(hosts, check)


def sync_project(hosts: list[tuple[str, int]], local_dir: str, dst_dir: str) -> None:
    """rsync ``local_dir`` to ``dst_dir`` on every host, checking each transfer."""
    def sync(host: str, port: int) -> str | None:
        rsh = shlex.join(["ssh", *SSH_OPTIONS, "-p", str(port)])
        argv = ["rsync", "-az", "--rsh", rsh, local_dir.rstrip("/") + "/", f"{host}:{dst_dir}"]
        logger.info("rsync %s -> %s:%s", local_dir, host, dst_dir)
        status, line = _run_quiet(argv)
        if status == 0:
            return None
        return (f"--sync-dst-dir {dst_dir!r}: rsync to host {host}:{port} failed "
                f"(status {status}): {line}")
    _on_every_host(hosts, sync)


def check_layout(hosts: list[tuple[str, int]], working_dir: str, python: str) -> None:
    """The folder, the guard and the interpreter exist on every host."""
    folder, guard, interpreter = map(shlex.quote, (working_dir, GUARD, python))
    probe = (f"cd {folder} 2>/dev/null || {{ echo 'folder missing'; exit 3; }}; "
             f"test -f {guard} || {{ echo '{GUARD} missing'; exit 3; }}; "
             f"test -x {interpreter} || {{ echo 'interpreter missing'; exit 3; }}")
    hint = {"folder missing": f"the folder {working_dir} does not exist there",
            f"{GUARD} missing": f"{working_dir} is not this repository ({GUARD} missing)",
            "interpreter missing": f"the interpreter {python} does not exist there (install "
                                   "the same venv at the same path, or keep it inside the "
                                   "--sync-dst-dir folder)"}

    def check(host: str, port: int) -> str | None:
        status, line = _run_quiet(ssh_argv(host, port, probe))
        if status == 0:
            return None
        return f"host {host}:{port}: {hint.get(line, line)} (status {status})"
    _on_every_host(hosts, check)


# ---- the start ----------------------------------------------------------------------------
def make_ssh_submit(hosts: list[tuple[str, int]], working_dir: str, python: str,
                    command: list[str], supervisor: Supervisor) -> Callable[[int, int, dict], None]:
    """``fun_submit`` for ``dmlc_tracker.tracker.submit``: one ssh client per process.

    Each client is spawned and waited for by a thread of its own, which must live as long as
    the client (``setpriv --pdeathsig`` fires when the spawning thread ends).
    """
    def ssh_submit(num_workers: int, num_servers: int, envs: dict) -> None:
        forwarded = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        roles = ([("server", i) for i in range(num_servers)]
                 + [("worker", i) for i in range(num_workers)])
        started: list[threading.Event] = []
        for slot, (role, index) in enumerate(roles):
            host, port = hosts[slot % len(hosts)]
            env = {**forwarded, **envs, "DMLC_ROLE": role, "DMLC_TASK_ID": index,
                   "DMLC_NODE_HOST": host, "PYTHONUNBUFFERED": 1}
            argv = ssh_argv(host, port, remote_shell_command(working_dir, env, python, command))
            done = threading.Event()
            started.append(done)
            threading.Thread(target=_spawn_and_wait, daemon=True, name=f"ssh-{role}-{index}",
                             args=(supervisor, role, index, argv, f"{host}:{port}",
                                   done)).start()
        for done in started:
            done.wait()
    return ssh_submit


def _spawn_and_wait(supervisor: Supervisor, role: str, index: int, argv: list[str],
                    host: str, done: threading.Event) -> None:
    try:
        proc = supervisor.spawn(role, index, argv, dict(os.environ), via="ssh", host=host,
                                keep_stdin=True)
    except Exception as err:  # the watchdog is stopping; it reports the cause
        logger.info("%s %d not started: %s", role, index, err)
        return
    finally:
        done.set()
    proc.popen.wait()


def run_ssh(args: argparse.Namespace, supervisor: Supervisor,
            submit_and_watch: Callable[[Callable[[], None]], None]) -> None:
    """Check the hosts, sync, then run the job; ``submit_and_watch`` runs the tracker."""
    hosts = args.hosts
    local_dir = os.getcwd()
    working_dir = args.sync_dst_dir or local_dir
    python = remote_python(args.sync_dst_dir, local_dir)
    check_reachable(hosts)
    if args.sync_dst_dir:
        sync_project(hosts, local_dir, args.sync_dst_dir)
    check_layout(hosts, working_dir, python)
    logger.info("%d host(s) ready; remote folder %s, interpreter %s", len(hosts), working_dir,
                python)
    remote_command = with_interpreter(args.command, python)
    scheduler_command = shlex.join(with_interpreter(args.command, sys.executable))
    fun_submit = make_ssh_submit(hosts, working_dir, python, remote_command, supervisor)

    def submit() -> None:
        import dmlc_tracker.tracker as tracker  # patched by launch.dmlc_patches at call time

        tracker.submit(args.num_workers, args.num_servers, fun_submit=fun_submit,
                       hostIP=args.host_ip or "auto", pscmd=scheduler_command)
    submit_and_watch(submit)
