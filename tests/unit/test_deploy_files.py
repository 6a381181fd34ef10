"""docker-compose.yml and the Dockerfile are valid and production-sane.

The compose file is checked by `docker compose config` where Compose v2 exists, and always
against the Compose specification's JSON schema (the copy check-jsonschema vendors), after
interpolating `${VAR:?...}` / `${VAR:-default}` as compose does. Its embedded NATS config
goes through the real `nats-server -t`. The production rules (restart policies,
healthchecks, no published database port, no default passwords, ...) are asserted here.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agentledger.infra.nats_server import find_nats_server

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"

# What a user must set; the NATS password has digits and spaces (quoting must hold).
ENV = {"POSTGRES_PASSWORD": "0f3a9c1d2e", "AGENTLEDGER_NATS_PASSWORD": "12 34 nats secret"}
REQUIRED = ("POSTGRES_PASSWORD", "AGENTLEDGER_NATS_PASSWORD")
APP_SERVICES = ("worker", "projector")
CATALOG_TARGET = "/app/catalog"
READYZ_CHECK = [
    "python",
    "-c",
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=3)",
]


# -- compose interpolation (https://compose-spec.io: "Interpolation") -------------------

_TEMPLATE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """One string as compose fills it in: `$$`, `$VAR`, `${VAR}` and `-`, `?`, `+` forms."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        if match["braced"] is None:
            raise InterpolationError(f"invalid interpolation format in {text!r}")
        name, op, arg = match["braced"], match["op"], match["arg"] or ""
        value = env.get(name)
        # `:-`, `:?`, `:+` treat an empty value as unset; `-`, `?`, `+` only a missing one.
        if value is None or (value == "" and (op or "").startswith(":")):
            value = None
        if op in ("-", ":-"):
            return interpolate(arg, env) if value is None else value
        if op in ("?", ":?"):
            if value is None:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value
        if op in ("+", ":+"):
            return "" if value is None else interpolate(arg, env)
        return value or ""

    return _TEMPLATE.sub(replace, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value of a parsed compose file (keys are not interpolated)."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def load_compose(env: Mapping[str, str] = ENV) -> dict[str, Any]:
    loaded: dict[str, Any] = interpolate_tree(raw_compose(), env)
    return loaded


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def binds_of(service: Mapping[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume, short or long syntax."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            yield volume.get("source", ""), volume["target"], bool(volume.get("read_only"))
        else:
            parts = volume.split(":")
            if len(parts) == 1:
                yield "", parts[0], False
            else:
                mode = parts[2].split(",") if len(parts) > 2 else []
                yield parts[0], parts[1], "ro" in mode


# -- validity -----------------------------------------------------------------------------


def _docker_compose() -> list[str] | None:
    """`docker compose` (the CLI plugin) or a standalone Compose v2 `docker-compose`."""
    candidates = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    for command in candidates:
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=60)
        version = re.search(r"version v?(\d+)\.", probe.stdout)
        if probe.returncode == 0 and version and int(version.group(1)) >= 2:  # not v1
            return command
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    compose = _docker_compose()
    if compose is None:
        pytest.skip("no Compose v2 CLI here; the schema test below covers the file")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTLEDGER_", "POSTGRES_"))}
    empty_env_file = tmp_path / "empty.env"  # ignore a developer's own .env
    empty_env_file.write_text("")
    command = [
        *compose,
        "--project-directory",
        str(REPO),
        "--env-file",
        str(empty_env_file),
        "-f",
        str(COMPOSE_FILE),
        "config",
        "-q",
    ]
    done = subprocess.run(command, env=base | ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in REQUIRED:
        env = base | {k: v for k, v in ENV.items() if k != name}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and name in done.stderr, done.stderr


def _compose_spec_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(
        vendor.joinpath("compose-spec.json").read_text(encoding="utf-8")
    )
    assert schema["$id"] == "compose_spec.json"  # the Compose specification's own schema
    return schema


def _schema_errors(document: Any) -> list[str]:
    schema = _compose_spec_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return sorted(
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator_class(schema).iter_errors(document)
    )


def test_compose_file_matches_the_compose_specification_schema() -> None:
    assert _schema_errors(load_compose()) == []


def test_the_schema_check_catches_a_mistake() -> None:
    broken = copy.deepcopy(load_compose())
    broken["services"]["worker"]["healthcheck"]["intervall"] = "5s"
    assert any("intervall" in error for error in _schema_errors(broken))


def test_compose_requires_the_passwords() -> None:
    for name in REQUIRED:
        with pytest.raises(InterpolationError, match=name):
            load_compose({k: v for k, v in ENV.items() if k != name})
        with pytest.raises(InterpolationError, match=name):
            load_compose(ENV | {name: ""})


def test_the_embedded_nats_config_is_valid_for_the_real_server(tmp_path: Path) -> None:
    compose = load_compose()
    content = compose["configs"]["nats-conf"]["content"]
    assert ENV["AGENTLEDGER_NATS_PASSWORD"] in content
    assert re.search(r"^\s*sync_interval:\s*always\s*$", content, re.MULTILINE)
    nats = compose["services"]["nats"]
    (mount,) = [c for c in nats["configs"] if c["source"] == "nats-conf"]
    assert nats["command"] == ["-c", mount["target"]]

    conf = tmp_path / "nats.conf"
    conf.write_text(content, encoding="utf-8")
    done = subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "is valid" in output


# -- production rules ---------------------------------------------------------------------


def test_every_service_restarts_and_has_a_healthcheck() -> None:
    services = load_compose()["services"]
    assert set(services) >= {"nats", "postgres", *APP_SERVICES}
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        healthcheck = service.get("healthcheck") or {}
        assert healthcheck.get("test") and not healthcheck.get("disable"), name
        assert "image" in service or "build" in service, name
    for name in APP_SERVICES:
        assert services[name]["healthcheck"]["test"] == ["CMD", *READYZ_CHECK], name
        for dependency in ("nats", "postgres"):
            condition = services[name]["depends_on"][dependency]["condition"]
            assert condition == "service_healthy", name


def test_no_database_port_and_nats_only_on_loopback() -> None:
    services = load_compose()["services"]
    assert "ports" not in services["postgres"]
    for name, service in services.items():
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                host_ip, target = port.get("host_ip"), str(port.get("target"))
            else:
                host_ip, target = str(port).split(":")[0], str(port).split(":")[-1]
            assert target != "5432", name
            # Published ports are for this host only (or behind an opt-in profile).
            assert host_ip == "127.0.0.1" or service.get("profiles"), (name, port)


def test_no_default_passwords() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "change-me" not in text
    secrets = re.findall(
        r"\$\{([A-Za-z0-9_]*(?:PASSWORD|SECRET|TOKEN|_KEY)[A-Za-z0-9_]*)([^}]*)\}", text
    )
    assert {name for name, _ in secrets} >= set(REQUIRED)
    for name, modifier in secrets:
        assert modifier.startswith((":?", "?")), f"${{{name}{modifier}}} has a default"
    compose = load_compose()
    postgres = environment_of(compose["services"]["postgres"])
    assert postgres["POSTGRES_PASSWORD"] == ENV["POSTGRES_PASSWORD"]
    for name in APP_SERVICES:
        env = environment_of(compose["services"][name])
        assert env["AGENTLEDGER_NATS_PASSWORD"] == ENV["AGENTLEDGER_NATS_PASSWORD"]
        assert f":{ENV['POSTGRES_PASSWORD']}@postgres:" in env["AGENTLEDGER_POSTGRES_DSN"]


def _nats_server_version() -> str:
    done = subprocess.run(
        [str(find_nats_server()), "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found = re.search(r"v(\d+\.\d+\.\d+)", done.stdout + done.stderr)
    assert found, done.stdout
    return found.group(1)


def test_the_nats_image_is_the_version_the_tests_run() -> None:
    image = load_compose()["services"]["nats"]["image"]
    tag = re.fullmatch(r"nats:(\d+\.\d+\.\d+)(-alpine[0-9.]*)?", image)
    assert tag, image
    assert tag.group(1) == _nats_server_version()


def test_worker_and_projector_share_one_image_built_once() -> None:
    services = load_compose()["services"]
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(images) == 1 and None not in images, images
    builders = [name for name in APP_SERVICES if "build" in services[name]]
    assert builders, "nothing builds the image"
    if len(builders) > 1:  # several `build:`s of one image only with pull_policy: build
        assert all(services[name].get("pull_policy") == "build" for name in builders)
    for name in builders:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (REPO / context / "Dockerfile").is_file()


def test_the_catalog_is_mounted_read_only_and_configurable() -> None:
    defaults = load_compose()["services"]
    custom_env = ENV | {
        "AGENTLEDGER_CATALOG_DIR": "/srv/agents",
        "AGENTLEDGER_CATALOG_FILE": "my.toml",
    }
    custom = load_compose(custom_env)["services"]
    for name in APP_SERVICES:
        for services, source, catalog in (
            (defaults, "./catalog", "example.toml"),
            (custom, "/srv/agents", "my.toml"),
        ):
            binds = [b for b in binds_of(services[name]) if b[1] == CATALOG_TARGET]
            assert binds == [(source, CATALOG_TARGET, True)], (name, binds)
            env = environment_of(services[name])
            assert env["AGENTLEDGER_CATALOG"] == f"{CATALOG_TARGET}/{catalog}"
            assert env["AGENTLEDGER_APP_DIR"] == CATALOG_TARGET
        assert (REPO / "catalog" / "example.toml").is_file()  # the default works


def test_worker_and_projector_environment() -> None:
    services = load_compose()["services"]
    for name in APP_SERVICES:
        env = environment_of(services[name])
        assert env["AGENTLEDGER_HTTP_PORT"] == "8080", name
        assert env["AGENTLEDGER_HTTP_HOST"] == "0.0.0.0", name
        assert env["AGENTLEDGER_LOG_FORMAT"] == "json", name
        assert env["AGENTLEDGER_DATA_DIR"] == "/var/lib/agentledger", name
        assert env["AGENTLEDGER_NATS_URL"] == "nats://nats:4222", name


# -- Dockerfile ---------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_installs_the_constraints_and_has_a_healthcheck() -> None:
    instructions = _dockerfile_instructions()
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    assert any(re.search(r"pip install .*-c constraints\.txt", run) for run in runs), runs

    env: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
    assert env["AGENTLEDGER_HTTP_PORT"] == "8080"
    assert env["AGENTLEDGER_HTTP_HOST"] == "0.0.0.0"
    assert env["AGENTLEDGER_DATA_DIR"].startswith("/")

    (healthcheck,) = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    _, _, command = healthcheck.partition(" CMD ")
    assert json.loads(command) == READYZ_CHECK

    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users[-1] == "nobody"


def test_dockerignore_keeps_git_and_local_data_out() -> None:
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".agentledger", ".env"} <= set(ignored)


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("path", "healthy"), [("/readyz", True), ("/not-ready", False)])
def test_the_healthcheck_command_fails_unless_ready(path: str, healthy: bool) -> None:
    # The same python one-liner, pointed at a local stub answering 200 or 503.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        code = READYZ_CHECK[2].replace("127.0.0.1:8080/readyz", f"127.0.0.1:{port}{path}")
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert (done.returncode == 0) is healthy, done.stderr
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
