"""docker/compose.yaml parses and wires: images, variables, start order, host names, volumes."""

from __future__ import annotations

import re
from graphlib import CycleError, TopologicalSorter
from typing import Any

import pytest

from tests.deploy import stack

OUR_TARGETS = {"service", "airflow"}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data = stack.compose()
    return dict(data["services"])


def active(services: dict[str, Any], profiles: set[str]) -> dict[str, Any]:
    return {
        n: s for n, s in services.items() if not s.get("profiles") or set(s["profiles"]) & profiles
    }


def test_every_image_is_built_here_or_pinned_to_a_version(services: dict[str, Any]) -> None:
    dockerfile = stack.dockerfile()
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = (stack.COMPOSE_FILE.parent / build["context"]).resolve()
            assert context == stack.ROOT, f"{name}: build context {context} is not the repo root"
            assert (context / build["dockerfile"]).resolve() == stack.DOCKERFILE, name
            assert build["target"] in dockerfile.stages, f"{name}: no stage {build['target']!r}"
            declared = dockerfile.args(build["target"])
            for arg in build.get("args", {}):
                assert arg in declared, f"{name}: build arg {arg} is not an ARG of the Dockerfile"
            assert build["args"]["VARIANT"] in ("cpu", "gpu"), name
            assert service.get("image"), f"{name}: a built image needs a name:tag to push"
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image!r} is not a version"
        if not build:
            # Third-party images: a release (postgres 16.10, redis 7.4.6), not a floating major.
            assert re.match(r"\d+\.\d+|RELEASE\.\d{4}-", tag), f"{name}: pin {image!r}"


def test_every_variable_has_a_value_in_env_example_or_a_default() -> None:
    example = stack.parse_env_file()
    for path in (stack.COMPOSE_FILE, *stack.OVERRIDES):
        for text in stack.all_strings(stack.raw_compose(path)):
            for use in stack.variable_uses(text):
                if use.op in (":-", "-"):
                    continue
                assert use.name in example, f"{path.name}: {use.text} not in .env.example"
                if use.op == ":?":
                    assert example[use.name], f"{use.text}: empty in .env.example"
    # And every file substitutes without an error.
    for path in (stack.COMPOSE_FILE, *stack.OVERRIDES):
        stack.compose(example, path)


def test_a_missing_secret_stops_compose_instead_of_starting_with_an_empty_one() -> None:
    env = stack.parse_env_file()
    for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "VSEARCH_API_KEY"):
        with pytest.raises(stack.InterpolationError, match=secret):
            stack.compose({**env, secret: ""})


