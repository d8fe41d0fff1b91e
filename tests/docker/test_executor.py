"""The Docker executor through the engine, on a real Docker engine with a real registry: freestyle steps in their
images, build, push, compositions, services, cancel, and nothing left behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from outpost.engine import BuildContext, BuildEngine, BuildOutcome
from outpost.errors import ExecutorError
from outpost.executors import executor_class
from outpost.executors.docker import LABEL, DockerExecutor
from outpost.wire import RegistryAccess
from tests import containers
from tests.containers import Dockerd, Registry
from tests.engine.recorder import Recorder

dockerd, busybox_image, registry = containers.dockerd, containers.busybox_image, containers.registry

pytestmark = pytest.mark.timeout(180)

BB = containers.BUSYBOX_IMAGE


def access(reg: Registry, name: str = "corp", *, default: bool = True, password: str | None = None) -> RegistryAccess:
    return RegistryAccess(
        name=name,
        domain=reg.domain,
        username=reg.username,
        password=password or reg.password,
        is_default=default,
        behind_firewall=True,
    )


def make_engine(
    tmp_path: Path,
    engine: Dockerd,
    yaml: str,
    *,
    registries: dict[str, RegistryAccess] | None = None,
    builder: str = "docker",
    **ctx: object,
) -> tuple[BuildEngine, Recorder, str]:
    build_id = f"t{uuid.uuid4().hex[:10]}"
    context = BuildContext(
        build_id=build_id,
        account="acme",
        pipeline="demo",
        yaml=yaml,
        volume=tmp_path / "volume",
        scratch=tmp_path / "scratch",
        registries=registries or {},
        **ctx,  # type: ignore[arg-type]
    )
    options = {"docker_host": engine.host, "builder": builder, "buildah_root": str(tmp_path / "buildah")}
    executor = DockerExecutor(context.volume, context.scratch, build_id=build_id, options=options)
    recorder = Recorder()
    return BuildEngine(context, executor, recorder), recorder, build_id


async def run(tmp_path: Path, engine: Dockerd, yaml: str, **kw: object) -> tuple[BuildOutcome, Recorder, str]:
    built, recorder, build_id = make_engine(tmp_path, engine, yaml, **kw)  # type: ignore[arg-type]
    outcome = await built.run()
    assert engine.containers(f"{LABEL}={build_id}") == [], "containers left behind"
    assert engine.networks(f"{LABEL}={build_id}") == [], "networks left behind"
    return outcome, recorder, build_id


async def a_long_step_started(
    tmp_path: Path, engine: Dockerd, image: str
) -> tuple[BuildEngine, str, asyncio.Task[BuildOutcome]]:
    """A build whose one step has started a `sleep 300` in its container; the build runs in a task."""
    yaml = f"""
version: '1.0'
steps:
  long:
    image: {image}
    commands: [echo started, sleep 300]
"""
    built, rec, build_id = make_engine(tmp_path, engine, yaml)
    running = asyncio.create_task(built.run())
    async with asyncio.timeout(60):
        while "started" not in rec.text("long"):
            await asyncio.sleep(0.1)
    return built, build_id, running


def test_the_docker_executor_is_registered() -> None:
    assert executor_class("docker") is DockerExecutor


# --- freestyle steps --------------------------------------------------------------------------------------------


async def test_freestyle_steps_run_in_their_image_with_the_volume_and_exports(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str
) -> None:
    yaml = f"""
version: '1.0'
steps:
  write:
    image: {busybox_image}
    working_directory: work
    environment:
      - GREETING=hello world
    commands:
      - pwd
      - echo "$GREETING" > note.txt
      - echo "volume=$CF_VOLUME_PATH"
      - cf_export COLOR=blue
      - test -x /bin/busybox && echo "in busybox"
  read:
    image: {busybox_image}
    commands:
      - cat /codefresh/volume/work/note.txt
      - echo "color=$COLOR ${{{{COLOR}}}}"
      - echo "path=$PATH"
"""
    (tmp_path / "volume" / "work").mkdir(parents=True)
    outcome, rec, _ = await run(tmp_path, dockerd, yaml)
    assert outcome.status == "success", rec.logs
    write = rec.text("write")
    assert "/codefresh/volume/work\n" in write
    assert "volume=/codefresh/volume\n" in write
    assert "in busybox" in write
    assert (tmp_path / "volume" / "work" / "note.txt").read_text() == "hello world\n"
    read = rec.text("read")
    assert "hello world" in read
    assert "color=blue blue" in read
    # The runner's own PATH is not forced on the image: the image's PATH (plus cf_export's folder) is.
    assert "path=/usr/local/bin:/usr/bin:/bin:/codefresh/outpost/bin" in read


async def test_a_failing_command_fails_the_step_with_its_exit_code(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str
) -> None:
    yaml = f"""
