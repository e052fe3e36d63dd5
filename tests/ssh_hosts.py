"""Two real ssh "hosts" on this machine: sshd on loopback addresses, throw-away keys.

Every address of 127.0.0.0/8 is this machine, so ``sshd`` listening on 127.0.0.2 and
127.0.0.3 gives two hosts that a real ``ssh`` client reaches over TCP, with a real login: the
remote command gets sshd's minimal environment (no venv, the user's home as working folder),
its command line goes through the remote shell, and it is a child of sshd, not of the client.

Everything lives in one temporary folder: host key, client key, ``authorized_keys``,
``known_hosts``, one ``sshd_config`` per address and a client ``ssh_config``. A ``bin/ssh``
wrapper (``ssh -F that_config "$@"``) put first on ``PATH`` makes every ``ssh`` the launcher
and rsync start use it, without touching ``~/.ssh``. No address outside 127.0.0.0/8 is used.

Run by hand::

    python tests/ssh_hosts.py      # starts both, prints the hostfile and PATH, Ctrl-C stops

The tests use the ``ssh_hosts`` fixture (tests/test_ssh_hosts.py), which skips with the reason
when sshd cannot start here (not installed: ``apt-get install openssh-server rsync``).
"""
from __future__ import annotations

import getpass
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ADDRESSES = ("127.0.0.2", "127.0.0.3")
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


class SshHostsUnavailable(RuntimeError):
    """sshd cannot be started here; the message says why (the tests skip with it)."""


def find_sshd() -> str:
    """Path of the sshd binary, or :class:`SshHostsUnavailable`."""
    for path in (shutil.which("sshd"), *SSHD_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    raise SshHostsUnavailable("sshd is not installed (Debian: apt-get install openssh-server)")


def free_port(address: str) -> int:
    """A TCP port free on ``address`` now."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


class SshHosts:
    """sshd on each of ``addresses`` (loopback only), started by :meth:`start`.

    Attributes (after start): ``root`` (the temporary folder), ``ports`` ({address: port}),
    ``bin_dir`` (holds the ``ssh`` wrapper), ``hostfile`` (``address:port`` lines).
    """

    def __init__(self, addresses: tuple[str, ...] = ADDRESSES) -> None:
        for address in addresses:
            if not ipaddress.ip_address(address).is_loopback:
                raise ValueError(f"{address} is not a loopback address (127.0.0.0/8)")
        self.addresses = addresses
        self.user = getpass.getuser()
        self.root: Path | None = None
        self.ports: dict[str, int] = {}
        self._daemons: list[subprocess.Popen] = []

    # ---- start ----------------------------------------------------------------------------
    def start(self, wait_s: float = 10.0) -> "SshHosts":
        """Make the keys and configs, start one sshd an address, wait until each answers."""
        sshd = find_sshd()
        if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
            raise SshHostsUnavailable("the ssh client is not installed (openssh-client)")
        if shutil.which("ps") is None:
            raise SshHostsUnavailable("ps is not installed (procps): the hosts are checked "
                                      "with ps over ssh")
        self.root = Path(tempfile.mkdtemp(prefix="ssh-hosts-"))
        os.chmod(self.root, 0o700)
        self._make_keys()
        self.ports = {address: free_port(address) for address in self.addresses}
        self._write_client_files()
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation
        try:
            for address, port in self.ports.items():
                self._start_daemon(sshd, address, port)
            for address in self.addresses:
                self._wait_ready(address, wait_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _make_keys(self) -> None:
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"ssh-hosts-{name}",
                            "-f", str(self.root / name)], check=True, stdin=subprocess.DEVNULL)
        shutil.copy(self.root / "client_key.pub", self.root / "authorized_keys")
        os.chmod(self.root / "authorized_keys", 0o600)

    def _write_client_files(self) -> None:
        host_key = (self.root / "host_key.pub").read_text().split()
        (self.root / "known_hosts").write_text("".join(
            f"[{address}]:{port} {host_key[0]} {host_key[1]}\n"
            for address, port in self.ports.items()))
        (self.root / "ssh_config").write_text(
            "Host 127.*\n"
            f"    User {self.user}\n"
            f"    IdentityFile {self.root / 'client_key'}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.root / 'known_hosts'}\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    LogLevel ERROR\n")
        self.bin_dir = self.root / "bin"
        self.bin_dir.mkdir()
        wrapper = self.bin_dir / "ssh"
        wrapper.write_text("#!/bin/sh\n# the real ssh client with this test's config and keys\n"
                           f"exec {shutil.which('ssh')} -F {self.root / 'ssh_config'} \"$@\"\n")
        wrapper.chmod(0o755)
        self.hostfile = self.root / "hosts"
        self.hostfile.write_text("".join(f"{a}:{p}\n" for a, p in self.ports.items()))

    def _start_daemon(self, sshd: str, address: str, port: int) -> None:
        config = self.root / f"sshd_{address}.conf"
        config.write_text(
            f"ListenAddress {address}:{port}\n"
            f"HostKey {self.root / 'host_key'}\n"
            f"PidFile {self.root / f'sshd_{address}.pid'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            f"AllowUsers {self.user}\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PrintMotd no\n"
            "MaxStartups 100\n"
            "MaxSessions 100\n"
            "LogLevel ERROR\n")
        log = open(self.root / f"sshd_{address}.log", "wb")
        self._daemons.append(subprocess.Popen([sshd, "-D", "-e", "-f", str(config)],
                                              stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT))
        log.close()

    def _wait_ready(self, address: str, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            probe = self.ssh(address, "true", check=False, timeout=wait_s)
            if probe.returncode == 0:
                return
            dead = [d for d in self._daemons if d.poll() is not None]
            if dead or time.monotonic() > deadline:
                log = (self.root / f"sshd_{address}.log").read_text(errors="replace").strip()
                raise SshHostsUnavailable(
                    f"sshd on {address}:{self.ports[address]} did not start: "
                    f"{(log or probe.stderr.strip() or 'no output').splitlines()[-1]}")
            time.sleep(0.1)

    # ---- use ------------------------------------------------------------------------------
    def env(self, base: dict | None = None) -> dict[str, str]:
        """``base`` (default os.environ) with the ``ssh`` wrapper first on PATH."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '')}"
        return env

    def ssh(self, address: str, command: str, check: bool = True,
            timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run ``command`` on ``address`` through the real ssh client; text output."""
        argv = [str(self.bin_dir / "ssh"), "-p", str(self.ports[address]), address, command]
        return subprocess.run(argv, capture_output=True, text=True, check=check,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def processes(self, address: str) -> list[str]:
        """``pid args`` lines of every process of ``address``, listed with ps over ssh."""
        listing = self.ssh(address, "ps -eo pid=,args=").stdout
        return [line.strip() for line in listing.splitlines() if line.strip()]

    # ---- stop -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the daemons (their sessions end with them) and remove the folder."""
        for daemon in self._daemons:
            if daemon.poll() is None:
                daemon.terminate()
        for daemon in self._daemons:
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        self._daemons = []
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "SshHosts":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    """Start the hosts, print how to use them, wait for Ctrl-C."""
    try:
        hosts = SshHosts().start()
    except SshHostsUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        print(f"hostfile: {hosts.hostfile}\n" + hosts.hostfile.read_text()
              + f"export PATH={hosts.bin_dir}:$PATH   # the ssh wrapper\nCtrl-C stops them.",
              flush=True)
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # taken by sigwait, not Python
        signal.sigwait(stop_signals)
    finally:
        hosts.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