def test_start_order_is_acyclic_and_each_condition_can_be_met(services: dict[str, Any]) -> None:
    dockerfile = stack.dockerfile()
    graph = {name: set(stack.depends_on(s)) for name, s in services.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:  # pragma: no cover - the message is the point
        pytest.fail(f"depends_on has a cycle: {e.args[1]}")
    assert set(order) == set(services)
    for name, service in services.items():
        for dep, condition in stack.depends_on(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            target = services[dep]
            assert not target.get("profiles") or set(target["profiles"]) <= set(
                service.get("profiles", [])
            ), f"{name} depends on {dep}, which only runs under a profile"
            if condition == "service_healthy":
                check = target.get("healthcheck", {})
                assert not check.get("disable"), f"{dep}: healthcheck disabled, {name} waits on it"
                has_own = bool(check.get("test"))
                build = target.get("build")
                from_image = build and dockerfile.last(build["target"], "HEALTHCHECK")
                assert has_own or from_image, f"{name} waits for {dep} healthy; it has no check"
            elif condition == "service_completed_successfully":
                assert target.get("restart", "no") in ("no", "on-failure"), (
                    f"{dep} is waited for to exit but restarts ({target.get('restart')})"
                )
            else:
                assert condition == "service_started", f"{name}: unknown condition {condition}"


def test_the_start_order_matches_what_each_component_needs(services: dict[str, Any]) -> None:
    def needs(name: str, dep: str, condition: str) -> None:
        assert dep in stack.dependency_closure(services, name), f"{name} starts before {dep}"
        direct = stack.depends_on(services[name]).get(dep)
        if direct is not None:
            assert direct == condition, f"{name} -> {dep}: {direct}, want {condition}"

    airflow = [n for n, s in services.items() if s.get("build", {}).get("target") == "airflow"]
    assert len(airflow) >= 7, airflow
    for name in airflow:
        if name != "airflow-init":
            # Nothing runs on an unmigrated database or without the connection and pool.
            needs(name, "airflow-init", "service_completed_successfully")
    for worker in ("airflow-worker", "airflow-worker-gpu"):
        # Task code talks to the api-server's Execution API.
        needs(worker, "airflow-api-server", "service_healthy")
    needs("airflow-init", "store-init", "service_completed_successfully")
    needs("query", "store-init", "service_completed_successfully")
    needs("query", "redis", "service_healthy")
    needs("proxy", "query", "service_healthy")


def test_a_service_starts_after_every_host_it_talks_to(services: dict[str, Any]) -> None:
    """A URL naming another service (redis://…@redis:6379, http://minio:9000) is a dependency,
    unless that service itself waits for this one (airflow-init runs before the api-server)."""
    names = "|".join(re.escape(n) for n in sorted(services, key=len, reverse=True))
    host = re.compile(rf"(?:@|//)({names})(?=[:/]|$)")
    for name, service in services.items():
        closure = stack.dependency_closure(services, name)
        texts = [*stack.environment(service).values(), *stack.all_strings(service.get("command"))]
        for text in texts:
            for other in host.findall(text):
                if other == name or name in stack.dependency_closure(services, other):
                    continue
                assert other in closure, f"{name} uses {other} ({text!r}) but may start first"


def test_every_queue_has_a_worker_with_and_without_the_gpu_profile() -> None:
    example = stack.parse_env_file()
    configurations = [
        (set(), example),  # .env.example as shipped: no GPU
        ({"gpu"}, {**example, "COMPOSE_PROFILES": "gpu", "AIRFLOW_WORKER_QUEUES": "default"}),
    ]
    for profiles, env in configurations:
        workers = active(stack.compose(env)["services"], profiles)
        queues: set[str] = set()
        for service in workers.values():
            argv = stack.command_argv(service.get("command", []))
            if argv[:3] == ["airflow", "celery", "worker"]:
                assert "--queues" in argv, f"{argv}: name the queues"
                queues |= set(argv[argv.index("--queues") + 1].split(","))
        assert {"default", "gpu"} <= queues, (profiles, queues)


def test_the_gpu_worker_reserves_an_nvidia_device_and_runs_the_gpu_image(
    services: dict[str, Any],
) -> None:
    gpu = services["airflow-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["VARIANT"] == "gpu" and gpu["image"].endswith("-gpu")
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    argv = stack.command_argv(gpu["command"])
    assert argv[argv.index("--queues") + 1] == "gpu"
    assert argv[argv.index("--concurrency") + 1] == "1"


def test_redis_config_asks_for_aof_appendfsync_always_and_noeviction(
    services: dict[str, Any],
) -> None:
    """The configuration the delta log's durability (issue #6) rests on: AOF on, fsync
    before each reply, no eviction, data on a volume. Only the compose file is read here;
    that acknowledged writes survive a Redis crash is exercised by docker/smoke.sh's
    "Redis crash (kill -9) and restart" phase (``redis_crash`` in docker/smoke.py), and
    writes in flight during a crash by the chaos run of issue #27."""
    argv = stack.command_argv(services["redis"]["command"])
    options = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(v.startswith("redis-data:/data") for v in services["redis"]["volumes"])


def test_volumes_are_declared_and_bind_mounts_exist() -> None:
    for path in (stack.COMPOSE_FILE, *stack.OVERRIDES):
        data = stack.compose(path=path)
        declared = set(stack.compose()["volumes"])
        for name, service in data["services"].items():
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith((".", "/")):
                    assert (path.parent / source).exists(), f"{path.name} {name}: {source}"
                else:
                    assert source in declared, f"{path.name} {name}: volume {source} undeclared"


def test_the_overrides_only_touch_services_that_exist() -> None:
    base = stack.compose()["services"]
    for path in stack.OVERRIDES:
        assert set(stack.compose(path=path)["services"]) <= set(base), path.name
    for name in stack.compose(path=stack.DEV_COMPOSE_FILE)["services"]:
        assert base[name]["build"]["target"] == "airflow", name


def test_a_remote_machine_reaches_every_hub_service_it_uses() -> None:
    """compose.remote.yaml maps each host name a remote container uses to the hub, and
    compose.hub.yaml publishes the port that container connects to."""
    env = stack.parse_env_file()
    base = stack.compose(env)["services"]
    remote = stack.compose(env, stack.REMOTE_COMPOSE_FILE)["services"]
    hub = stack.compose(env, stack.HUB_COMPOSE_FILE)["services"]
    names = "|".join(re.escape(n) for n in sorted(base, key=len, reverse=True))
    url = re.compile(rf"(?:@|//)({names}):(\d+)")
    assert {"airflow-worker", "airflow-worker-gpu", "query"} <= set(remote)
    for name, override in remote.items():
        mapped = dict(h.split(":", 1) for h in override["extra_hosts"])
        assert set(mapped.values()) == {env["HUB_ADDRESS"]}
        for text in stack.environment(base[name]).values():
            for host, port in url.findall(text):
                assert host in mapped, f"{name} on another machine cannot resolve {host}"
                published = [p.split(":") for p in hub[host]["ports"]]
                assert [env["HUB_ADDRESS"], port, port] in published, f"hub: {host}:{port}"


def test_published_ports_are_unique_and_bound_to_the_chosen_address(
    services: dict[str, Any],
) -> None:
    seen: dict[str, str] = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            address, host_port, _ = str(port).split(":")
            assert address == "127.0.0.1", f"{name}: {port} (PUBLISH_ADDRESS default)"
            assert host_port not in seen, (
                f"{name} and {seen.get(host_port)} both publish {host_port}"
            )
            seen[host_port] = name


def test_the_standins_replace_only_third_party_images() -> None:
    """docker/compose.standins.yaml swaps the images no registry here can give for locally
    built ones (docker/standins/) and nothing else of ours: what docker/smoke.sh runs is
    the production file."""
    base = stack.compose()["services"]
    standins = stack.compose(path=stack.STANDINS_COMPOSE_FILE)["services"]
    dockerfile = (stack.DOCKER / "standins" / "Dockerfile").read_text()
    for name, service in standins.items():
        assert "build" not in base[name], f"{name}: ours, built from docker/Dockerfile"
        image = service["image"]
        assert image.startswith("vsearch-standin/"), image
        assert f"vsearch-standin/{image.split('/')[1]}" in (
            stack.DOCKER / "standins" / "build.sh"
        ).read_text() or image.startswith("vsearch-standin/s3"), image
        assert set(service) <= {"image", "command", "ports", "healthcheck"}, name
    assert set(standins) == {"postgres", "redis", "minio", "proxy"}
    assert "FROM python AS s3" in dockerfile and "moto_server" in dockerfile


def test_haproxy_config_buffers_requests_and_retries_on_a_dropped_connection() -> None:
    """The configuration that lets HAProxy resend a request a dying replica dropped: it
    can only resend requests it buffered whole (and a large vector query must fit the
    buffer), and it must retry on connection failures and empty responses. Only
    haproxy.cfg is read here; the resending itself is exercised by docker/smoke.sh's
    replica-killed-under-load phase (``kill_replica_under_load`` in docker/smoke.py) and
    the chaos run of issue #27."""
    text = (stack.DOCKER / "haproxy.cfg").read_text()
    lines = [" ".join(line.split("#", 1)[0].split()) for line in text.splitlines()]
    config = "\n".join(line for line in lines if line)  # directives only, no comments
    assert {"option http-buffer-request", "option redispatch"} <= set(lines)
    retry_on = re.search(r"^\s*retry-on (.+)$", config, re.M)
    assert retry_on and {"conn-failure", "empty-response"} <= set(retry_on.group(1).split())
    bufsize = re.search(r"tune\.bufsize (\d+)", config)
    assert bufsize and int(bufsize.group(1)) >= 8192 * 12  # a 8192-d vector query as JSON