version: '1.0'
steps:
  broken:
    image: {busybox_image}
    commands: [echo before, "exit 7", echo after]
"""
    outcome, rec, _ = await run(tmp_path, dockerd, yaml)
    assert outcome.status == "failure"
    assert rec.final("broken").exit_code == 7
    assert "before" in rec.text("broken")
    assert "after" not in rec.text("broken")


async def test_cmd_runs_the_image_program_and_volumes_mount_folders_of_the_volume(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str
) -> None:
    (tmp_path / "volume" / "data").mkdir(parents=True)
    (tmp_path / "volume" / "data" / "in.txt").write_text("from the volume\n")
    yaml = f"""
version: '1.0'
steps:
  mounted:
    image: {busybox_image}
    volumes: ['./data:/mnt/data:ro']
    cmd: [cat, /mnt/data/in.txt]
  escape:
    image: {busybox_image}
    volumes: ['../../etc:/mnt/etc']
    commands: [ls /mnt/etc]
"""
    outcome, rec, _ = await run(tmp_path, dockerd, yaml)
    assert "from the volume" in rec.text("mounted")
    assert rec.final("mounted").status == "success"
    assert rec.final("escape").status == "error"
    assert "leads out of the build volume" in (rec.final("escape").message or "")
    assert outcome.status == "failure"


async def test_cancel_stops_the_container_at_once_and_removes_everything(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str
) -> None:
    built, build_id, running = await a_long_step_started(tmp_path, dockerd, busybox_image)
    assert len(dockerd.containers(f"{LABEL}={build_id}")) == 1
    loop = asyncio.get_running_loop()
    began = loop.time()
    built.cancel("cancel requested")
    outcome = await asyncio.wait_for(running, 30)
    assert outcome.status == "terminated"
    assert loop.time() - began < 15
    assert dockerd.containers(f"{LABEL}={build_id}") == []
    assert dockerd.networks(f"{LABEL}={build_id}") == []


async def test_a_step_timeout_ends_its_container(tmp_path: Path, dockerd: Dockerd, busybox_image: str) -> None:
    yaml = f"""
version: '1.0'
steps:
  slow:
    image: {busybox_image}
    timeout: 2s
    commands: [sleep 300]
"""
    outcome, rec, _ = await run(tmp_path, dockerd, yaml)
    assert outcome.status == "failure"
    assert "timed out after 2s" in (rec.final("slow").message or "")


async def test_a_missing_image_is_an_error_that_names_it(tmp_path: Path, dockerd: Dockerd) -> None:
    yaml = """
version: '1.0'
steps:
  nowhere:
    image: localhost/does-not-exist:1
    commands: [true]
"""
    outcome, rec, _ = await run(tmp_path, dockerd, yaml)
    assert outcome.status == "failure"
    assert rec.final("nowhere").status == "error"
    assert "localhost/does-not-exist" in (rec.final("nowhere").message or "")


# --- images from a private registry -------------------------------------------------------------------------------


async def test_images_of_a_private_registry_are_pulled_with_its_integration(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str, registry: Registry
) -> None:
    private = f"{registry.domain}/base/busybox:{uuid.uuid4().hex[:8]}"
    dockerd.cli("tag", busybox_image, private)
    dockerd.api("POST", f"/images/{private}/push", headers={"X-Registry-Auth": registry.docker_auth_header()})
    assert registry.tags(private.split("/", 1)[1].rsplit(":", 1)[0])
    dockerd.cli("rmi", private)
    yaml = f"""
version: '1.0'
steps:
  pulled:
    image: {private}
    commands: [echo pulled and ran]
