"""Launch a distributed MXNet job (``--kv-store dist_sync|dist_device_sync|dist_async``).

Usage::

    python tools/launch.py -n 2 [-s 1] [--launcher local] [--timeout 3600] \\
        python train.py --kv-store dist_sync ...

Every process of the job (one scheduler, ``-s`` servers, ``-n`` workers) runs the same command
with the ``DMLC_*`` environment that the dmlc tracker gives it; ``import mxnet`` serves the
scheduler and server roles. A watchdog (:mod:`tools.dist_utils`) ends the whole job with an
error naming the process when any process fails, the job exceeds ``--timeout``, or a worker
is silent for ``--stall-timeout``: a dist job never hangs.

Launchers
---------
local
    Starts the scheduler, servers and workers itself on this machine, each in its own process
    group, all bound to ``--host-ip`` (default 127.0.0.1).
ssh
    The scheduler runs here through ``dmlc_tracker``'s tracker; servers and workers start
    over ssh (:mod:`tools.ssh_launch`): hosts checked before the start, the launcher's
    interpreter used remotely, each remote process ended with its ssh session
    (:mod:`tools.ssh_guard`).
mpi, slurm
    Delegates to the submit functions of the ``dmlc_tracker`` package shipped in the mxnet
    wheel, patched in-process for Python 3.11 (``Thread.isAlive``), for ``--host-ip`` and
    ``--env``, and so that every process the tracker starts (scheduler, mpirun/srun
    clients) runs under the same watchdog.

Exit status: 0 success, 1 a process failed, 124 timeout or stall, 2 bad arguments,
130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

if __package__ in (None, ""):  # run by path (python tools/x.py): make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from config.runtime import available_cores
from tools.dist_utils import (JobFailed, JobInterrupted, Supervisor, find_free_port)
from tools.ssh_launch import run_ssh

logger = logging.getLogger("launch")

LAUNCHERS = ("local", "ssh", "mpi", "slurm")
LOCAL_HOST_IP = "127.0.0.1"  # local jobs stay on the loopback interface
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def get_parser() -> argparse.ArgumentParser:
    """Command-line flags of the launcher (spellings of MXNet's ``tools/launch.py``)."""
    parser = argparse.ArgumentParser(
        description="Launch a distributed MXNet job through the dmlc tracker, with a watchdog "
                    "that ends the whole job when one process fails or it runs out of time.",
        usage="%(prog)s -n NUM_WORKERS [options] command ...")
    parser.add_argument("-n", "--num-workers", type=int, required=True,
                        help="number of worker processes (>= 1)")
    parser.add_argument("-s", "--num-servers", type=int, default=None,
                        help="number of server processes (>= 1; default: NUM_WORKERS)")
    parser.add_argument("-H", "--hostfile", default=None,
                        help="file of hosts, one 'host', 'host:port' or 'host slots=N' a line; "
                             "required by --launcher ssh, optional for mpi")
    parser.add_argument("--launcher", default="local", choices=LAUNCHERS,
                        help="how the processes are started (default local)")
    parser.add_argument("--host-ip", "--bind", dest="host_ip", default=None,
                        help="address of this machine the scheduler listens on and every "
                             "process connects to (default: 127.0.0.1 for local, the tracker's "
                             "own guess otherwise)")
    parser.add_argument("--port", type=int, default=0,
                        help="scheduler port for --launcher local (default 0: a free one)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable for every process; a bare KEY passes this "
                             "shell's value (repeatable)")
    parser.add_argument("--sync-dst-dir", default=None,
                        help="ssh only: rsync the current folder to this folder on every host")
    parser.add_argument("--timeout", type=float, default=0,
                        help="seconds the whole job may run before it is stopped (default 0: "
                             "no limit)")
    parser.add_argument("--stall-timeout", type=float, default=0,
                        help="seconds a worker may print nothing before the job is stopped "
                             "(default 0: off); set it above the time between two progress lines")
    parser.add_argument("--exit-grace", type=float, default=30,
                        help="seconds workers may outlive a finished scheduler/server, and "
                             "scheduler/servers the last worker (default 30)")
    parser.add_argument("--omp-threads", type=int, default=None,
                        help="local only: OMP_NUM_THREADS of each worker when not exported "
                             "(default: cores // NUM_WORKERS, at least 1); servers get 1")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the command every process runs, e.g. python train.py ...")
    return parser


# ---- validation ---------------------------------------------------------------------------
def parse_hostfile(path: str) -> list[tuple[str, int]]:
    """Read a hostfile: ``host``, ``host:port`` or ``host slots=N`` per line, ``#`` comments.

    Returns
    -------
    list of (host, ssh_port)

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        A line is malformed or the file lists no host.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"-H/--hostfile {path!r} does not exist")
    hosts = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            host_part, *rest = text.split()
            if rest and not (len(rest) == 1 and re.fullmatch(r"slots=\d+", rest[0])):
                raise ValueError(f"-H/--hostfile {path!r} line {line_no}: {line.strip()!r} is "
                                 "not 'host', 'host:port' or 'host slots=N'")
            host, _, port_text = host_part.partition(":")
            port = 22
            if port_text:
                if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                    raise ValueError(f"-H/--hostfile {path!r} line {line_no}: port "
                                     f"{port_text!r} is not a number in 1..65535")
                port = int(port_text)
            if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+", host):
                raise ValueError(f"-H/--hostfile {path!r} line {line_no}: {host!r} is not a "
                                 "host name or address")
            hosts.append((host, port))
    if not hosts:
        raise ValueError(f"-H/--hostfile {path!r} lists no host; write one host a line")
    return hosts


def parse_env(items: list[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` / ``--env KEY`` (value of this shell) into a dict."""
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not ENV_KEY.match(key):
            raise ValueError(f"--env {item!r}: expected KEY=VALUE with KEY a variable name")
        if not sep:
            if key not in os.environ:
                raise ValueError(f"--env {key}: not set in this shell; give --env {key}=VALUE")
            value = os.environ[key]
        env[key] = value
    return env


def check_command(command: list[str], launcher: str) -> list[str]:
    """Strip a leading ``--`` and check, for local jobs, that the program exists."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ValueError("no command given: write it after the options, e.g. "
                         "launch.py -n 2 python train.py --kv-store dist_sync")
    if launcher == "local":
        program = command[0]
        if shutil.which(program) is None:
            raise FileNotFoundError(f"command {program!r} not found (neither on PATH nor an "
                                    "executable file)")
        is_python = os.path.basename(program).startswith("python")
        if is_python and len(command) > 1 and command[1].endswith(".py") \
                and not os.path.isfile(command[1]):
            raise FileNotFoundError(f"command script {command[1]!r} does not exist "
                                    f"(working folder {os.getcwd()})")
    return command


def validate_args(args: argparse.Namespace) -> argparse.Namespace:
    """Check every flag; fill the defaults that depend on others."""
    if args.num_workers < 1:
        raise ValueError(f"-n/--num-workers must be >= 1, got {args.num_workers}")
    if args.num_servers is None:
        args.num_servers = args.num_workers
    if args.num_servers < 1:
        raise ValueError(f"-s/--num-servers must be >= 1 (the dist kvstore needs a server), "
                         f"got {args.num_servers}")
    for flag, value in (("--timeout", args.timeout), ("--stall-timeout", args.stall_timeout),
                        ("--exit-grace", args.exit_grace)):
        if value < 0:
            raise ValueError(f"{flag} must be >= 0 seconds, got {value:g}")
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.omp_threads is not None and args.omp_threads < 1:
        raise ValueError(f"--omp-threads must be >= 1, got {args.omp_threads}")
    args.command = check_command(list(args.command), args.launcher)
    args.env = parse_env(args.env)
    args.hosts = None
    if args.launcher == "ssh" and args.hostfile is None:
        raise ValueError("--launcher ssh needs -H/--hostfile (one host a line)")
    if args.launcher in ("local", "slurm") and args.hostfile is not None:
        raise ValueError(f"-H/--hostfile is used by --launcher ssh or mpi, not "
                         f"{args.launcher}")
    if args.hostfile is not None:
        args.hosts = parse_hostfile(args.hostfile)
    if args.sync_dst_dir is not None and args.launcher != "ssh":
        raise ValueError("--sync-dst-dir is only used by --launcher ssh")
    if args.sync_dst_dir is not None and not os.path.isabs(args.sync_dst_dir):
        raise ValueError(f"--sync-dst-dir {args.sync_dst_dir!r} must be an absolute path "
                         "(the same folder on every host)")
    if args.sync_dst_dir is not None and shutil.which("rsync") is None:
        raise FileNotFoundError("--sync-dst-dir needs 'rsync' on PATH; it is not installed here")
    client = {"ssh": "ssh", "mpi": "mpirun", "slurm": "srun"}.get(args.launcher)
    if client and shutil.which(client) is None:
        raise FileNotFoundError(f"--launcher {args.launcher} needs {client!r} on PATH; "
                                "it is not installed here")
    if args.launcher == "local" and args.host_ip is None:
        args.host_ip = LOCAL_HOST_IP
    return args


# ---- local launcher -----------------------------------------------------------------------
def local_environments(args: argparse.Namespace, port: int) -> Iterator[tuple[str, int, dict]]:
    """``(role, index, env)`` of the scheduler, the servers and the workers, in start order."""
    base = os.environ.copy()
    base.update({"DMLC_PS_ROOT_URI": args.host_ip, "DMLC_PS_ROOT_PORT": str(port),
                 "DMLC_NUM_SERVER": str(args.num_servers),
                 "DMLC_NUM_WORKER": str(args.num_workers),
                 "DMLC_NODE_HOST": args.host_ip,  # every node advertises the bound address
                 "DMLC_JOB_CLUSTER": "local",
                 "PYTHONUNBUFFERED": "1"})        # output lines arrive as they are printed
    base.update(args.env)
    worker_threads = args.omp_threads or max(1, available_cores() // args.num_workers)
    roles = ([("scheduler", 0)] + [("server", i) for i in range(args.num_servers)]
             + [("worker", i) for i in range(args.num_workers)])
    for role, index in roles:
        env = dict(base, DMLC_ROLE=role, DMLC_TASK_ID=str(index))
        if "OMP_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in args.env:
            env["OMP_NUM_THREADS"] = str(worker_threads if role == "worker" else 1)
        yield role, index, env


def run_local(args: argparse.Namespace, supervisor: Supervisor) -> None:
    """Start and watch every process of the job on this machine."""
    port = args.port or find_free_port(args.host_ip)
    logger.info("scheduler at %s:%d; %d server(s), %d worker(s)", args.host_ip, port,
                args.num_servers, args.num_workers)
    for role, index, env in local_environments(args, port):
        supervisor.spawn(role, index, args.command, env)
    supervisor.run()


# ---- ssh / mpi / slurm through dmlc_tracker ----------------------------------------------
class _SupervisedSubprocess(types.SimpleNamespace):
    """Stands in for ``subprocess`` inside dmlc_tracker modules: role processes go to the watchdog."""

    def __init__(self, supervisor: Supervisor, via: str) -> None:
        super().__init__()
        self._supervisor, self._via, self._counts = supervisor, via, {}

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)  # Popen, PIPE, ... unchanged

    def check_call(self, prog: str, shell: bool = False, env: dict | None = None,
                   executable: str | None = None) -> int:
        role = (env or {}).get("DMLC_ROLE") or _role_in_command(prog)
        if role is None:  # not a job process (e.g. rsync of --sync-dst-dir)
            return subprocess.check_call(prog, shell=shell, env=env, executable=executable)
        index = self._counts.get(role, 0)
        self._counts[role] = index + 1
        run_env = dict(env if env is not None else os.environ, PYTHONUNBUFFERED="1")
        via = "" if role == "scheduler" else self._via
        proc = self._supervisor.spawn(role, index, prog, run_env, shell=True, via=via)
        while proc.popen.poll() is None:  # the watchdog judges the status, not this thread
            time.sleep(0.2)
        return proc.popen.returncode


def _role_in_command(prog: str) -> str | None:
    """DMLC_ROLE written into an ssh/mpirun/srun command line."""
    match = re.search(r"DMLC_ROLE[= ](scheduler|server|worker)\b", prog)
    return match.group(1) if match else None


@contextmanager
def dmlc_patches(args: argparse.Namespace, supervisor: Supervisor) -> Iterator[None]:
    """Patch dmlc_tracker in this process only: Python 3.11, --host-ip, --env, the watchdog."""
    import dmlc_tracker.tracker as tracker
    from dmlc_tracker import mpi, slurm, ssh

    saved = [(threading.Thread, "isAlive", threading.Thread.__dict__.get("isAlive")),
             (tracker, "get_host_ip", tracker.get_host_ip), (tracker, "submit", tracker.submit)]
    saved += [(module, "subprocess", module.subprocess) for module in (tracker, ssh, mpi, slurm)]
    original_get_host_ip, original_submit = tracker.get_host_ip, tracker.submit

    def get_host_ip(host_ip: str | None = None) -> str:
        return args.host_ip or original_get_host_ip(host_ip)

    def submit(nworker: int, nserver: int, fun_submit: Any, hostIP: str = "auto",
               pscmd: str | None = None) -> None:
        def submit_with_env(nw: int, ns: int, envs: dict) -> Any:
            return fun_submit(nw, ns, {**envs, **args.env})
        logger.info("dmlc tracker: %d server(s), %d worker(s)", nserver, nworker)
        original_submit(nworker, nserver, submit_with_env, hostIP, pscmd)

    threading.Thread.isAlive = threading.Thread.is_alive  # removed in Python 3.9
    tracker.get_host_ip, tracker.submit = get_host_ip, submit
    via = {"ssh": "ssh", "mpi": "mpirun", "slurm": "srun"}[args.launcher]
    for module in (tracker, ssh, mpi, slurm):
        module.subprocess = _SupervisedSubprocess(supervisor, via)
    try:
        yield
    finally:
        for owner, name, value in saved:
            if value is None:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


def run_tracker(args: argparse.Namespace, supervisor: Supervisor) -> None:
    """Submit through dmlc_tracker (ssh: tools/ssh_launch.py), watched by ``supervisor``."""
    if args.launcher == "ssh":
        run_ssh(args, supervisor, lambda submit: _submit_and_watch(args, submit, supervisor))
        return
    tracker_args = argparse.Namespace(
        num_workers=args.num_workers, num_servers=args.num_servers, host_file=args.hostfile,
        host_ip=args.host_ip, sync_dst_dir=args.sync_dst_dir, command=args.command,
        slurm_worker_nodes=None, slurm_server_nodes=None)
    module = __import__(f"dmlc_tracker.{args.launcher}", fromlist=["submit"])
    _submit_and_watch(args, lambda: module.submit(tracker_args), supervisor)


def _submit_and_watch(args: argparse.Namespace, submit_job: Callable[[], None],
                      supervisor: Supervisor) -> None:
    import dmlc_tracker

    os.environ.update(args.env)  # the scheduler runs here with this process's environment
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            submit_job()
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    with warnings.catch_warnings(), dmlc_patches(args, supervisor):
        warnings.simplefilter("ignore", DeprecationWarning)  # setDaemon, logging.warn
        assert dmlc_tracker  # the package is the mxnet wheel's
        thread = threading.Thread(target=submit, daemon=True, name="dmlc-submit")
        thread.start()
        try:
            supervisor.run(launching_done=lambda: not thread.is_alive() or bool(errors))
        finally:
            thread.join(timeout=5)
    if errors:
        raise JobFailed(f"dmlc_tracker {args.launcher} launcher failed: {errors[0]!r}")


# ---- entry point --------------------------------------------------------------------------
def _raise_interrupt(signum: int, _frame: object) -> None:
    raise JobInterrupted(f"received {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    """Run the launcher; returns the exit status (see the module docstring)."""
    logging.basicConfig(format="%(asctime)s launch %(levelname)s %(message)s",
                        level=logging.INFO)
    args = get_parser().parse_args(argv)
    try:
        args = validate_args(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logger.info("arguments: %s", {k: v for k, v in vars(args).items() if k != "hosts"})
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    supervisor = Supervisor(timeout=args.timeout, stall_timeout=args.stall_timeout,
                            exit_grace=args.exit_grace)
    try:
        if args.launcher == "local":
            run_local(args, supervisor)
        else:
            run_tracker(args, supervisor)
    except JobFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_status
    except JobInterrupted as err:
        where = supervisor.where()
        print(f"error: {err}; stopped every process of the job"
              + (f" ({where})" if where else ""), file=sys.stderr)
        return 130
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        supervisor.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
