"""docker-compose.yml and docker/Dockerfile, checked without Docker: the compose file against the Compose
Specification's own JSON schema (as vendored by check-jsonschema), and the properties a user relies on.
`docker compose config` checks it too where the docker CLI has the compose plugin."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib import resources
from typing import Any

import jsonschema
import pytest
import typer.main
import yaml

from orchestrator.interfaces.cli import app
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SETTINGS = {"REDIS_PASSWORD": "pw123", "FLOWER_BASIC_AUTH": "watcher:pw456"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert problems == []
    assert set(compose()["services"]) == {"redis", "sim-llm", "worker", "flower", "orchestrator"}


def test_redis_keeps_every_vote_never_evicts_one_and_says_when_it_is_up() -> None:
    redis = service("redis")
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert "--requirepass" in command and "${REDIS_PASSWORD" in redis["environment"]["REDISCLI_AUTH"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+", redis["image"])  # pinned, not `latest`
    for name in ("worker", "flower", "orchestrator"):
        assert service(name)["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_workers_scale_and_flower_needs_a_login_from_the_environment() -> None:
    worker = service("worker")
    assert "container_name" not in worker and "ports" not in worker  # so `--scale worker=N` can start N
    assert worker["environment"]["MAKER_TASK_EVENTS"] == "true"
    assert worker["command"][:5] == ["celery", "-A", "maker_workers.celery_app", "worker", "--pool"]
    flower = service("flower")
    assert flower["command"][:2] == ["maker", "flower"] and "0.0.0.0" in flower["command"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", flower["environment"]["MAKER_FLOWER_BASIC_AUTH"])
    assert "job" in service("orchestrator")["profiles"]  # a job is run on demand, not at `up`


def test_every_maker_command_in_the_compose_file_exists_with_its_options() -> None:
    cli = typer.main.get_command(app)
    commands = [spec["command"] for spec in compose()["services"].values() if spec.get("command", [""])[0] == "maker"]
    assert len(commands) == 3
    for argv in commands:
        command, words = cli, argv[1:]
        while hasattr(command, "commands"):  # a group: the next word names its subcommand
            command, words = command.commands[words[0]], words[1:]
        known = {flag for param in command.params for flag in param.opts}
        assert {word for word in words if word.startswith("--")} <= known, argv


def test_the_image_is_built_from_a_pinned_slim_python_and_runs_as_a_user() -> None:
    lines = [line.split(maxsplit=1) for line in DOCKERFILE.read_text().splitlines() if line and line[0] != "#"]
    bases = [rest for word, rest in lines if word == "FROM"]
    assert len(bases) == 1 and re.fullmatch(r"python:3\.\d+\.\d+-slim", bases[0])  # a patch release, not a moving tag
    users = [rest for word, rest in lines if word == "USER"]
    assert users and users[-1] not in ("root", "0")


def _compose_cli() -> list[str] | None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        found = shutil.which(argv[0]) and subprocess.run([*argv, "version"], capture_output=True, timeout=30)
        if found and found.returncode == 0:
            return argv
    return None


def test_docker_compose_accepts_the_file_and_refuses_a_blank_password() -> None:
    argv = _compose_cli()
    if argv is None:
        pytest.skip("no `docker compose` (plugin) nor `docker-compose` here")
    checked = subprocess.run(
        [*argv, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=os.environ | SETTINGS,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    bare = {name: value for name, value in os.environ.items() if name not in SETTINGS}
    unset = subprocess.run(
        [*argv, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, env=bare, timeout=60
    )
    assert unset.returncode != 0 and "set REDIS_PASSWORD" in unset.stderr  # no cluster with a blank password