"""
    anonymous, rec, _ = await run(tmp_path / "a", dockerd, yaml)
    assert anonymous.status == "failure"
    assert rec.final("pulled").status == "error"
    outcome, rec, _ = await run(tmp_path / "b", dockerd, yaml, registries={"corp": access(registry)})
    assert outcome.status == "success", rec.logs
    assert "pulling " + private in rec.text("pulled")
    assert "pulled and ran" in rec.text("pulled")
    assert registry.password not in rec.text("pulled")


# --- build and push ------------------------------------------------------------------------------------------------


def dockerfile_app(tmp_path: Path, busybox: str) -> Path:
    app = tmp_path / "volume" / "app"
    app.mkdir(parents=True)
    (app / "Dockerfile").write_text(
        f"FROM {busybox}\nARG FLAVOUR=plain\nCOPY hello.sh /hello.sh\n"
        'RUN echo "flavour $FLAVOUR" > /flavour\nCMD ["/bin/sh", "/hello.sh"]\n'
    )
    (app / "hello.sh").write_text('echo "hello from the image: $(cat /flavour)"\n')
    return app


async def test_a_built_image_runs_in_later_steps_and_is_pushed_to_the_default_registry(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str, registry: Registry
) -> None:
    dockerfile_app(tmp_path, busybox_image)
    name = f"demo/app-{uuid.uuid4().hex[:6]}"
    yaml = f"""
version: '1.0'
steps:
  build_it:
    type: build
    image_name: {name}
    working_directory: ./app
    tags: [v1, Feature/X]
    build_arguments: [FLAVOUR=spicy]
  use_it:
    image: ${{{{build_it}}}}
    commands:
      - sh /hello.sh
      - echo "id ${{{{steps.build_it.imageId}}}} digest ${{{{steps.build_it.imageRepoDigest}}}}"
"""
    outcome, rec, _ = await run(tmp_path, dockerd, yaml, registries={"corp": access(registry)})
    assert outcome.status == "success", rec.logs
    assert "hello from the image: flavour spicy" in rec.text("use_it")
    assert registry.tags(name) == ["featurex", "v1"]
    digest = registry.digest(name, "v1")
    assert digest is not None
    assert f"digest {digest}" in rec.text("use_it")
    assert "id sha256:" in rec.text("use_it")
    assert registry.password not in "".join(rec.text(s) for s in rec.logs)


async def test_disable_push_keeps_the_image_on_the_runner_and_an_inline_dockerfile_builds(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str, registry: Registry
) -> None:
    (tmp_path / "volume").mkdir(parents=True)
    name = f"demo/inline-{uuid.uuid4().hex[:6]}"
    yaml = f"""
version: '1.0'
steps:
  build_it:
    type: build
    image_name: {name}
    tag: latest
    disable_push: true
    dockerfile:
      content: |
        FROM {busybox_image}
        RUN echo inline > /made
  check:
    image: ${{{{build_it}}}}
    commands: [cat /made]
"""
    outcome, rec, _ = await run(tmp_path, dockerd, yaml, registries={"corp": access(registry)})
    assert outcome.status == "success", rec.logs
    assert "inline" in rec.text("check")
    assert registry.tags(name) == []


async def test_a_failing_build_fails_the_step_with_the_builder_message(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str
) -> None:
    (tmp_path / "volume").mkdir(parents=True)
    yaml = f"""
version: '1.0'
steps:
  build_it:
    type: build
    image_name: demo/broken
    dockerfile:
      content: |
        FROM {busybox_image}
        RUN echo about to fail && exit 3
"""
    outcome, rec, _ = await run(tmp_path, dockerd, yaml)
    assert outcome.status == "failure"
    assert rec.final("build_it").status == "error"
    assert "about to fail" in rec.text("build_it")


async def test_a_push_step_pushes_a_candidate_under_its_tags_to_the_named_registry(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str, registry: Registry
) -> None:
    dockerfile_app(tmp_path, busybox_image)
    yaml = """
version: '1.0'
steps:
  build_it:
    type: build
    image_name: demo/pushed
    working_directory: ./app
    disable_push: true
  push_it:
    type: push
    candidate: ${{build_it}}
    registry: corp
    image_name: team/pushed
    tags: [one, two]
  report:
    image: ${{build_it}}
    commands: ['echo "pushed ${{steps.push_it.imageRepoDigest}} to ${{steps.push_it.registry}}"']
"""
    registries = {"corp": access(registry, default=False)}
    outcome, rec, _ = await run(tmp_path, dockerd, yaml, registries=registries)
    assert outcome.status == "success", rec.logs
    assert registry.tags("team/pushed") == ["one", "two"]
    digest = registry.digest("team/pushed", "two")
    assert f"pushed {digest} to corp" in rec.text("report")


async def test_a_push_with_wrong_credentials_fails_and_says_so(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str, registry: Registry
) -> None:
    dockerfile_app(tmp_path, busybox_image)
    yaml = """
version: '1.0'
steps:
  build_it:
    type: build
    image_name: demo/refused
    working_directory: ./app
