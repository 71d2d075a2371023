"""Run Airflow's components as one thing that one Ctrl-C or one SIGTERM stops.

``airflow standalone`` did not: its first Ctrl-C stopped the API server only, and under
a SIGTERM without a terminal the scheduler, the DAG processor, the triggerer and the
executor's workers were left behind. Here each component runs in a session of its own
(a terminal's Ctrl-C reaches this process only), and ``stop`` ends them in order:
SIGTERM to every process of every component (their workers and task processes
included, found before the first signal), a grace period, then SIGKILL to whatever is
left. The caller stops the metadata database after that.
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

import psutil

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

    def processes(self) -> list[psutil.Process]:
        """Every live process of every component: the component and its descendants."""
        found: list[psutil.Process] = []
        for proc in self.procs.values():
            try:
                top = psutil.Process(proc.pid)
                found += [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return found

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM everything, wait up to ``grace`` seconds, SIGKILL what is left."""
        victims = self.processes()
        groups = {p.pid for p in self.procs.values()}  # each leads its own group
        for pid in groups:
            _signal_group(pid, signal.SIGTERM)
        for p in victims:
            _signal(p, signal.SIGTERM)
        _, alive = psutil.wait_procs(victims, timeout=grace)
        # A process may have forked after the first look: look again before the end.
        alive = {p for p in alive if p.is_running()} | set(self.processes())
        for pid in groups:
            _signal_group(pid, signal.SIGKILL)
        for p in alive:
            _signal(p, signal.SIGKILL)
        psutil.wait_procs(list(alive), timeout=5)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


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
