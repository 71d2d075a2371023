"""What each container runs exists: the Airflow subcommands under the compose configuration,
the query service's server and app, the scripts, the health checks; and every setting it
reads is real."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import stack
from vsearch.config import Settings

IMAGE_ROOT = "/opt/vsearch/"
SCRIPT = re.compile(r"/opt/vsearch/docker/scripts/[a-z_]+\.py")


def load_script(name: str) -> Any:
    path = stack.DOCKER / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(stack.compose()["services"])


def ours(services: dict[str, Any], target: str) -> dict[str, Any]:
    return {n: s for n, s in services.items() if s.get("build", {}).get("target") == target}


def image_path_to_repo(path: str, target: str) -> Path:
    """Where a file the image has at ``path`` comes from in the repo (by its COPY lines)."""
    for sources, dest in stack.dockerfile().copies(target):
        for source in sources:
            if source.endswith("/") and path.startswith(dest):
                return stack.ROOT / source / path[len(dest) :]
            if not source.endswith("/") and path == dest.rstrip("/") + "/" + Path(source).name:
                return stack.ROOT / source
    raise AssertionError(f"{path}: no COPY puts it in the {target} image")


def container_env(service: dict[str, Any], target: str) -> dict[str, str]:
    """The environment a container of ``service`` starts with: image ENV, then compose's."""
    return {**stack.dockerfile().env(target), **stack.environment(service)}


# --- settings -------------------------------------------------------------------------------


def test_every_vsearch_variable_is_a_settings_field(services: dict[str, Any]) -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    texts = [
        stack.COMPOSE_FILE.read_text(),
        stack.ENV_EXAMPLE.read_text(),
        stack.DOCKERFILE.read_text(),
    ]
    names = {m for text in texts for m in re.findall(r"\bVSEARCH_([A-Z0-9_]+)(?![\w*])", text)}
    assert names, "no VSEARCH_ variable found at all"
    unknown = sorted(f"VSEARCH_{n}" for n in names if n.lower() not in fields)
    assert not unknown, f"not fields of vsearch.config.Settings: {unknown}"


@pytest.mark.parametrize("target", ["service", "airflow"])
def test_settings_load_from_each_containers_environment(
    services: dict[str, Any], target: str
) -> None:
    for name, service in ours(services, target).items():
        settings = Settings.load(container_env(service, target))
        if name == "store-init":
            assert settings.store.startswith("s3://"), name
            continue
        # Shared state, not a per-container SQLite file: replicas and workers must agree.
        assert settings.store.startswith("s3://") and settings.s3_endpoint_url, name
        assert settings.delta_log.startswith("redis://"), name
        assert settings.metadata_db.startswith("redis://"), name
        assert settings.cache_dir.startswith("/var/lib/vsearch"), name
        env = container_env(service, target)
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"], name


def test_the_write_endpoints_are_on_with_a_key(services: dict[str, Any]) -> None:
    settings = Settings.load(container_env(services["query"], "service"))
    assert settings.api_key


# --- the query service ----------------------------------------------------------------------