"""
    wrong = {"corp": access(registry, password="not-the-password")}
    outcome, rec, _ = await run(tmp_path, dockerd, yaml, registries=wrong)
    assert outcome.status == "failure"
    message = rec.final("build_it").message or ""
    assert "auth" in message.lower() or "unauthorized" in message.lower()
    assert "not-the-password" not in rec.text("build_it")
    assert registry.tags("demo/refused") == []


# --- compositions and services ------------------------------------------------------------------------------------


async def test_a_composition_runs_its_candidate_against_a_service_by_name(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str
) -> None:
    (tmp_path / "volume").mkdir(parents=True)
    yaml = f"""
version: '1.0'
steps:
  integration:
    type: composition
    composition:
      version: '3'
      services:
        db:
          image: {busybox_image}
          command: sh -c 'while true; do echo "pong from ${{NAME}}" | nc -l -p 5432; done'
    composition_variables: [NAME=the-db]
    composition_candidates:
      tests:
        image: {busybox_image}
        command: sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do nc db 5432 </dev/null && exit 0; sleep 0.5; done; exit 1'
  failing:
    type: composition
    composition:
      services:
        idle:
          image: {busybox_image}
          command: sleep 300
          healthcheck: {{test: [CMD, "true"]}}
    composition_candidates:
      tests:
        image: {busybox_image}
        command: sh -c 'echo checking; exit 4'
"""
    outcome, rec, _ = await run(tmp_path, dockerd, yaml)
    text = rec.text("integration")
    assert "[tests] pong from the-db" in text, text
    assert rec.final("integration").status == "success"
    assert rec.final("failing").status == "failure"
    assert rec.final("failing").exit_code == 4
    assert "[tests] checking" in rec.text("failing")
    assert "healthcheck" in rec.text("failing")  # what the composition had that is not used is said
    assert outcome.status == "failure"


async def test_freestyle_services_wait_for_readiness_before_the_step(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str
) -> None:
    yaml = f"""
version: '1.0'
steps:
  with_service:
    image: {busybox_image}
    commands: ['wget -q -O - http://web:8080/index.html']
    services:
      composition:
        web:
          image: {busybox_image}
          command: sh -c 'sleep 2; mkdir -p /www; echo served > /www/index.html; httpd -f -p 8080 -h /www'
      readiness:
        image: {busybox_image}
        timeoutSeconds: 5
        periodSeconds: 1
        failureThreshold: 20
        commands: ['wget -q -O - http://web:8080/index.html']
"""
    outcome, rec, _ = await run(tmp_path, dockerd, yaml)
    assert outcome.status == "success", rec.logs
    text = rec.text("with_service")
    assert "services ready" in text
    assert text.rstrip().endswith("served")


# --- buildah ---------------------------------------------------------------------------------------------------------


async def test_buildah_builds_for_later_steps_and_pushes_without_the_engine(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str, registry: Registry
) -> None:
    containers.need_buildah()
    app = tmp_path / "volume" / "app"
    app.mkdir(parents=True)
    # buildah has its own storage: its base comes from scratch, like the engine's.
    (app / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (app / "busybox").chmod(0o755)
    (app / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "RUN echo daemonless > /made\n"
    )
    name = f"demo/buildah-{uuid.uuid4().hex[:6]}"
    yaml = f"""
version: '1.0'
steps:
  build_it:
    type: build
    image_name: {name}
    tag: v1
    working_directory: ./app
  run_it:
    image: ${{{{build_it}}}}
    commands: [cat /made]
