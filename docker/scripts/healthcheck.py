"""Container health checks for the vsearch images (exit 0 healthy, 1 not).

    healthcheck.py ROLE        one of the roles below
    healthcheck.py auto        the role of the process this container runs (the images' default)
    healthcheck.py http://...  any URL that must answer 2xx

Liveness, not readiness: the query service's check is /healthz, because a replica that has
no snapshot yet (a fresh stack) is alive and must not be restarted; the load balancer
sends traffic by /readyz instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"

HTTP_CHECKS = {
    "api-server": "http://127.0.0.1:8080/api/v2/monitor/health",
    # Served only with AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=True (compose sets it).
    "scheduler": "http://127.0.0.1:8974/health",
}


def query_service_url(env: dict[str, str] | None = None) -> str:
    """/healthz on the port the service binds (VSEARCH_SERVICE_BIND, read by service/server.py)."""
    bind = (os.environ if env is None else env).get("VSEARCH_SERVICE_BIND", "127.0.0.1:8000")
    port = bind.rsplit(":", 1)[-1] if ":" in bind else "8000"
    return f"http://127.0.0.1:{port}/healthz"


def command_checks() -> dict[str, list[str]]:
    host = socket.gethostname()
    return {
        "dag-processor": ["airflow", "jobs", "check", "--job-type", "DagProcessorJob", "--local"],
        "triggerer": ["airflow", "jobs", "check", "--job-type", "TriggererJob", "--local"],
        # Celery names a worker celery@<hostname> unless told otherwise.
        "celery-worker": ["celery", "--app", CELERY_APP, "inspect", "ping", "-d", f"celery@{host}"],
    }


# How `auto` recognises a role from a process's argv (first match wins).
ROLE_PATTERNS: list[tuple[str, tuple[str, ...]]] = [
    ("query-service", ("service.server",)),  # python -m service.server
    ("api-server", ("airflow", "api-server")),
    ("scheduler", ("airflow", "scheduler")),
    ("dag-processor", ("airflow", "dag-processor")),
    ("triggerer", ("airflow", "triggerer")),
    ("celery-worker", ("airflow", "celery", "worker")),
]


def role_of(argv: list[str]) -> str | None:
    """The role whose words all appear, in order, among the argv's basenames."""
    words = [os.path.basename(a) for a in argv]
    for role, pattern in ROLE_PATTERNS:
        it = iter(words)
        if all(any(w == p for w in it) for p in pattern):
            return role
    return None


def running_roles(proc: Path = Path("/proc")) -> list[str]:
    """Roles of the running processes, oldest (lowest pid) first."""
    roles = []
    pids = sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit())
    for pid in pids:
        entry = proc / str(pid)
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        role = role_of([a.decode(errors="replace") for a in raw.split(b"\0") if a])
        if role:
            roles.append(role)
    return roles


def check_http(url: str, timeout: float = 4.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except OSError as e:  # URLError and HTTPError are OSErrors
        print(f"{url}: {e}", file=sys.stderr)
        return False


def check(role_or_url: str) -> bool:
    if role_or_url.startswith(("http://", "https://")):
        return check_http(role_or_url)
    if role_or_url == "auto":
        roles = running_roles()
        if not roles:
            print("no known vsearch or Airflow process in this container", file=sys.stderr)
            return False
        role_or_url = roles[0]
    if role_or_url == "query-service":
        return check_http(query_service_url())
    if role_or_url in HTTP_CHECKS:
        return check_http(HTTP_CHECKS[role_or_url])
    commands = command_checks()
    if role_or_url in commands:
        done = subprocess.run(commands[role_or_url], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
        return done.returncode == 0
    raise SystemExit(f"unknown role {role_or_url!r}; known: auto, {', '.join(known_roles())}")


def known_roles() -> list[str]:
    return sorted({"query-service", *HTTP_CHECKS, *command_checks()})


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    return 0 if check(argv[0]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
