"""Process supervision for distributed jobs: the watchdog behind ``tools/launch.py``.

MXNet's parameter server (ps-lite) never notices a dead peer: when one process of a
``dist_*`` job dies, every other one waits forever (MXNET_NOTES.md, "dist_* by hand").
:class:`Supervisor` starts every process of a job in its own session (so its process group
holds everything it spawns), forwards its output line by line with a ``[role index]`` prefix,
and ends the whole job, every process group of it, as soon as

- any process exits with a non-zero status or is killed by a signal,
- the job runs longer than ``timeout`` seconds,
- a worker prints nothing for ``stall_timeout`` seconds (optional heartbeat), or
- a scheduler or server exits while workers still run and they do not finish within
  ``exit_grace`` seconds (they would wait for it forever), or
- a process prints an uncaught Python traceback and then neither exits nor prints anything
  for ``exit_grace`` seconds: a dist worker that raises blocks in ps-lite's shutdown at
  interpreter exit instead of exiting with status 1 (measured with mxnet 1.9.1).

The error (:class:`JobFailed`) names the process: role, index, pid and exit status.
Each process is started through ``setpriv --pdeathsig KILL`` where available, so that even a
launcher killed with SIGKILL leaves none of them behind.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

logger = logging.getLogger(__name__)

EXIT_FAILED = 1     # launcher status when a process of the job failed
EXIT_TIMEOUT = 124  # launcher status when the job ran out of time or stalled (as coreutils timeout)
PS_ROLES = ("scheduler", "server")  # roles that serve the workers and end after them


class JobFailed(RuntimeError):
    """The job was stopped by the watchdog; ``exit_status`` is what the launcher returns."""

    def __init__(self, message: str, exit_status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class JobInterrupted(RuntimeError):
    """The launcher received SIGINT/SIGTERM/SIGHUP; the job is stopped."""


@dataclass
class JobProcess:
    """One supervised process (its own session and process group)."""

    role: str                  # scheduler, server or worker
    index: int                 # DMLC_TASK_ID-like index within the role
    popen: subprocess.Popen
    via: str = ""              # "ssh", "mpirun", "srun" when the process is a remote-launch client
    host: str = ""             # the host an ssh client runs its command on ("addr:port")
    started: float = field(default_factory=time.monotonic)
    last_output: float = field(default_factory=time.monotonic)
    returncode: int | None = None
    ended: float | None = None
    error_line: str = ""              # last line of an uncaught Python traceback it printed
    error_at: float | None = None     # when; None again once it prints anything else
    _in_traceback: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def describe(self) -> str:
        """``worker 1 (pid 1234)``, ``worker 1 (ssh client, pid 1234, on host 10.0.0.2:22)``."""
        via = f"{self.via} client, " if self.via else ""
        host = f", on host {self.host}" if self.host else ""
        return f"{self.role} {self.index} ({via}pid {self.pid}{host})"


_PDEATHSIG_PREFIX: list[str] | None = None


def die_with_parent_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL --`` when util-linux's setpriv supports it, else ``[]``.

    Every process of a job runs in its own session, so a launcher killed with SIGKILL (which
    it cannot catch) would leave them running: workers until their next output line (a
    broken pipe), the scheduler and servers until then too. Started through
    ``setpriv --pdeathsig KILL``, which sets PR_SET_PDEATHSIG and then execs the command
    (same pid), each direct child gets SIGKILL from the kernel when the launcher thread that
    started it ends. A shell-wrapped command (ssh, mpirun) has only the shell covered.
    """
    global _PDEATHSIG_PREFIX
    if _PDEATHSIG_PREFIX is None:
        _PDEATHSIG_PREFIX = []
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            try:
                probe = subprocess.run([setpriv, "--pdeathsig", "KILL", "--", "true"],
                                       stdin=subprocess.DEVNULL, capture_output=True,
                                       timeout=10)
                if probe.returncode == 0:
                    _PDEATHSIG_PREFIX = [setpriv, "--pdeathsig", "KILL", "--"]
            except (OSError, subprocess.SubprocessError):
                pass
        if not _PDEATHSIG_PREFIX:
            logger.info("setpriv --pdeathsig is not available: the job's processes outlive a "
                        "launcher killed with SIGKILL")
    return list(_PDEATHSIG_PREFIX)


