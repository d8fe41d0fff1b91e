"""What a step leaves for the build page, collected by the runner after the step: the files its `artifacts` globs
match, uploaded one by one (streamed from disk), and the test cases of the JUnit reports its `junit` globs match,
sent as one report. Nothing leaves the build volume: a match that resolves outside it (a symlink out) is skipped
with a warning in the step's log, as are reports that are too large or not JUnit XML (read with defusedxml: no
entity expansion, no external entities). Nothing here fails a step; a lost lease still ends the build."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from outpost.engine.engine import StepFiles
from outpost.engine.state import VOLUME_ALIAS
from outpost.errors import LeaseLost
from outpost.pipelines.fields import output_path_problem
from outpost.runner.client import ProtocolClient, Refused, Revoked, Unreachable, retrying
from outpost.wire import MAX_TEST_CASES, JUnitCase, JUnitReport, RunBuildTask

log = logging.getLogger("outpost.runner.artifacts")
MAX_MATCHES = 200  # files one glob may match
MAX_REPORT_BYTES = 16 * 1024 * 1024  # a JUnit file larger than this is skipped
MAX_MESSAGE = 4000
SEND_FOR = 120.0  # seconds a report or an upload is retried while the control plane is unreachable

Note = Callable[[str], Awaitable[None]]
Mask = Callable[[str | None], str | None]


class StepOutputs:
    """The collector a BuildJob gives its engine (`BuildEngine.collect`)."""

    def __init__(self, client: ProtocolClient, task: RunBuildTask, volume: Path) -> None:
        self.client = client
        self.task = task
        self.volume = volume

    async def __call__(self, marked: StepFiles, note: Note, mask: Mask) -> None:
        if marked.junit:
            await self._test_report(marked, note, mask)
        for found in await self.matches(marked.artifacts, marked.workdir, note):
            await self._upload(marked.step, found, note)

    async def matches(self, globs: list[str], workdir: Path, note: Note) -> list[Found]:
        """Every regular file the globs match inside the volume, each once, in the globs' order."""
        found: dict[str, Found] = {}
        for pattern in globs:
            if why := output_path_problem(pattern):
                await note(f"warning: '{pattern}' {why}; skipped")
                continue
            for warning in _match(pattern, self.volume, workdir, found):
                await note(f"warning: {warning}")
        return list(found.values())

    async def _test_report(self, marked: StepFiles, note: Note, mask: Mask) -> None:
        cases: list[JUnitCase] = []
        for found in await self.matches(marked.junit, marked.workdir, note):
            if len(cases) > MAX_TEST_CASES:
                await note(f"warning: more than {MAX_TEST_CASES} test cases; {found.path} and later reports not read")
                break
            try:
                cases += read_junit(found, mask, limit=MAX_TEST_CASES + 1 - len(cases))
            except ReportError as exc:
                await note(f"warning: {found.path} is not a JUnit report the runner can read ({exc}); skipped")
        if len(cases) > MAX_TEST_CASES:
            await note(f"warning: the reports hold more than {MAX_TEST_CASES} test cases; the first are shown")
        cases = cases[:MAX_TEST_CASES]
        failed = sum(c.status in ("failed", "error") for c in cases)
        report = JUnitReport(step=marked.step, cases=cases)
        if await self._send(lambda: self.client.annotations(self.task, report), "the test report", note):
            await note(f"test report: {len(cases)} test cases, {failed} failed")

    async def _upload(self, step: str, found: Found, note: Note) -> None:
        async def upload() -> None:
            await self.client.upload_artifact(self.task, step, found.path, found.file, found.size)

        if await self._send(upload, f"artifact {found.path}", note):
            await note(f"artifact uploaded: {found.path} ({found.size} bytes)")

    async def _send(self, call: Callable[[], Awaitable[None]], what: str, note: Note) -> bool:
        """True once sent; a refusal (too large, too many) or a control plane away too long is a warning."""
        try:
            await retrying(call, deadline=asyncio.get_running_loop().time() + SEND_FOR)
            return True
        except (LeaseLost, Revoked):
            raise
        except (Refused, Unreachable, OSError) as exc:
            log.warning("build %s: %s not sent: %s", self.task.build_id, what, exc)
            await note(f"warning: {what} was not sent: {exc}")
            return False


@dataclass(frozen=True)
class Found:
    path: str  # relative to the build volume
    file: Path
    size: int


def _match(pattern: str, volume: Path, workdir: Path, found: dict[str, Found]) -> list[str]:
    """Adds what `pattern` matches inside the volume to `found`; returns the warnings."""
    root = volume.resolve()
    if pattern.startswith("/"):
        base, rest = volume, pattern[len(VOLUME_ALIAS) :].lstrip("/")
    else:
        base, rest = workdir, pattern
    try:
        hits = sorted(base.glob(rest)) if rest else [base]
    except (OSError, ValueError) as exc:
        return [f"'{pattern}' cannot be matched: {exc}"]
    warnings = [] if hits else [f"'{pattern}' matches no file"]
    if len(hits) > MAX_MATCHES:
        warnings.append(f"'{pattern}' matches {len(hits)} files; only the first {MAX_MATCHES} are taken")
    for hit in hits[:MAX_MATCHES]:
        try:
            real = hit.resolve()
            if not real.is_relative_to(root):
                warnings.append(f"{hit.name} leads outside the build volume; skipped")
            elif real.is_file():
                path = real.relative_to(root).as_posix()
                found.setdefault(path, Found(path, real, real.stat().st_size))
        except (OSError, RuntimeError) as exc:  # unreadable, or a symlink loop
            warnings.append(f"{hit.name} cannot be read ({exc}); skipped")
    return warnings


class ReportError(Exception):
    pass


def read_junit(found: Found, mask: Mask, limit: int = MAX_TEST_CASES) -> list[JUnitCase]:
    """The test cases of one JUnit XML file (`<testsuites>` or a `<testsuite>` at the top, suites nested at any
    depth), at most `limit`, messages masked and cut to MAX_MESSAGE characters."""
    if found.size > MAX_REPORT_BYTES:
        raise ReportError(f"larger than {MAX_REPORT_BYTES // (1024 * 1024)} MiB")
    try:
        data = found.file.read_bytes()
    except OSError as exc:  # a step running as another user may leave a file the runner cannot read
        raise ReportError(f"unreadable: {exc.strerror or exc}") from None
    try:
        root = fromstring(data, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        raise ReportError(f"invalid XML: {exc}") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise ReportError(f"its root element is <{root.tag}>, not <testsuites> or <testsuite>")
    cases: list[JUnitCase] = []
    for suite in root.iter("testsuite"):
        for case in suite.findall("testcase"):
            if len(cases) >= limit:
                return cases
            cases.append(_case(suite, case, mask))
    return cases


def _case(suite: Element, case: Element, mask: Mask) -> JUnitCase:
    status, message = "passed", None
    for tag, meaning in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        found = case.find(tag)
        if found is not None:
            status = meaning
            message = " ".join(part for part in (found.get("message"), (found.text or "").strip()) if part) or None
            break
    try:
        seconds: float | None = max(0.0, float(case.get("time", "")))
    except ValueError:
        seconds = None
    return JUnitCase(
        suite=(suite.get("name") or "")[:500],
        classname=(mask(case.get("classname")) or "")[:500],
        name=(mask(case.get("name")) or "(unnamed)")[:1000],
        status=status,
        time=seconds if seconds is None or seconds < 1e9 else None,
        message=(mask(message) or "")[:MAX_MESSAGE] or None,
    )
