"""Run Airflow's components as one thing that one Ctrl-C or one SIGTERM stops.

``airflow standalone`` did not: its first Ctrl-C stopped the API server only, and under
a SIGTERM without a terminal the scheduler, the DAG processor, the triggerer and the
executor's workers were left behind. Here each component runs in a session of its own
(a terminal's Ctrl-C reaches this process only), and ``stop`` ends them in order:
SIGTERM to every process of every component but the API server (their workers and task
processes included, found before the first signal), a grace period, SIGKILL to
whatever is left; then the same for the API server, which the others' tasks report to
until they end. The caller stops the metadata database after that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil


class HomeInUse(RuntimeError):
    """Another ``vsearch airflow up`` (or ``init``) runs on this Airflow home."""


_HELD: list[int] = []


def claim(home: Path) -> None:
    """Claim ``home`` for this process's lifetime, or raise ``HomeInUse`` naming who holds
    it: two ``vsearch airflow up`` on one data dir would share (and the second would stop,
    as a leftover) one PostgreSQL server. The lock goes with the process, however it ends."""
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "up.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise HomeInUse(
            f"a local Airflow already runs on {home} (pid {holder}): use it, or stop it first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD.append(fd)  # open until the process exits


COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


@dataclass
class Supervisor:
    airflow: str
    env: Mapping[str, str]
    say: Callable[[str], object]
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    def start(self, components: Sequence[str] = COMPONENTS) -> None:
        for name in components:
            # The scheduler's and the triggerer's log servers are for remote workers; here
            # the API server reads the log files, and they would bind all interfaces.
            skip = ["--skip-serve-logs"] if name in ("scheduler", "triggerer") else []
            proc = subprocess.Popen(
                [self.airflow, name, *skip], env=dict(self.env), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, start_new_session=True,
            )  # fmt: skip
            self.procs[name] = proc
            threading.Thread(target=self._relay, args=(name, proc), daemon=True).start()

    def _relay(self, name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        width = max(map(len, COMPONENTS))
        for line in proc.stdout:
            self.say(f"{name:<{width}} | {line.rstrip()}")

    def exited(self) -> dict[str, int]:
        """The components that have exited, with their exit codes."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def processes(self, names: Sequence[str] | None = None) -> list[psutil.Process]:
        """Every live process of the named components (default: all), descendants too."""
        found: list[psutil.Process] = []
        for name, proc in self.procs.items():
            if names is not None and name not in names:
                continue
            try:
                top = psutil.Process(proc.pid)
                found += [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return found

    def stop(self, grace: float = 10.0) -> None:
        """Stop the components in two steps, each with ``grace`` seconds before SIGKILL:
        first all but the API server (the scheduler hands SIGTERM on to running tasks,
        which report how they ended through the API server's execution API, as the
        triggerer does: with the API server gone they would retry until killed), then
        the API server."""
        first = [n for n in self.procs if n != "api-server"]
        self._stop(first, grace)
        self._stop(["api-server"], grace)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def _stop(self, names: Sequence[str], grace: float) -> None:
        """SIGTERM every process of ``names``, wait up to ``grace`` s, SIGKILL the rest."""
        victims = self.processes(names)
        groups = {self.procs[n].pid for n in names if n in self.procs}  # each leads a group
        for pid in groups:
            _signal_group(pid, signal.SIGTERM)
        for p in victims:
            _signal(p, signal.SIGTERM)
        _, alive = psutil.wait_procs(victims, timeout=grace)
        # A process may have forked after the first look: look again before the end.
        alive = {p for p in alive if p.is_running()} | set(self.processes(names))
        if alive:
            named = sorted({_name(p) for p in alive})
            self.say(f"vsearch: killing what ignored SIGTERM for {grace:.0f} s: {named}")
        for pid in groups:
            _signal_group(pid, signal.SIGKILL)
        for p in alive:
            _signal(p, signal.SIGKILL)
        psutil.wait_procs(list(alive), timeout=5)


def _name(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()[1:3]) or process.name()
    except psutil.Error:
        return str(process.pid)


def _signal(process: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error):
        process.send_signal(sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class StopRequest:
    """Set by SIGINT (Ctrl-C), SIGTERM or SIGHUP; ``wait`` sleeps until then."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.signal = signum
        self.event.set()

    def wait(self, seconds: float) -> bool:
        """True once a stop was asked for. (Polls: a signal handler cannot wake a wait.)"""
        deadline = time.monotonic() + seconds
        while not self.event.is_set() and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return self.event.is_set()