def describe_status(returncode: int, via: str = "") -> str:
    """How a process ended, in words.

    ``exited with status 3``, ``was killed by signal SIGKILL``, or for 128 + a signal number
    (what a shell or an ssh client returns when the process under it was killed)
    ``exited with status 137 (128 + SIGKILL: how a shell or ssh reports a process killed
    by SIGKILL)``. With ``via="ssh"``, 255 is the ssh client's own failure.
    """
    if returncode < 0:
        return f"was killed by signal {_signal_name(-returncode)}"
    text = f"exited with status {returncode}"
    if via == "ssh" and returncode == 255:
        return text + " (ssh's own error: the connection failed or was lost)"
    if 128 < returncode < 128 + signal.NSIG:
        name = _signal_name(returncode - 128)
        if name.startswith("SIG"):
            text += f" (128 + {name}: how a shell or ssh reports a process killed by {name})"
    return text


def _signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; the number itself when it names no signal."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def find_free_port(host: str) -> int:
    """A TCP port on ``host`` that is free now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as err:
            raise ValueError(f"--host-ip {host!r} cannot be bound on this machine ({err}); "
                             "give an address of this machine, e.g. 127.0.0.1") from None
        return sock.getsockname()[1]


class Supervisor:
    """Start the processes of one job and end all of them when one fails.

    Parameters
    ----------
    timeout : float
        Seconds the whole job may run; 0 means no limit.
    stall_timeout : float
        Seconds a worker may stay silent (no output line); 0 disables the check.
    exit_grace : float
        Seconds allowed between the first and the last process of a finished phase: workers
        after a scheduler/server ended, and scheduler/servers after every worker ended.
    output : TextIO, optional
        Where the prefixed output of the processes goes (default ``sys.stdout``).
    poll_interval : float
        Seconds between two checks.
    """

    def __init__(self, timeout: float = 0.0, stall_timeout: float = 0.0, exit_grace: float = 30.0,
                 output: TextIO | None = None, poll_interval: float = 0.2) -> None:
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self.exit_grace = exit_grace
        self.output = output if output is not None else sys.stdout
        self.poll_interval = poll_interval
        self.processes: list[JobProcess] = []
        self._lock = threading.Lock()
        self._print_lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._stopping = False
        self._started = time.monotonic()

    # ---- starting -------------------------------------------------------------------------
    def spawn(self, role: str, index: int, command: list[str] | str, env: dict[str, str],
              shell: bool = False, via: str = "", host: str = "",
              keep_stdin: bool = False) -> JobProcess:
        """Start one process in a new session, its stdout and stderr forwarded with a prefix.

        ``keep_stdin`` gives it a pipe that stays open, never written, until the process is
        stopped (an ssh client: its remote guard ends the command when that stdin closes).
        """
        with self._lock:
            if self._stopping:
                raise JobInterrupted(f"not starting {role} {index}: the job is being stopped")
            if shell:
                argv = ["/bin/bash", "-c", command]
            else:
                argv = [command] if isinstance(command, str) else list(command)
            popen = subprocess.Popen(die_with_parent_prefix() + argv, env=env,
                                     start_new_session=True,
                                     stdin=subprocess.PIPE if keep_stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            proc = JobProcess(role=role, index=index, popen=popen, via=via, host=host)
            self.processes.append(proc)
        logger.info("started %s", proc.describe())
        reader = threading.Thread(target=self._forward_output, args=(proc,), daemon=True,
                                  name=f"output-{role}-{index}")
        reader.start()
        self._readers.append(reader)
        return proc

    def _forward_output(self, proc: JobProcess) -> None:
        prefix = f"[{proc.role} {proc.index}] "
        for raw in iter(proc.popen.stdout.readline, b""):
            proc.last_output = time.monotonic()
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            _note_traceback(proc, line)
            with self._print_lock:
                self.output.write(prefix + line + "\n")
                self.output.flush()
        proc.popen.stdout.close()

    # ---- watching -------------------------------------------------------------------------
    def run(self, launching_done: Callable[[], bool] | None = None) -> None:
        """Watch the job until it ends; always stop every process before returning.

        Parameters
        ----------
        launching_done : callable, optional
            Returns True once no more processes will be spawned (a launcher thread ended).

        Raises
        ------
        JobFailed
            A process failed, the job timed out, a worker stalled, or a phase did not end.
        """
        try:
            while True:
                self._check_once()
                done = launching_done() if launching_done is not None else True
                with self._lock:
                    procs = list(self.processes)
                if done and procs and all(p.returncode is not None for p in procs):
                    logger.info("all %d processes exited with status 0 in %.1f s",
                                len(procs), time.monotonic() - self._started)
                    return
                time.sleep(self.poll_interval)
        finally:
            self.stop_all()

    def _check_once(self) -> None:
        now = time.monotonic()
        with self._lock:
            procs = list(self.processes)
        for proc in procs:
            if proc.returncode is not None:
                continue
            returncode = proc.popen.poll()
            if returncode is None:
                continue
            proc.returncode, proc.ended = returncode, now
            elapsed = now - proc.started
            if returncode != 0:
                raise JobFailed(f"{proc.describe()} {describe_status(returncode, proc.via)} after "
                                f"{elapsed:.1f} s; stopped the whole job (every other process "
                                f"would wait for it forever)")
            logger.info("%s exited with status 0 after %.1f s", proc.describe(), elapsed)
        running = [p for p in procs if p.returncode is None]
        for proc in running:
            if proc.error_at is not None and now - proc.error_at > self.exit_grace:
                raise JobFailed(f"{proc.describe()} raised {proc.error_line!r} and has not "
                                f"exited {self.exit_grace:g} s later (--exit-grace; a dist "
                                "process blocks at exit while its peers wait); stopped the "
                                "whole job")
        if self.timeout and now - self._started > self.timeout:
            raise JobFailed(f"the job exceeded --timeout {self.timeout:g} s; still running: "
                            + ", ".join(p.describe() for p in running), EXIT_TIMEOUT)
        if self.stall_timeout:
            stalled = [p for p in running
                       if p.role == "worker" and now - p.last_output > self.stall_timeout]
            if stalled:
                raise JobFailed(", ".join(p.describe() for p in stalled) + " printed nothing "
                                f"for more than {self.stall_timeout:g} s (--stall-timeout); "
                                "stopped the whole job", EXIT_TIMEOUT)
        self._check_phases(procs, running, now)

    def _check_phases(self, procs: list[JobProcess], running: list[JobProcess], now: float) -> None:
        workers = [p for p in procs if p.role == "worker"]
        servers = [p for p in procs if p.role in PS_ROLES]
        ended_servers = [p for p in servers if p.returncode is not None]
        running_workers = [p for p in workers if p.returncode is None]
        if ended_servers and running_workers:
            first = min(ended_servers, key=lambda p: p.ended)
            if now - first.ended > self.exit_grace:
                raise JobFailed(f"{first.describe()} exited while "
                                + ", ".join(p.describe() for p in running_workers)
                                + f" still ran {self.exit_grace:g} s later (--exit-grace); "
                                "stopped the whole job")
        if workers and not running_workers and running:
            last = max(workers, key=lambda p: p.ended)
            if now - last.ended > self.exit_grace:
                logger.warning("every worker finished but %s did not exit within %g s "
                               "(--exit-grace); stopping it",
                               ", ".join(p.describe() for p in running), self.exit_grace)
                self.stop_all()

    def where(self) -> str:
        """Where the job's processes ran, one line: ``scheduler 0 here; server 0, worker 0 on
        host 127.0.0.2:22``."""
        with self._lock:
            procs = list(self.processes)
        places: dict[str, list[str]] = {}
        for proc in procs:
            place = f"on host {proc.host}" if proc.host else "here"
            places.setdefault(place, []).append(f"{proc.role} {proc.index}")
        return "; ".join(f"{', '.join(names)} {place}" for place, names in places.items())

    # ---- stopping -------------------------------------------------------------------------
    def stop_all(self, term_grace: float = 3.0) -> None:
        """SIGTERM every process group of the job, SIGKILL what is left, reap everything."""
        with self._lock:
            self._stopping = True
            procs = list(self.processes)
        for proc in procs:
            if proc.popen.poll() is None:
                logger.info("stopping %s", proc.describe())
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + term_grace
        while time.monotonic() < deadline and any(_group_alive(p.pid) for p in procs):
            time.sleep(0.05)
            for proc in procs:
                proc.popen.poll()
        for proc in procs:
            _signal_group(proc.pid, signal.SIGKILL)
        for proc in procs:
            try:
                returncode = proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
                logger.error("%s did not die after SIGKILL", proc.describe())
                continue
            if proc.returncode is None:
                proc.returncode, proc.ended = returncode, time.monotonic()
        for proc in procs:
            if proc.popen.stdin is not None:
                proc.popen.stdin.close()
        for reader in self._readers:
            reader.join(timeout=1.0)


def _note_traceback(proc: JobProcess, line: str) -> None:
    """Track an uncaught-exception traceback in the output of ``proc``."""
    if line.startswith("Traceback (most recent call last):"):
        proc._in_traceback, proc.error_at = True, None
    elif proc._in_traceback and line and not line[0].isspace():
        # the unindented line that ends a traceback: "RuntimeError: message"
        proc._in_traceback = False
        proc.error_line, proc.error_at = line.strip(), time.monotonic()
    elif proc.error_at is not None and time.monotonic() - proc.error_at > 1.0:
        # output well after the traceback (not the rest of a multi-line message): the
        # process is alive and handled the error
        proc.error_at = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group; a group that is already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """True while any process of the group exists (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
