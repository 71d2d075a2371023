"""Read docker/ as Docker would: the compose file with its variables, the Dockerfile's stages.

No Docker engine runs here, so the deployment tests read the files the way Compose and
BuildKit do (the parts of their rules this project uses) and check that they fit together.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DEV_COMPOSE_FILE = DOCKER / "compose.dev.yaml"
HUB_COMPOSE_FILE = DOCKER / "compose.hub.yaml"
REMOTE_COMPOSE_FILE = DOCKER / "compose.remote.yaml"
STANDINS_COMPOSE_FILE = DOCKER / "compose.standins.yaml"
OVERRIDES = (DEV_COMPOSE_FILE, HUB_COMPOSE_FILE, REMOTE_COMPOSE_FILE, STANDINS_COMPOSE_FILE)
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"

# $$, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}, ${NAME:+x}, $NAME
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


@dataclass(frozen=True)
class VariableUse:
    name: str
    op: str | None  # None for ${NAME} and $NAME
    text: str


def parse_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    return parse_env_file_text(path.read_text(), str(path))


def parse_env_file_text(text: str, path: str = "<env>") -> dict[str, str]:
    """KEY=VALUE lines (Compose's .env): comments and blank lines skipped, quotes removed."""
    env: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path}:{n}: not KEY=VALUE: {line!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def variable_uses(text: str) -> list[VariableUse]:
    uses = []
    for m in _VARIABLE.finditer(text):
        if m.group("escaped"):
            continue
        name = m.group("braced") or m.group("plain")
        uses.append(VariableUse(name, m.group("op"), m.group(0)))
    return uses


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's substitution; an unset variable with no default is an error here."""

    def substitute(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("plain")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise InterpolationError(f"{m.group(0)}: {name} is required: {arg}")
        if value is None:
            raise InterpolationError(f"{m.group(0)}: {name} is not set and has no default")
        return value

    return _VARIABLE.sub(substitute, text)


def _walk_strings(node: Any, fn: Any) -> Any:
    if isinstance(node, dict):
        return {k: _walk_strings(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk_strings(v, fn) for v in node]
    if isinstance(node, str):
        return fn(node)
    return node


class _ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags: ``!override`` and ``!reset`` read as their value."""


for _tag in ("!override", "!reset"):
    _ComposeLoader.add_constructor(
        _tag,
        lambda loader, node: (
            loader.construct_sequence(node)
            if isinstance(node, yaml.SequenceNode)
            else loader.construct_mapping(node)
            if isinstance(node, yaml.MappingNode)
            else loader.construct_scalar(node)
        ),
    )


@cache
def raw_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as YAML (anchors and merge keys applied), variables not substituted."""
    data = yaml.load(path.read_text(), Loader=_ComposeLoader)  # a SafeLoader subclass
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def compose(env: dict[str, str] | None = None, path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file with variables substituted from ``env`` (default: .env.example)."""
    env = parse_env_file() if env is None else env
    data = _walk_strings(raw_compose(path), lambda s: interpolate(s, env))
    assert isinstance(data, dict)
    return data


def all_strings(node: Any) -> list[str]:
    found: list[str] = []
    _walk_strings(node, lambda s: found.append(s) or s)
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (Compose accepts a list of KEY=VALUE too)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """{dependency: condition}; the short list form means service_started."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def dependency_closure(services: dict[str, Any], name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(depends_on(services[name]))
    while stack:
        dep = stack.pop()
        if dep not in seen:
            seen.add(dep)
            stack.extend(depends_on(services.get(dep, {})))
    return seen


def command_argv(command: Any) -> list[str]:
    if isinstance(command, list):
        return [str(a) for a in command]
    return shlex.split(str(command))


# --- Dockerfile ------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str
    base: str  # an image reference, or the name of an earlier stage
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]

    def chain(self, target: str) -> list[Stage]:
        """The stages a target is built from, first (an image) to last (the target)."""
        stages = []
        name: str | None = target
        while name in self.stages:
            stage = self.stages[name]
            stages.insert(0, stage)
            name = stage.base
        return stages

    def instructions(self, target: str, keyword: str | None = None) -> list[Instruction]:
        found = [i for s in self.chain(target) for i in s.instructions]
        return [i for i in found if keyword is None or i.keyword == keyword]

    def args(self, target: str) -> dict[str, str]:
        """ARG defaults visible in the target (global ARGs plus the stages' own)."""
        values = dict(self.global_args)
        for i in self.instructions(target, "ARG"):
            name, _, default = i.args.partition("=")
            values.setdefault(name.strip(), default.strip())
            if default:
                values[name.strip()] = default.strip()
        return values

    def env(self, target: str) -> dict[str, str]:
        values: dict[str, str] = {}
        for i in self.instructions(target, "ENV"):
            for token in shlex.split(i.args):
                key, _, value = token.partition("=")
                values[key] = value
        return values

    def copies(self, target: str) -> list[tuple[list[str], str]]:
        """(sources, destination) of every COPY without --from in the target's chain."""
        result = []
        for i in self.instructions(target, "COPY"):
            parts = [p for p in shlex.split(i.args) if not p.startswith("--")]
            result.append((parts[:-1], parts[-1]))
        return result

    def last(self, target: str, keyword: str) -> Instruction | None:
        found = self.instructions(target, keyword)
        return found[-1] if found else None


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buffer, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") and not buffer:
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if not buffer:
            start = n
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        if buffer.strip():
            lines.append((start, buffer.strip()))
        buffer = ""
    return lines


@cache
def dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for n, line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            base = words[0]
            name = (
                words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"stage{len(stages)}"
            )
            current = Stage(name, base)
            stages[name] = current
        elif current is None:
            if keyword == "ARG":
                key, _, default = args.partition("=")
                global_args[key.strip()] = default.strip()
        else:
            current.instructions.append(Instruction(keyword, args, n))
    return Dockerfile(global_args, stages)


def dockerignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def is_ignored(relpath: str, patterns: list[str]) -> bool:
    """Whether a context path, or a folder above it, matches a pattern (no ``!`` rules here)."""
    parts = PurePosixPath(relpath).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.strip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(
                prefix.rsplit("/", 1)[-1], pattern[3:]
            ):
                return True
    return False


@cache
def pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def constraints() -> dict[str, str]:
    """{normalized name: version} from constraints.txt."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins[normalize(name)] = version.strip()
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