"""
    insecure = access(registry).model_copy(update={"insecure": True})
    outcome, rec, _ = await run(tmp_path, dockerd, yaml, registries={"corp": insecure}, builder="buildah")
    assert outcome.status == "success", rec.logs
    assert "(buildah)" in rec.text("build_it")
    assert "daemonless" in rec.text("run_it")
    assert registry.digest(name, "v1") is not None


def test_after_a_crash_the_containers_and_network_of_the_build_are_removed(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str
) -> None:
    build_id = f"crashed{uuid.uuid4().hex[:8]}"
    network = f"outpost-{build_id}"
    dockerd.api("POST", "/networks/create", json={"Name": network, "Labels": {LABEL: build_id}})
    others = f"{LABEL}=someone-else"
    other = dockerd.cli("run", "-d", "--network", "host", "--label", others, busybox_image, "sleep", "300")
    dockerd.cli("run", "-d", "--network", network, "--label", f"{LABEL}={build_id}", busybox_image, "sleep", "300")
    try:
        assert len(dockerd.containers(f"{LABEL}={build_id}")) == 1
        DockerExecutor.after_crash(tmp_path, tmp_path, build_id, {"docker_host": dockerd.host})
        assert dockerd.containers(f"{LABEL}={build_id}") == []
        assert dockerd.networks(f"{LABEL}={build_id}") == []
        assert len(dockerd.containers(f"{LABEL}=someone-else")) == 1  # another build's container is left alone
    finally:
        dockerd.api("DELETE", f"/containers/{other.strip()}", params={"force": "1"})


def test_after_a_crash_an_unreachable_engine_is_an_executor_error(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="cannot remove the containers of build b1"):
        DockerExecutor.after_crash(tmp_path, tmp_path, "b1", {"docker_host": f"unix://{tmp_path}/missing.sock"})


def test_a_runner_without_a_reachable_engine_says_so_before_taking_builds(tmp_path: Path) -> None:
    missing = f"unix://{tmp_path}/docker.sock"
    command = [sys.executable, "-m", "outpost", "runner", "start", "--url", "http://127.0.0.1:9", "--token", "opi_x"]
    command += ["--executor", "docker", "--docker-host", missing, "--data-dir", str(tmp_path / "runner")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"cannot reach the Docker engine at {missing}" in done.stderr
    assert "is dockerd running?" in done.stderr


async def test_preflight_names_the_engine_and_the_builder(dockerd: Dockerd) -> None:
    said = await DockerExecutor.preflight({"docker_host": dockerd.host, "builder": "docker"})
    assert said is not None
    version = dockerd.api("GET", "/version").json()["Version"]
    assert said == f"Docker engine {version} at {dockerd.host}; images built by docker"


async def test_parallel_steps_run_in_containers_at_the_same_time_on_one_volume(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str
) -> None:
    # Each child waits for the other's mark: they pass only if both containers run at once.
    yaml = f"""
version: '1.0'
steps:
  both:
    type: parallel
    steps:
      left:
        image: {busybox_image}
        commands:
          - touch /codefresh/volume/left
          - for i in $(seq 1 100); do [ -e /codefresh/volume/right ] && exit 0; sleep 0.1; done; exit 1
      right:
        image: {busybox_image}
        commands:
          - touch /codefresh/volume/right
          - for i in $(seq 1 100); do [ -e /codefresh/volume/left ] && exit 0; sleep 0.1; done; exit 1
"""
    outcome, rec, _ = await run(tmp_path, dockerd, yaml)
    assert outcome.status == "success", rec.logs
    assert rec.final("left").status == rec.final("right").status == "success"


# --- pause and resume (a runner whose lease deadline passed) ------------------------------------------------------


async def test_a_paused_build_freezes_its_step_and_service_containers_and_resume_lets_them_finish(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str
) -> None:
    yaml = f"""
version: '1.0'
steps:
  chatty:
    image: {busybox_image}
    services:
      composition:
        db:
          image: {busybox_image}
          command: sleep 300
    commands:
      - 'for i in $(seq 1 40); do echo "line $i $(date +%s)"; sleep 0.05; done'
"""
    built, rec, build_id = make_engine(tmp_path, dockerd, yaml)
    running = asyncio.create_task(built.run())
    async with asyncio.timeout(60):
        while "line 3 " not in rec.text("chatty"):
            await asyncio.sleep(0.05)

    assert await built.executor.pause()
    assert [c["State"] for c in dockerd.containers(f"{LABEL}={build_id}")] == ["paused", "paused"]
    printed = rec.text("chatty")
    await asyncio.sleep(2.0)
    assert rec.text("chatty") == printed  # nothing ran while paused
    await built.executor.resume()

    outcome = await asyncio.wait_for(running, 60)
    assert outcome.status == "success", outcome
    lines = [line for line in rec.text("chatty").splitlines() if line.startswith("line ")]
    assert [int(line.split()[1]) for line in lines] == list(range(1, 41))
    assert dockerd.containers(f"{LABEL}={build_id}") == []


async def test_cancelling_a_paused_build_stops_its_container_at_once(
    tmp_path: Path, dockerd: Dockerd, busybox_image: str
) -> None:
    built, build_id, running = await a_long_step_started(tmp_path, dockerd, busybox_image)
    assert await built.executor.pause()
    assert [c["State"] for c in dockerd.containers(f"{LABEL}={build_id}")] == ["paused"]

    built.cancel("the lease is lost")
    outcome = await asyncio.wait_for(running, 30)
    assert outcome.status == "terminated"
    assert dockerd.containers(f"{LABEL}={build_id}") == []
    assert dockerd.networks(f"{LABEL}={build_id}") == []
