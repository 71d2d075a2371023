"""docker/Dockerfile installs what pyproject.toml and constraints.txt say, in cache-friendly
layers, as a non-root user, with a health check per target."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from tests.deploy import stack

TARGETS = ("service", "airflow")
SOURCE_DIRS = ("vsearch/", "service/", "dags/", "plugins/")


def pip_installs(run: str) -> list[list[str]]:
    """Every ``pip install`` command in a RUN line, as argv after ``install``."""
    commands = []
    for part in re.split(r"&&|;|\|\||\bthen\b|\belse\b|\bfi\b|\)\s*|;;", run):
        words = shlex.split(part.replace("$(", "( "), posix=True) if part.strip() else []
        if "pip" in words and "install" in words[words.index("pip") :]:
            i = words.index("install", words.index("pip"))
            commands.append(words[i + 1 :])
    return commands


def test_the_base_image_is_a_pinned_python_the_project_supports() -> None:
    dockerfile = stack.dockerfile()
    first = next(iter(dockerfile.stages.values()))
    image = first.base
    if image.startswith("${"):
        image = dockerfile.global_args[image.strip("${}")]
    m = re.fullmatch(r"python:(3)\.(\d+)\.(\d+)-slim-bookworm(@sha256:[0-9a-f]{64})?", image)
    assert m, f"base image {image!r}: python:3.X.Y-slim-bookworm, a patch release"
    spec = stack.pyproject()["project"]["requires-python"]
    from packaging.specifiers import SpecifierSet

    assert f"{m.group(1)}.{m.group(2)}.{m.group(3)}" in SpecifierSet(spec)


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_runs_as_a_non_root_user_with_a_healthcheck(target: str) -> None:
    dockerfile = stack.dockerfile()
    user = dockerfile.last(target, "USER")
    assert user and user.args.split(":")[0] not in ("root", "0"), f"{target}: USER {user}"
    runs_after_user = [i for i in dockerfile.instructions(target, "RUN") if i.line > user.line]
    assert not runs_after_user, f"{target}: RUN after USER {runs_after_user}"
    check = dockerfile.last(target, "HEALTHCHECK")
    assert check and "CMD" in check.args, f"{target}: no HEALTHCHECK"
    assert dockerfile.last(target, "CMD"), f"{target}: no CMD"


@pytest.mark.parametrize("target", TARGETS)
def test_pip_installs_use_constraints_and_name_existing_extras(target: str) -> None:
    extras_known = set(stack.pyproject()["project"]["optional-dependencies"])
    runs = [i.args for i in stack.dockerfile().instructions(target, "RUN")]
    project_installs = 0
    for run in runs:
        for argv in pip_installs(run):
            positional = [a for a in argv if not a.startswith("-") and "INDEX_URL" not in a]
            if positional == ["torch==$TORCH_VERSION"] or "--force-reinstall" in argv:
                continue  # torch alone (checked below) and the faiss-gpu swap (pins from pyproject)
            assert "-c" in argv and argv[argv.index("-c") + 1] == "constraints.txt", argv
            for word in argv:
                m = re.fullmatch(r"\.(?:\[([a-z0-9_,-]+)\])?", word)
                if m:
                    project_installs += 1
                    extras = set((m.group(1) or "").split(",")) - {""}
                    assert extras <= extras_known, f"{word}: pyproject has {sorted(extras_known)}"
                    if target == "airflow":
                        assert "airflow" in extras, f"{target}: {word} without the airflow extra"
    # One install per variant (cpu, gpu).
    assert project_installs == 2, f"{target}: {project_installs} project installs"


def test_torch_is_installed_first_alone_and_pinned_like_pyproject() -> None:
    dockerfile = stack.dockerfile()
    version = dockerfile.args("service")["TORCH_VERSION"]
    deps = [Requirement(r) for r in stack.pyproject()["project"]["dependencies"]]
    torch = next(r for r in deps if r.name == "torch")
    assert str(torch.specifier) == f"=={version}"
    assert stack.constraints()["torch"] == version
    for target in TARGETS:
        installs = [
            argv for i in dockerfile.instructions(target, "RUN") for argv in pip_installs(i.args)
        ]
        first_two = installs[:2]  # the cpu and the gpu branch of one RUN
        for argv in first_two:
            assert [a for a in argv if not a.startswith("-") and "index" not in a] in (
                ["torch==$TORCH_VERSION"],
                ["$TORCH_CPU_INDEX_URL", "torch==$TORCH_VERSION"],
            ), argv


@pytest.mark.parametrize("target", TARGETS)
def test_dependencies_are_installed_before_the_source_is_copied(target: str) -> None:
    dockerfile = stack.dockerfile()
    instructions = dockerfile.instructions(target)
    deps_layer = next(
        i
        for i in instructions
        if i.keyword == "RUN" and "pip install -c constraints.txt -r" in i.args
    )
    manifests = next(i for i in instructions if i.keyword == "COPY" and "pyproject.toml" in i.args)
    assert "constraints.txt" in manifests.args and manifests.line < deps_layer.line
    for i in instructions:
        if i.keyword == "COPY" and any(i.args.startswith(d) for d in SOURCE_DIRS):
            assert i.line > deps_layer.line, f"line {i.line}: {i.args} before the dependencies"


@pytest.mark.parametrize("target", TARGETS)
def test_everything_copied_exists_and_is_in_the_build_context(target: str) -> None:
    patterns = stack.dockerignore_patterns()
    for sources, _ in stack.dockerfile().copies(target):
        for source in sources:
            assert (stack.ROOT / source).exists(), source
            assert not stack.is_ignored(source.rstrip("/"), patterns), f"{source} is ignored"


def test_the_build_context_leaves_out_the_virtualenv_git_and_secrets() -> None:
    patterns = stack.dockerignore_patterns()
    for path in (".venv/bin/python", ".git/HEAD", "docker/.env", "vsearch/__pycache__/x.pyc"):
        assert stack.is_ignored(path, patterns), path
    for path in ("vsearch/config.py", "dags/README.md", "docker/scripts/healthcheck.py"):
        assert not stack.is_ignored(path, patterns), path


def test_pyproject_deps_prints_the_declared_requirements() -> None:
    script = stack.DOCKER / "scripts" / "pyproject_deps.py"
    project = stack.pyproject()["project"]

    def run(*args: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, str(script), str(stack.ROOT / "pyproject.toml"), *args],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.splitlines()

    optional = project["optional-dependencies"]
    assert run() == project["dependencies"]
    assert run("airflow", "gpu") == project["dependencies"] + optional["airflow"] + optional["gpu"]
    assert run("--only", "gpu") == optional["gpu"]
    assert any(r.startswith("faiss-gpu") for r in run("--only", "gpu"))
    done = subprocess.run(
        [sys.executable, str(script), str(stack.ROOT / "pyproject.toml"), "nosuch"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0 and "unknown extra" in done.stderr


@pytest.mark.parametrize("extra", ["airflow", "gpu"])
def test_every_requirement_the_images_install_is_pinned(extra: str) -> None:
    """Exactly in pyproject, or in constraints.txt: the container gets what CI tested."""
    pins = stack.constraints()
    project = stack.pyproject()["project"]
    for line in [*project["dependencies"], *project["optional-dependencies"][extra]]:
        req = Requirement(line)
        exact = len(req.specifier) == 1 and next(iter(req.specifier)).operator == "=="
        assert exact or stack.normalize(req.name) in pins, f"{line}: not pinned in constraints.txt"


def test_the_airflow_extra_has_what_the_compose_configuration_uses() -> None:
    """CeleryExecutor, the FAB auth manager and a Postgres metadata DB each need a provider."""
    names = {
        stack.normalize(Requirement(r).name)
        for r in stack.pyproject()["project"]["optional-dependencies"]["airflow"]
    }
    env = stack.compose()["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].startswith("airflow.providers.fab.")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    needed = {
        "apache-airflow-providers-celery",
        "apache-airflow-providers-fab",
        "apache-airflow-providers-postgres",
    }
    assert needed <= names, f"pyproject [airflow] extra lacks {sorted(needed - names)}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_stage_that_runs_pip_can_install_from_a_wheelhouse(target: str) -> None:
    """``--build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=URL`` reach every pip call
    (docker/standins/build.sh builds this way, with no index and no TLS): an ARG is an
    environment variable of the RUNs after it in its own stage only."""
    for stage in stack.dockerfile().chain(target):
        runs = [i for i in stage.instructions if i.keyword == "RUN" and "pip install" in i.args]
        if not runs:
            continue
        declared = {i.args.split("=")[0].strip(): i.line for i in stage.instructions
                    if i.keyword == "ARG"}  # fmt: skip
        for name in ("PIP_NO_INDEX", "PIP_FIND_LINKS"):
            assert name in declared and declared[name] < runs[0].line, (stage.name, name)
