"""The runner's reading of what a step marked: JUnit reports read strictly (no entities, no DTD, bounded), and
artifact globs that never reach outside the build volume."""

from __future__ import annotations

from pathlib import Path

import pytest

from outpost.runner.artifacts import MAX_REPORT_BYTES, Found, ReportError, StepOutputs, read_junit
from outpost.runner.client import ProtocolClient
from outpost.wire import RunBuildTask


def found(file: Path) -> Found:
    return Found(file.name, file, file.stat().st_size)


def no_mask(text: str | None) -> str | None:
    return text


def report(tmp_path: Path, text: str) -> Found:
    file = tmp_path / "report.xml"
    file.write_text(text)
    return found(file)


def test_a_junit_report_gives_each_case_with_its_suite_class_time_status_and_message(tmp_path: Path) -> None:
    cases = read_junit(
        report(
            tmp_path,
            """<?xml version="1.0"?>
<testsuites><testsuite name="outer"><testsuite name="inner">
  <testcase classname="c.One" name="ok" time="1.5"/>
  <testcase classname="c.One" name="bad" time="x"><failure message="no">trace here</failure></testcase>
  <testcase classname="c.Two" name="broke"><error type="E">crashed</error></testcase>
  <testcase classname="c.Two" name="later"><skipped message="not today"/></testcase>
</testsuite></testsuite></testsuites>""",
        ),
        no_mask,
    )
    assert [(c.suite, c.classname, c.name, c.status, c.time, c.message) for c in cases] == [
        ("inner", "c.One", "ok", "passed", 1.5, None),
        ("inner", "c.One", "bad", "failed", None, "no trace here"),
        ("inner", "c.Two", "broke", "error", None, "crashed"),
        ("inner", "c.Two", "later", "skipped", None, "not today"),
    ]


def test_a_secret_in_a_failure_message_is_masked_before_it_leaves_the_runner(tmp_path: Path) -> None:
    cases = read_junit(
        report(
            tmp_path, '<testsuite><testcase name="t"><failure message="token=hunter2-long"/></testcase></testsuite>'
        ),
        lambda text: text.replace("hunter2-long", "*****") if text else text,
    )
    assert cases[0].message == "token=*****"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("<testsuite><testcase", "invalid XML"),
        (
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            "<testsuite><testcase name='&lol2;'/></testsuite>",
            "invalid XML",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            "<testsuite><testcase name='&x;'/></testsuite>",
            "invalid XML",
        ),
        ("<html><body>not a report</body></html>", "its root element is <html>"),
    ],
)
def test_a_report_that_is_not_plain_junit_is_refused_without_expanding_anything(
    tmp_path: Path, text: str, why: str
) -> None:
    with pytest.raises(ReportError) as refused:
        read_junit(report(tmp_path, text), no_mask)
    assert why in str(refused.value)


def test_a_report_larger_than_the_bound_is_not_read(tmp_path: Path) -> None:
    file = tmp_path / "huge.xml"
    with file.open("wb") as out:
        out.truncate(MAX_REPORT_BYTES + 1)
    with pytest.raises(ReportError, match="larger than 16 MiB"):
        read_junit(found(file), no_mask)


async def test_globs_find_files_inside_the_volume_and_skip_what_leads_outside(tmp_path: Path) -> None:
    volume, outside = tmp_path / "volume", tmp_path / "outside"
    (volume / "repo" / "dist" / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    (volume / "repo" / "dist" / "a.txt").write_text("a")
    (volume / "repo" / "dist" / "sub" / "b.txt").write_text("bb")
    (volume / "repo" / "dist" / "out.txt").symlink_to(outside / "secret.txt")
    (volume / "repo" / "dist" / "outdir").symlink_to(outside)
    (volume / "top.txt").write_text("top")
    notes: list[str] = []

    async def note(text: str) -> None:
        notes.append(text)

    task = RunBuildTask(build_id="b", lease_id="l", lease_ttl=30, job_token="t", account="a", pipeline="p", yaml="")
    outputs = StepOutputs(ProtocolClient("http://127.0.0.1:9"), task, volume)
    hits = await outputs.matches(
        ["dist/**/*.txt", "/codefresh/volume/top.txt", "dist/a.txt", "dist/outdir/*", "nothing/*", "../outside/*"],
        volume / "repo",
        note,
    )

    assert sorted((h.path, h.size) for h in hits) == [
        ("repo/dist/a.txt", 1),
        ("repo/dist/sub/b.txt", 2),
        ("top.txt", 3),
    ]
    assert "warning: out.txt leads outside the build volume; skipped" in notes
    assert "warning: secret.txt leads outside the build volume; skipped" in notes
    assert "warning: 'nothing/*' matches no file" in notes
    assert "warning: '../outside/*' may not climb out with '..': '../outside/*'; skipped" in notes


async def test_a_symlink_loop_among_the_matches_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    (volume / "dist").mkdir(parents=True)
    (volume / "dist" / "loop").symlink_to(volume / "dist" / "loop")
    (volume / "dist" / "ok.txt").write_text("ok")
    notes: list[str] = []

    async def note(text: str) -> None:
        notes.append(text)

    task = RunBuildTask(build_id="b", lease_id="l", lease_ttl=30, job_token="t", account="a", pipeline="p", yaml="")
    hits = await StepOutputs(ProtocolClient("http://127.0.0.1:9"), task, volume).matches(["dist/*"], volume, note)

    assert [h.path for h in hits] == ["dist/ok.txt"]
    assert [n for n in notes if "loop" in n] == [notes[0]]
    assert notes[0].startswith("warning: loop cannot be read (")
