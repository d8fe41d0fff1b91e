"""Registry integrations on the runner: the task's registries reach the build's context, and `Registries` turns them
into credentials, with runner-side secrets, deferring the error of a missing one until the registry
is used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from outpost.containers.auth import RegistryAuth
from outpost.containers.registries import Registries, RegistryError
from outpost.runner.job import BuildJob
from outpost.wire import RegistryAccess
from tests.server.test_protocol import claim
from tests.stack import Stack

pytestmark = pytest.mark.timeout(60)

RUNNER_SECRETS = {"CORP_REG": "from-the-runner-pw", "UNRELATED": "x"}


def access(name: str, domain: str, **extra: Any) -> RegistryAccess:
    return RegistryAccess(name=name, domain=domain, **extra)


TASK = {
    "hub": access("hub", "docker.io", username="me", password="hub-pw", is_default=True),
    "corp": access("corp", "reg.corp:5000", username="ci", runner_secret="CORP_REG", insecure=True),
    "broken": access("broken", "broken.corp", username="ci", runner_secret="NOT_ON_THIS_RUNNER"),
    "anon": access("anon", "mirror.corp"),
}


def test_runner_secrets_are_looked_up_and_the_insecure_flag_kept() -> None:
    registries = Registries(TASK, RUNNER_SECRETS)
    assert registries.get("corp") == RegistryAuth(
        domain="reg.corp:5000", username="ci", password="from-the-runner-pw", insecure=True, name="corp"
    )
    assert registries.get("hub") == RegistryAuth(domain="docker.io", username="me", password="hub-pw", name="hub")
    assert registries.get("anon") == RegistryAuth(domain="mirror.corp", name="anon")
    assert registries.default() == registries.get("hub")
    assert [a.name for a in registries.all()] == ["anon", "corp", "hub"]  # the usable ones
    assert registries.passwords() == {"hub-pw", "from-the-runner-pw"}  # what the build's logs must mask
    assert "pw" not in repr(registries.get("corp"))


def test_a_missing_runner_secret_fails_only_when_that_registry_is_used() -> None:
    registries = Registries(TASK, RUNNER_SECRETS)  # does not raise
    assert set(registries.problems) == {"broken"}
    broken_default = Registries({"broken": TASK["broken"].model_copy(update={"is_default": True})}, {})
    uses = (lambda: registries.get("broken"), lambda: registries.for_image("broken.corp/app:1"), broken_default.default)
    for use in uses:
        with pytest.raises(RegistryError) as caught:
            use()
        message = str(caught.value)
        assert "registry integration 'broken'" in message
        assert "runner secret 'NOT_ON_THIS_RUNNER'" in message
        assert "--secrets-file" in message


def test_an_image_finds_its_registry_by_domain_or_none() -> None:
    registries = Registries(TASK, RUNNER_SECRETS)
    assert registries.for_image("alpine:3") == registries.get("hub")
    assert registries.for_image("index.docker.io/library/alpine") == registries.get("hub")
    assert registries.for_image("REG.corp:5000/team/app:1") == registries.get("corp")
    assert registries.for_domain("reg.corp:5000") == registries.get("corp")
    assert registries.for_image("reg.corp/team/app:1") is None  # another port: another registry; pulled anonymously
    assert registries.for_image("localhost/busybox:1") is None


def test_among_registries_of_one_domain_the_default_then_a_usable_one_wins() -> None:
    same = {
        "a": access("a", "reg.corp", runner_secret="MISSING"),
        "b": access("b", "reg.corp", password="b-pw"),
        "c": access("c", "reg.corp", password="c-pw"),
    }
    assert Registries(same, {}).for_domain("reg.corp") == Registries(same, {}).get("b")
    same["c"] = access("c", "reg.corp", password="c-pw", is_default=True)
    assert Registries(same, {}).for_domain("reg.corp") == Registries(same, {}).get("c")
    with pytest.raises(RegistryError, match="runner secret 'MISSING'"):
        Registries({"a": same["a"]}, {}).for_domain("reg.corp")


def test_an_unknown_name_is_a_clear_error_and_no_default_is_none() -> None:
    registries = Registries({"anon": TASK["anon"]}, {})
    with pytest.raises(RegistryError, match="'elsewhere' is not available to this build"):
        registries.get("elsewhere")
    assert registries.default() is None
    assert Registries().all() == []


async def test_the_tasks_registries_reach_the_builds_context(stack: Stack, tmp_path: Path) -> None:
    body = {"kind": "registry", "name": "corp", "domain": "reg.corp", "username": "ci", "runner_secret": "CORP_REG"}
    assert (await stack.api("POST", "/integrations", json=body)).status_code == 201
    await stack.pipeline("app", "version: '1.0'\nsteps:\n  hi:\n    image: reg.corp/hi\n    commands: [echo]\n")
    runner = await stack.register()
    await stack.run("app")
    task = await claim(stack, runner.runner_token)
    async with stack.protocol() as client:
        job = BuildJob(
            task,
            client,
            folder=tmp_path / "build",
            executor="local",
            heartbeat_interval=1.0,
            max_chunk=1024,
            runner_secrets=RUNNER_SECRETS,
        )
    ctx = job.engine.ctx
    assert ctx.registries == task.registries
    assert set(ctx.registries) == {"corp"}
    assert Registries(ctx.registries, ctx.runner_secrets).passwords() == {"from-the-runner-pw"}
