"""The compose subset of composition steps: forms, interpolation, order, candidates, problems, volumes."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from outpost.containers.compose import (
    Composition,
    CompositionError,
    Mount,
    Service,
    load_composition,
    merge_candidates,
    parse_volume,
)
from outpost.errors import PipelineError

V2 = {
    "version": "2.1",
    "services": {
        "db": {"image": "postgres:16", "environment": {"POSTGRES_PASSWORD": "secret"}, "ports": [5432]},
        "app": {
            "image": "app:1",
            "command": "sh -c 'echo ready && sleep 5'",
            "depends_on": {"db": {"condition": "service_started"}},
            "working_dir": "/src",
        },
    },
}


def problems_of(composition: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(CompositionError) as caught:
        load_composition(composition, **kwargs)
    return caught.value.messages


def test_an_inline_v2_composition_gives_each_service_in_one_form() -> None:
    composition = load_composition(V2)
    assert composition.services == {
        "db": Service("db", "postgres:16", environment={"POSTGRES_PASSWORD": "secret"}, ports=["5432"]),
        "app": Service(
            "app", "app:1", command=["sh", "-c", "echo ready && sleep 5"], depends_on=["db"], working_dir="/src"
        ),
    }
    assert composition.warnings == []
    assert composition.candidates == []


def test_an_inline_v3_composition_reads_lists_and_ignores_top_level_extras_with_a_warning() -> None:
    composition = load_composition(
        {
            "version": "3.8",
            "x-common": {"image": "ignored"},
            "networks": {"back": None},
            "services": {
                "web": {
                    "image": "nginx",
                    "entrypoint": ["/docker-entrypoint.sh", 1],
                    "environment": ["MODE=prod", "EQ=a=b"],
                    "ports": ["8080:80"],
                    "volumes": ["./html:/usr/share/nginx/html:ro"],
                    "depends_on": ["api", "api"],
                },
                "api": {"image": "api"},
            },
        }
    )
    web = composition.services["web"]
    assert web.entrypoint == ["/docker-entrypoint.sh", "1"]
    assert web.environment == {"MODE": "prod", "EQ": "a=b"}
    assert web.ports == ["8080:80"]
    assert web.volumes == ["./html:/usr/share/nginx/html:ro"]
    assert web.depends_on == ["api"]
    assert composition.warnings == ["composition: top-level `networks` is ignored"]


def test_a_bare_mapping_of_services_is_a_composition_too() -> None:
    composition = load_composition(
        {"version": "1", "redis": {"image": "redis"}, "x-anchor": {}, "worker": {"image": "w"}}
    )
    assert list(composition.services) == ["redis", "worker"]


def test_a_composition_file_is_read_relative_to_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "docker-compose.yml").write_text(
        textwrap.dedent(
            """\
            version: '3'
            services:
              db:
                image: postgres:${PG_VERSION:-16}
              tests:
                image: app
                command: ["pytest", "-x"]
                depends_on: [db]
            """
        )
    )
    composition = load_composition("ci/docker-compose.yml", base=tmp_path, variables=["PG_VERSION=15"])
    assert composition.services["db"].image == "postgres:15"
    assert [s.name for s in composition.order()] == ["db", "tests"]
    assert load_composition("./ci/../ci/docker-compose.yml", base=str(tmp_path)).services["db"].image == "postgres:16"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../outside.yml", "composition: `../outside.yml` is outside the working directory"),
        ("/etc/hostname", "composition: `/etc/hostname` is outside the working directory"),
        ("link.yml", "composition: `link.yml` is outside the working directory"),
        ("missing.yml", "composition: `missing.yml` is not a file in the working directory"),
        ("bad.yml", "composition: `bad.yml` is not valid YAML at line 2, column 1: expected ',' or ']'"),
        ("list.yml", "composition: expected a mapping of services, found a list"),
        ("empty.yml", "composition: expected a mapping of services, found empty"),
        ("latin1.yml", "composition: `latin1.yml` is not UTF-8 text"),
        (".", "composition: cannot read `.`"),
    ],
)
def test_a_composition_file_that_cannot_be_used_says_why(tmp_path: Path, path: str, message: str) -> None:
    base = tmp_path / "work"
    base.mkdir()
    (tmp_path / "outside.yml").write_text("services: {db: {image: x}}\n")
    (base / "link.yml").symlink_to(tmp_path / "outside.yml")
    (base / "bad.yml").write_text("services: [unclosed\n")
    (base / "list.yml").write_text("- a\n")
    (base / "empty.yml").write_text("")
    (base / "latin1.yml").write_bytes("services: {d\xe9: {image: x}}\n".encode("latin-1"))
    assert problems_of(path, base=base)[0].startswith(message)


def test_a_composition_file_needs_a_base_folder() -> None:
    with pytest.raises(ValueError, match="needs the folder"):
        load_composition("docker-compose.yml")


VARIABLES = {"SET": "value", "EMPTY": "", "OTHER": "x"}


def interpolated(text: str, variables: dict[str, str] | None = None) -> str:
    """`text` after interpolation, read back through a field that keeps strings as they are."""
    composition = load_composition({"s": {"image": "i", "working_dir": text}}, variables=variables or VARIABLES)
    assert composition.services["s"].working_dir is not None
    return composition.services["s"].working_dir


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("$SET", "value"),
        ("${SET}", "value"),
        ("a${SET}b$SET-c", "avaluebvalue-c"),
        ("$SET_more", ""),  # the name runs as far as name characters go
        ("${SET_more:-d}", "d"),
        ("${SET:-default}", "value"),
        ("${EMPTY:-default}", "default"),
        ("${EMPTY-default}", ""),
        ("${UNSET-default}", "default"),
        ("${UNSET:-}", ""),
        ("${UNSET:-a b:c}", "a b:c"),
        ("${UNSET:-${SET}}", "value"),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${SET:?must be set}", "value"),
        ("$$", "$"),
        ("$$SET", "$SET"),
        ("$${SET}", "${SET}"),
        ("cost: $$5", "cost: $5"),
        ("${{build}}", "${{build}}"),
        ("${{ CF_BRANCH }}-${SET}", "${{ CF_BRANCH }}-value"),
        ("${UNSET:-${{step}}}", "${{step}}"),
    ],
)
def test_interpolation_follows_compose(text: str, expected: str) -> None:
    assert interpolated(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$", "`$` must be followed by a variable name"),
        ("price $5", "`$` must be followed by a variable name"),
        ("${}", "invalid interpolation `${}`"),
        ("${SET", "unterminated `${`"),
        ("${1X}", "invalid interpolation `${1X}`"),
        ("${SET:default}", "invalid interpolation `${SET:default}`"),
        ("${UNSET:?give it}", "`UNSET` is required: give it"),
        ("${EMPTY:?}", "`EMPTY` is required"),
        ("${UNSET?}", "`UNSET` is required"),
        ("${{unterminated", "unterminated `${{`"),
    ],
)
def test_bad_interpolation_is_a_problem_of_its_field(text: str, message: str) -> None:
    (problem,) = problems_of({"s": {"image": "i", "working_dir": text}}, variables=VARIABLES)
    assert problem.startswith("composition: service `s`: `working_dir`: ")
    assert message in problem


def test_interpolation_never_reads_the_runners_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPOST_COMPOSE_SECRET", "leaked")
    composition = load_composition({"s": {"image": "i", "command": "echo $OUTPOST_COMPOSE_SECRET $HOME"}})
    assert composition.services["s"].command == ["echo"]  # two empty words, as an unquoted shell would drop them
    assert composition.warnings == [
        "composition: variable `OUTPOST_COMPOSE_SECRET` is not set: an empty string is used",
        "composition: variable `HOME` is not set: an empty string is used",
    ]


def test_interpolation_reaches_every_string_but_not_keys() -> None:
    composition = load_composition(
        {"s": {"image": "${REG}/app", "environment": {"$KEY": "${SET}"}, "ports": ["${PORT}:80"]}},
        variables=["REG=quay.io", "SET=v", "PORT=8080", "KEY=no"],
    )
    service = composition.services["s"]
    assert (service.image, service.environment, service.ports) == ("quay.io/app", {"$KEY": "v"}, ["8080:80"])


@pytest.mark.parametrize("variables", [["NOEQUALS"], ["=value"], ["1ABC=x"], ["A-B=x"]])
def test_composition_variables_must_be_key_value(variables: list[str]) -> None:
    assert problems_of({"s": {"image": "i"}}, variables=variables) == [
        f"composition_variables: '{variables[0]}' is not KEY=VALUE"
    ]


def test_composition_variables_as_a_mapping_are_taken_as_they_are() -> None:
    composition = load_composition({"s": {"image": "app:${TAG}"}}, variables={"TAG": "v1=x"})
    assert composition.services["s"].image == "app:v1=x"


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        (["A=1", "B=", "C=x=y"], {"A": "1", "B": "", "C": "x=y"}),
        (["FROM_VARS", "NOT_ANYWHERE"], {"FROM_VARS": "given"}),
        (
            {"A": 1, "B": True, "C": False, "D": 1.5, "E": "", "F": "s"},
            {"A": "1", "B": "true", "C": "false", "D": "1.5", "E": "", "F": "s"},
        ),
        ({"FROM_VARS": None, "NOT_ANYWHERE": None}, {"FROM_VARS": "given"}),
        (None, {}),
        ([], {}),
    ],
)
def test_environment_as_list_or_mapping(environment: Any, expected: dict[str, str]) -> None:
    composition = load_composition({"s": {"image": "i", "environment": environment}}, variables=["FROM_VARS=given"])
    assert composition.services["s"].environment == expected


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ("A=1", "expected a list, found 'A=1'"),
        (["=1"], "a variable has no name"),
        ([["A", "1"]], "expected a single value, found a list"),
        ({"A": {"nested": 1}}, "expected a single value, found a mapping"),
    ],
)
def test_environment_in_another_shape_is_a_problem(environment: Any, message: str) -> None:
    assert problems_of({"s": {"image": "i", "environment": environment}}) == [
        f"composition: service `s`: `environment`: {message}"
    ]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("npm test", ["npm", "test"]),
        ("sh -c 'a && b' \"c d\"", ["sh", "-c", "a && b", "c d"]),
        (["sh", "-c", "a b"], ["sh", "-c", "a b"]),
        ([], []),
        ("", []),
        (None, None),
    ],
)
def test_command_and_entrypoint_as_string_or_list(command: Any, expected: list[str] | None) -> None:
    service = load_composition({"s": {"image": "i", "command": command, "entrypoint": command}}).services["s"]
    assert (service.command, service.entrypoint) == (expected, expected)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("echo 'unclosed", "cannot split 'echo 'unclosed' into arguments: No closing quotation"),
        ({"a": 1}, "expected a list, found a mapping"),
        (["a", ["b"]], "expected a single value, found a list"),
    ],
)
def test_a_command_that_is_not_arguments_is_a_problem(command: Any, message: str) -> None:
    assert problems_of({"s": {"image": "i", "command": command}}) == [f"composition: service `s`: `command`: {message}"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image", "", "expected an image reference, found ''"),
        ("image", ["a"], "expected an image reference, found a list"),
        ("ports", "80:80", "expected a list, found '80:80'"),
        ("ports", [{"target": 80}], "expected a single value, found a mapping"),
        ("volumes", [{"type": "bind"}], "expected a single value, found a mapping"),
        ("working_dir", ["/a"], "expected a path, found a list"),
        ("depends_on", "db", "expected a list, found 'db'"),
    ],
)
def test_a_field_in_the_wrong_shape_is_a_problem(field: str, value: Any, message: str) -> None:
    assert problems_of({"s": {"image": "i", field: value}}) == [f"composition: service `s`: `{field}`: {message}"]


def test_depends_on_as_a_mapping_takes_its_keys_and_warns_of_unchecked_conditions() -> None:
    composition = load_composition(
        {
            "db": {"image": "db"},
            "cache": {"image": "cache"},
            "app": {
                "image": "app",
                "depends_on": {"db": {"condition": "service_healthy"}, "cache": None},
            },
        }
    )
    assert composition.services["app"].depends_on == ["db", "cache"]
    assert composition.warnings == [
        "composition: service `app`: `depends_on`: condition `service_healthy` on `db` is not checked; "
        "it is only started first"
    ]


@pytest.mark.parametrize(
    ("depends", "order"),
    [
        ({"a": [], "b": [], "c": []}, ["a", "b", "c"]),
        ({"a": ["b"], "b": ["c"], "c": []}, ["c", "b", "a"]),
        ({"web": ["api", "db"], "api": ["db"], "db": [], "cache": []}, ["db", "cache", "api", "web"]),
        ({"x": ["z"], "y": [], "z": ["y"]}, ["y", "z", "x"]),
    ],
)
def test_services_start_after_what_they_depend_on(depends: dict[str, list[str]], order: list[str]) -> None:
    composition = load_composition({name: {"image": "i", "depends_on": d} for name, d in depends.items()})
    assert [service.name for service in composition.order()] == order


@pytest.mark.parametrize(
    ("depends", "cycle"),
    [
        ({"a": ["a"]}, "`a` → `a`"),
        ({"a": ["b"], "b": ["a"]}, "`a` → `b` → `a`"),
        ({"root": [], "a": ["root", "b"], "b": ["c"], "c": ["a"]}, "`a` → `b` → `c` → `a`"),
        ({"lead": ["a"], "a": ["b"], "b": ["a"]}, "`a` → `b` → `a`"),
    ],
)
def test_a_dependency_cycle_is_a_problem_that_names_it(depends: dict[str, list[str]], cycle: str) -> None:
    assert problems_of({name: {"image": "i", "depends_on": d} for name, d in depends.items()}) == [
        f"composition: services depend on each other in a cycle: {cycle}"
    ]


def test_order_checks_a_composition_built_by_hand() -> None:
    composition = Composition({"a": Service("a", "i", depends_on=["ghost"])})
    with pytest.raises(CompositionError, match="`depends_on` names `ghost`"):
        composition.order()


def test_unknown_service_keys_are_ignored_with_a_warning_and_extensions_silently() -> None:
    composition = load_composition(
        {"services": {"db": {"image": "db", "healthcheck": {"test": "true"}, "restart": "always", "x-note": 1}}}
    )
    assert composition.services["db"] == Service("db", "db")
    assert composition.warnings == [
        "composition: service `db`: `healthcheck` is ignored",
        "composition: service `db`: `restart` is ignored",
    ]


def test_build_in_a_service_is_refused() -> None:
    assert problems_of({"app": {"build": ".", "image": "app"}}) == [
        "composition: service `app`: `build` is not supported: services in a composition must use an image: "
        "build it in a build step first and use ${{step}}"
    ]


def test_every_problem_is_reported_at_once_one_per_line() -> None:
    with pytest.raises(CompositionError) as caught:
        load_composition(
            {
                "services": {
                    "db": {"environment": ["A=1"]},
                    "app": {"image": "app", "build": ".", "depends_on": ["ghost"], "command": "echo 'oops"},
                    "bad name!": {"image": "x"},
                    "notmap": "redis",
                }
            },
            variables=["BROKEN"],
        )
    expected = [
        "composition_variables: 'BROKEN' is not KEY=VALUE",
        "composition: service `db`: `image` is required",
        "composition: service `app`: `build` is not supported: services in a composition must use an image: "
        "build it in a build step first and use ${{step}}",
        "composition: service `app`: `command`: cannot split 'echo 'oops' into arguments: No closing quotation",
        "composition: service `bad name!`: a service name may hold only letters, digits, `_`, `.` and `-`",
        "composition: service `notmap`: expected a mapping of fields, found 'redis'",
        "composition: service `app`: `depends_on` names `ghost`, which is not a service of the composition",
    ]
    assert caught.value.messages == expected
    assert str(caught.value) == "\n".join(expected)
    assert isinstance(caught.value, PipelineError)
    assert [problem.message for problem in caught.value.problems] == expected


@pytest.mark.parametrize(
    ("composition", "message"),
    [
        ({}, "composition: there are no services"),
        ({"version": "3"}, "composition: there are no services"),
        ({"services": {}}, "composition: there are no services"),
        ({"services": ["db"]}, "composition: `services` must be a mapping, not a list"),
        ({"services": None}, "composition: `services` must be a mapping, not empty"),
    ],
)
def test_a_composition_without_services_is_a_problem(composition: dict[str, Any], message: str) -> None:
    assert problems_of(composition) == [message]


def test_problems_found_before_one_that_stops_the_reading_are_kept(tmp_path: Path) -> None:
    assert problems_of({"services": []}, variables=["BAD"]) == [
        "composition_variables: 'BAD' is not KEY=VALUE",
        "composition: `services` must be a mapping, not a list",
    ]
    assert problems_of("missing.yml", base=tmp_path, variables=["BAD"])[0] == (
        "composition_variables: 'BAD' is not KEY=VALUE"
    )


def test_a_service_that_depends_on_a_broken_one_is_not_blamed_for_it() -> None:
    assert problems_of({"db": {"image": ""}, "app": {"image": "app", "depends_on": ["db"]}}) == [
        "composition: service `db`: `image`: expected an image reference, found ''"
    ]


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["x-a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"x-a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    lines += ["s:", "  image: i", "  command: *a7"]
    (tmp_path / "bomb.yml").write_text("\n".join(lines) + "\n")
    problems = problems_of("bomb.yml", base=tmp_path)
    assert problems == ["composition: more than 100000 values: is it an alias bomb?"]


BASE = load_composition(
    {
        "db": {"image": "postgres"},
        "tests": {"image": "app:1", "command": "sleep 1", "environment": {"A": "1", "B": "2"}, "depends_on": ["db"]},
    }
)


def test_a_candidate_named_like_a_service_is_laid_over_it() -> None:
    merged = merge_candidates(BASE, {"tests": {"command": ["pytest", "-x"], "environment": ["B=two", "C=3"]}})
    assert merged.services["tests"] == Service(
        "tests", "app:1", command=["pytest", "-x"], environment={"A": "1", "B": "two", "C": "3"}, depends_on=["db"]
    )
    assert merged.candidates == ["tests"]
    assert [s.name for s in merged.order()] == ["db", "tests"]


def test_a_new_candidate_is_added_with_its_own_image() -> None:
    merged = merge_candidates(
        BASE,
        {"lint": {"image": "app:${TAG}", "command": "make lint", "depends_on": ["db"], "healthcheck": {}}},
        variables=["TAG=2"],
    )
    assert merged.services["lint"] == Service("lint", "app:2", command=["make", "lint"], depends_on=["db"])
    assert list(merged.services) == ["db", "tests", "lint"]
    assert merged.candidates == ["lint"]
    assert merged.warnings == ["composition_candidates: `lint`: `healthcheck` is ignored"]
    assert BASE.candidates == []  # the composition given is left as it was
    assert "lint" not in BASE.services


def test_a_candidates_image_wins_over_the_services() -> None:
    merged = merge_candidates(BASE, {"db": {"image": "postgres:16", "command": "postgres -c fsync=off"}})
    assert (merged.services["db"].image, merged.services["db"].command) == (
        "postgres:16",
        ["postgres", "-c", "fsync=off"],
    )


def test_candidates_without_an_image_or_with_problems_are_all_reported() -> None:
    candidates: dict[str, Any] = {
        "unit": {"command": "make unit"},
        "e2e": {"image": "app", "build": ".", "depends_on": ["nowhere"]},
        "tests": {"command": "echo 'oops"},
        "odd": ["not", "a", "mapping"],  # YAML gives whatever was written; the type says what should be
    }
    with pytest.raises(CompositionError) as caught:
        merge_candidates(BASE, candidates)
    assert caught.value.messages == [
        "composition_candidates: `unit`: `image` is required (there is no composition service `unit` to inherit it)",
        "composition_candidates: `e2e`: `build` is not supported: services in a composition must use an image: "
        "build it in a build step first and use ${{step}}",
        "composition_candidates: `tests`: `command`: cannot split 'echo 'oops' into arguments: No closing quotation",
        "composition_candidates: `odd`: expected a mapping of fields, found a list",
        "composition: service `e2e`: `depends_on` names `nowhere`, which is not a service of the composition",
    ]


def test_candidates_may_depend_on_each_other() -> None:
    merged = merge_candidates(
        BASE, {"b": {"image": "b", "depends_on": ["a"]}, "a": {"image": "a", "depends_on": ["tests"]}}
    )
    assert [s.name for s in merged.order()] == ["db", "tests", "a", "b"]
    assert merged.candidates == ["b", "a"]


ROOT = "/srv/builds/42/volume"


@pytest.mark.parametrize(
    ("text", "mount"),
    [
        ("./src:/app", Mount(ROOT + "/src", "/app", "rw")),
        ("src/sub:/app:ro", Mount(ROOT + "/src/sub", "/app", "ro")),
        (".:/work:rw", Mount(ROOT, "/work", "rw")),
        ("./a/../b:/b", Mount(ROOT + "/b", "/b", "rw")),
        ("/codefresh/volume:/codefresh/volume", Mount(ROOT, "/codefresh/volume", "rw")),
        ("/codefresh/volume/repo/data:/data:ro", Mount(ROOT + "/repo/data", "/data", "ro")),
        ("/codefresh/volume/x/../y:/y", Mount(ROOT + "/y", "/y", "rw")),
        ("${{CF_VOLUME_PATH}}/repo:/repo", Mount(ROOT + "/repo", "/repo", "rw")),
        ("${{ CF_VOLUME_PATH }}:/v", Mount(ROOT, "/v", "rw")),
        ("${{CF_VOLUME_NAME}}:/codefresh/volume", Mount(ROOT, "/codefresh/volume", "rw")),
        ("cf-vol-42:/codefresh/volume:ro", Mount(ROOT, "/codefresh/volume", "ro")),
        ("./src:/app/../opt/", Mount(ROOT + "/src", "/opt", "rw")),
    ],
)
def test_a_volume_entry_becomes_a_mount_of_the_build_volume(text: str, mount: Mount) -> None:
    assert parse_volume(text, ROOT, volume_name="cf-vol-42") == mount
    assert parse_volume(text, Path(ROOT), volume_name="cf-vol-42") == mount


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("../secrets:/s", "'../secrets' leads out of the build volume"),
        ("./a/../../b:/b", "leads out of the build volume"),
        ("..:/up", "leads out of the build volume"),
        ("/etc:/etc", "only paths inside the build volume (/codefresh/volume) can be mounted"),
        ("/var/run/docker.sock:/var/run/docker.sock", "only paths inside the build volume"),
        ("/codefresh/volume/../etc:/etc", "only paths inside the build volume"),
        ("/codefresh/volumex:/x", "only paths inside the build volume"),
        ("${{CF_VOLUME_PATH}}/../x:/x", "only paths inside the build volume"),
        ("mydata:/data", "named docker volumes are not supported; write `./mydata`"),
        ("/data", "write SOURCE:TARGET"),
        ("a:b:c:d", "write SOURCE:TARGET"),
        (":/data", "write SOURCE:TARGET"),
        ("./a:", "write SOURCE:TARGET"),
        ("./a:/b:z", "the mode must be `ro` or `rw`, not 'z'"),
        ("./a:/b:ro,z", "the mode must be `ro` or `rw`"),
        ("./a:relative", "the target 'relative' must be an absolute path"),
    ],
)
def test_a_volume_entry_that_is_not_a_folder_of_the_build_volume_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"volume {text!r}: ")) as caught:
        parse_volume(text, ROOT, volume_name="cf-vol-42")
    assert message in str(caught.value)
