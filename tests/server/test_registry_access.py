"""Which registry integrations a build's task carries to its runner, and in what form: the default one, those its
YAML names and those its images live in; every one for YAML from the repository; never another account's."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from outpost.containers.images import domain_of
from outpost.containers.registries import References, references
from outpost.pipelines.parsing import load_pipeline
from outpost.server.models import Integration
from outpost.wire import RegistryAccess
from tests.server.test_protocol import claim
from tests.stack import Stack

pytestmark = pytest.mark.timeout(60)

PIPELINE = """version: '1.0'
hooks:
  on_finish:
    exec:
      image: hooks.corp/tools/notify:1
      commands: [echo done]
steps:
  build:
    type: build
    image_name: acme/app
    registry: ${{PUSH_TO}}
    registry_contexts: [ctx]
  push:
    type: push
    candidate: ${{build}}
    registry_context: ${{PULL_FROM}}
  test:
    image: ${{MIRROR}}/python:3
    commands: [echo test]
  compose:
    type: composition
    composition:
      version: '2'
      services:
        db:
          image: LOCALHOST:5000/postgres:16
    composition_candidates:
      sut:
        image: alpine
        command: echo sut
"""


async def add(stack: Stack, token: str | None = None, **body: Any) -> None:
    r = await stack.api("POST", "/integrations", token=token, json={"kind": "registry", **body})
    assert r.status_code == 201, r.text


def test_a_pipeline_refers_to_registries_by_name_and_through_the_domains_of_its_images() -> None:
    pipeline = load_pipeline(PIPELINE)
    found = references(pipeline, {"PUSH_TO": "pushed", "MIRROR": "Mirror.corp:5000"})
    assert found == References(
        names=frozenset({"pushed", "ctx"}),  # PULL_FROM is unknown: left out, not sent as `${{PULL_FROM}}`
        domains=frozenset({"hooks.corp", "mirror.corp:5000", "localhost:5000", "docker.io"}),
    )


@pytest.mark.parametrize(
    ("reference", "domain"),
    [
        ("alpine", "docker.io"),
        ("library/alpine:3", "docker.io"),
        ("index.docker.io/library/alpine", "docker.io"),
        ("reg.corp/team/app:1", "reg.corp"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000"),
        ("localhost/busybox:1", "localhost"),
        ("reg.corp:5000/app@sha256:0123", "reg.corp:5000"),
    ],
)
def test_the_domain_of_an_image_reference_is_read_as_docker_reads_it(reference: str, domain: str) -> None:
    assert domain_of(reference) == domain


async def test_a_build_gets_the_default_registry_the_named_ones_and_those_its_images_live_in(stack: Stack) -> None:
    await add(stack, name="main", domain="main.corp", username="ci", password="main-pw-1")  # the first: default
    await add(stack, name="pushed", domain="pushed.corp", username="ci", password="pushed-pw")
    await add(stack, name="ctx", domain="ctx.corp", username="ci", runner_secret="CTX_PW")
    await add(stack, name="pulled", domain="pulled.corp", password="pulled-pw")
    await add(stack, name="hooks", domain="hooks.corp", password="hooks-pw", behind_firewall=True)
    await add(stack, name="mirror", domain="mirror.corp:5000", password="mirror-pw", insecure=True)
    await add(stack, name="local", domain="localhost:5000")
    await add(stack, name="hub", domain="index.docker.io", username="me", password="hub-pw")
    await add(stack, name="unused", domain="unused.corp", password="unused-pw")
    await stack.pipeline(
        "app", PIPELINE, variables={"PUSH_TO": "pushed", "MIRROR": "mirror.corp:5000"}, secrets={"PULL_FROM": "pulled"}
    )
    runner = await stack.register()
    await stack.run("app")

    task = await claim(stack, runner.runner_token)

    assert set(task.registries) == {"main", "pushed", "ctx", "pulled", "hooks", "mirror", "local", "hub"}
    assert task.registries["main"] == RegistryAccess(
        name="main", domain="main.corp", username="ci", password="main-pw-1", is_default=True
    )
    assert task.registries["ctx"] == RegistryAccess(
        name="ctx", domain="ctx.corp", username="ci", runner_secret="CTX_PW"
    )
    assert task.registries["mirror"].insecure
    assert task.registries["hooks"].behind_firewall
    assert task.registries["local"].password is None
    assert not task.registries["pushed"].is_default


async def test_a_registry_password_is_sealed_at_rest_and_opened_only_for_the_runner(stack: Stack) -> None:
    await add(stack, name="corp", domain="reg.corp", username="ci", password="s3cr3t-Reg-pw")
    async with stack.services.tx() as session:
        row = await session.scalar(select(Integration).where(Integration.name == "corp"))
        assert row is not None
        assert row.secret is not None
        assert "s3cr3t-Reg-pw" not in row.secret
    shown = await stack.api("GET", "/integrations/registry/corp")
    assert "s3cr3t-Reg-pw" not in shown.text
    await stack.pipeline("app", "version: '1.0'\nsteps:\n  hi:\n    image: alpine\n    commands: [echo hi]\n")
    runner = await stack.register()
    await stack.run("app")
    task = await claim(stack, runner.runner_token)
    assert task.registries["corp"].password == "s3cr3t-Reg-pw"  # the default one, opened for the runner


async def test_a_build_never_gets_another_accounts_registries(stack: Stack) -> None:
    acme = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]
    await stack.api("POST", "/runtimes", token=acme, json={"name": "local"})
    await add(stack, token=acme, name="pushed", domain="acme.corp", password="acme-pw")  # acme's default
    await add(stack, token=acme, name="mirror", domain="mirror.corp:5000", password="acme-mirror-pw")
    await add(stack, name="pushed", domain="pushed.corp", password="mine-pw")
    await stack.pipeline("app", PIPELINE, variables={"PUSH_TO": "pushed", "MIRROR": "mirror.corp:5000"})
    await stack.pipeline("app", PIPELINE, token=acme, variables={"PUSH_TO": "pushed", "MIRROR": "nowhere.corp"})
    mine, theirs = await stack.register(), await stack.register(token=acme)
    await stack.run("app")
    await stack.run("app", token=acme)

    task = await claim(stack, mine.runner_token)
    assert {n: (a.domain, a.password) for n, a in task.registries.items()} == {"pushed": ("pushed.corp", "mine-pw")}
    task = await claim(stack, theirs.runner_token)
    assert {n: (a.domain, a.password) for n, a in task.registries.items()} == {"pushed": ("acme.corp", "acme-pw")}


async def test_a_build_whose_yaml_is_in_the_repository_gets_every_registry_of_its_account(stack: Stack) -> None:
    git = {"kind": "git", "name": "corp", "url": "https://git.corp", "password": "git-pw"}
    assert (await stack.api("POST", "/integrations", json=git)).status_code == 201
    await add(stack, name="main", domain="main.corp", password="main-pw")
    await add(stack, name="other", domain="other.corp", runner_secret="OTHER_PW", behind_firewall=True)
    acme = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]
    await add(stack, token=acme, name="theirs", domain="their.corp", password="their-pw")
    r = await stack.api("POST", "/pipelines", json={"name": "app", "repo": "acme/app"})
    assert r.status_code == 201, r.text
    runner = await stack.register()
    await stack.run("app")
    task = await claim(stack, runner.runner_token)
    assert task.yaml == ""
    assert task.source is not None
    assert set(task.registries) == {"main", "other"}
    assert (task.registries["other"].password, task.registries["other"].runner_secret) == (None, "OTHER_PW")


async def test_a_build_with_no_registry_integrations_gets_none(stack: Stack) -> None:
    await stack.pipeline("app", PIPELINE)
    runner = await stack.register()
    await stack.run("app")
    assert (await claim(stack, runner.runner_token)).registries == {}