def test_the_query_service_command_is_the_server_that_loads(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from waitress.adjustments import Adjustments

    service = services["query"]
    argv = stack.command_argv(service["command"])
    assert argv == ["python", "-m", "service.server"], argv
    cmd = stack.dockerfile().last("service", "CMD")
    assert cmd and json.loads(cmd.args) == argv, "compose and the image run the same command"
    for key, value in container_env(service, "service").items():
        monkeypatch.setenv(key, value)
    server = importlib.import_module(argv[2])
    settings = Settings.load()
    # The address the server binds is the one the health check and HAProxy use.
    assert settings.service_bind == "0.0.0.0:8000", settings.service_bind
    Adjustments(**server.server_options(settings))  # every option is one waitress knows
    module_name, _, call = server.APP.partition(":")
    assert call == "create_app()", server.APP
    assert callable(importlib.import_module(module_name).create_app)


def test_haproxy_sends_traffic_to_the_port_the_replicas_bind(services: dict[str, Any]) -> None:
    config = (stack.DOCKER / "haproxy.cfg").read_text()
    mounted = [v for v in services["proxy"]["volumes"] if v.startswith("./haproxy.cfg:")]
    assert mounted == ["./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
    servers = re.findall(r"^\s*server-template\s+\S+\s+\d+\s+(\S+)", config, re.M)
    assert len(servers) == 2, servers  # the ready replicas, and the live ones as a fallback
    for server in servers:
        host, port = server.split(":")
        assert host == "query" and host in services
        bind = container_env(services[host], "service")["VSEARCH_SERVICE_BIND"]
        assert bind.rsplit(":", 1)[1] == port
    checks = re.findall(r"http-check send meth GET uri (\S+)", config)
    assert checks == ["/readyz", "/healthz"], "route by readiness, fall back to liveness"
    assert re.search(r"default_backend query_replicas", config)
    (listen,) = re.findall(r"^\s*bind\s+:(\d+)", config, re.M)
    published = [p.rsplit(":", 1)[1] for p in services["proxy"]["ports"]]
    assert published == [listen]
    assert f"127.0.0.1:{listen}/haproxy-health" in " ".join(
        services["proxy"]["healthcheck"]["test"]
    )


# --- scripts and health checks --------------------------------------------------------------


def test_scripts_the_containers_run_are_in_their_images(services: dict[str, Any]) -> None:
    found = 0
    for target in ("service", "airflow"):
        for name, service in ours(services, target).items():
            texts = stack.all_strings([service.get("command"), service.get("healthcheck")])
            for text in texts:
                for path in SCRIPT.findall(text):
                    assert image_path_to_repo(path, target).is_file(), f"{name}: {path}"
                    found += 1
        check = stack.dockerfile().last(target, "HEALTHCHECK")
        assert check
        for path in SCRIPT.findall(check.args):
            assert image_path_to_repo(path, target).is_file(), f"{target} HEALTHCHECK: {path}"
            found += 1
    assert found >= 10


def test_each_healthcheck_checks_the_role_its_container_runs(services: dict[str, Any]) -> None:
    healthcheck = load_script("healthcheck")
    for target in ("service", "airflow"):
        for name, service in ours(services, target).items():
            test = service.get("healthcheck", {}).get("test")
            if service.get("healthcheck", {}).get("disable"):
                continue
            argv = stack.command_argv(service["command"])
            role = test[-1]
            assert role in healthcheck.known_roles(), f"{name}: unknown role {role}"
            assert healthcheck.role_of(["/opt/venv/bin/python", *argv]) == role, name
    # The image's default check ("auto") finds the same role from the process list.
    assert healthcheck.role_of(["/opt/venv/bin/python", "/opt/venv/bin/airflow", "triggerer"]) == (
        "triggerer"
    )
    assert healthcheck.role_of(["python", "/opt/vsearch/docker/scripts/healthcheck.py"]) is None
    assert healthcheck.query_service_url({"VSEARCH_SERVICE_BIND": "0.0.0.0:8000"}).endswith(
        ":8000/healthz"
    )


def test_the_console_scripts_the_images_use_are_installed(services: dict[str, Any]) -> None:
    from importlib.metadata import entry_points

    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    assert "vsearch" in stack.pyproject()["project"]["scripts"]
    used = set()
    for target in ("service", "airflow"):
        for service in ours(services, target).values():
            used.add(stack.command_argv(service["command"])[0])
    used |= {"celery"}  # the worker health check
    for exe in used - {"python"}:
        assert exe in scripts, f"{exe}: no installed console script"


# --- Airflow --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_probe(services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The Airflow CLI parser, config and DagBag, under the worker container's environment."""
    tmp = tmp_path_factory.mktemp("airflow-probe")
    worker = services["airflow-worker"]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "VSEARCH_")) and k != "PYTHONPATH"
    }
    env.update(container_env(worker, "airflow"))
    # Image paths -> this checkout; a private AIRFLOW_HOME.
    for key in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):
        env[key] = str(image_path_to_repo(env[key].rstrip("/") + "/", "airflow"))
    env["AIRFLOW_HOME"] = str(tmp / "home")
    env["PYTHONPATH"] = str(stack.ROOT)

    airflow_init = load_script("airflow_init")
    argvs = [
        stack.command_argv(s["command"])[1:]
        for s in ours(services, "airflow").values()
        if stack.command_argv(s["command"])[0] == "airflow"
    ]
    argvs += [
        step.argv[1:]
        for step in airflow_init.steps(
            {**env, **stack.environment(services["airflow-init"])}, str(tmp / "c.json")
        )
    ]
    argvs += [["jobs", "check", "--job-type", "TriggererJob", "--local"]]
    options = [
        key.lower().split("__")[1:]
        for s in ours(services, "airflow").values()
        for key in container_env(s, "airflow")
        if key.startswith("AIRFLOW__")
    ]
    request = tmp / "request.json"
    request.write_text(json.dumps({"argvs": argvs, "options": options}))
    result = tmp / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.deploy.airflow_probe", str(request), str(result)],
        cwd=stack.ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(result.read_text())


def test_every_airflow_command_exists_and_parses(airflow_probe: Any) -> None:
    results = airflow_probe["argv"]
    for sub in ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker"):
        assert any(argv.startswith(sub) for argv in results), f"no container runs airflow {sub}"
    for sub in ("db migrate", "users create", "connections import", "pools set"):
        assert any(argv.startswith(sub) for argv in results), f"airflow-init does not {sub}"
    bad = {argv: outcome for argv, outcome in results.items() if outcome != "ok"}
    assert not bad, bad


def test_the_executor_and_auth_manager_load(airflow_probe: Any) -> None:
    """Regression: celery 5.7 dropped celery.backends.database.retry, which the celery provider
    3.26 imports; the CLI still parsed, but the scheduler and the worker died at start."""
    components = airflow_probe["components"]
    assert components["executor"] == "ok: CeleryExecutor", components
    assert components["celery_app"].startswith("ok"), components
    assert components["auth_manager"] == "ok: FabAuthManager", components


def test_every_airflow_option_set_by_environment_exists(airflow_probe: Any) -> None:
    assert not airflow_probe["unknown_options"], airflow_probe["unknown_options"]


def test_the_dags_tasks_find_their_queues_pools_and_connection(
    airflow_probe: Any, services: dict[str, Any]
) -> None:
    dags = airflow_probe["dags"]
    assert not dags["import_errors"], dags["import_errors"]
    assert dags["dag_ids"], "the image's DAG folder has no DAG"
    workers = [
        stack.command_argv(s["command"])
        for s in services.values()
        if stack.command_argv(s.get("command", []))[:3] == ["airflow", "celery", "worker"]
    ]
    consumed = {q for argv in workers for q in argv[argv.index("--queues") + 1].split(",")}
    assert set(dags["queues"]) <= consumed, f"tasks on {dags['queues']}, workers on {consumed}"
    assert "gpu" in dags["queues"], "the GPU tasks are no longer on the gpu queue"
    airflow_init = load_script("airflow_init")
    assert set(dags["pools"]) <= {"default_pool", airflow_init.GPU_POOL}
    conn_ids = {airflow_init.DEFAULT_CONN_ID}
    assert set(dags["conn_ids"]) <= conn_ids
    assert airflow_probe["store_hook_conn_id"] in conn_ids
    logs = services["airflow-scheduler"]["environment"]["AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID"]
    assert logs in conn_ids
