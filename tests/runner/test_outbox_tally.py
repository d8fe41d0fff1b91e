"""The outbox's tallies (acked.json, events.acked): appended, never written aside and renamed; the last whole line
counts, so a crash in the middle of an append leaves the value before it, and a restarted runner resends from there."""

from __future__ import annotations

from pathlib import Path

from outpost.runner.client import ProtocolClient
from outpost.runner.outbox import ACKED_FILE, EVENTS_ACKED_FILE, TALLY_MAX, Outbox, _Tally
from outpost.wire import RunBuildTask

TASK = RunBuildTask(build_id="b-1", lease_id="l-1", lease_ttl=30.0, job_token="opj_x", account="", pipeline="", yaml="")


def test_a_tally_counts_its_last_whole_line_not_one_cut_short(tmp_path: Path) -> None:
    tally = _Tally(tmp_path / "events.acked")
    assert tally.last() is None  # no file: nothing accepted yet
    tally.save(3)
    tally.save(12)
    with open(tally.path, "ab") as f:
        f.write(b"12")  # a crash in the middle of writing 1234
    assert tally.last() == 12
    tally.save({"s": 5})
    with open(tally.path, "ab") as f:
        f.write(b'{"s":')
    assert tally.last() == {"s": 5}


def test_a_tally_an_older_runner_wrote_whole_counts_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "events.acked").write_text("17")
    (tmp_path / "acked.json").write_text('{"step": 2048}')
    assert _Tally(tmp_path / "events.acked").last() == 17
    assert _Tally(tmp_path / "acked.json").last() == {"step": 2048}


def test_a_tally_saved_for_hours_stays_small(tmp_path: Path) -> None:
    tally = _Tally(tmp_path / "acked.json")
    for n in range(20_000):
        tally.save({"a-long-stream-name": n, "another": n * 2})
        assert tally.path.stat().st_size <= TALLY_MAX
    assert tally.last() == {"a-long-stream-name": 19_999, "another": 39_998}


async def test_a_reopened_outbox_sends_from_what_its_tallies_say_the_control_plane_holds(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    Outbox.prepare(folder)
    made = {name: (folder / name).stat().st_ino for name in (ACKED_FILE, EVENTS_ACKED_FILE)}
    client = ProtocolClient("http://127.0.0.1:9")  # never used: nothing is sent
    box = Outbox.create(folder, TASK, client, 1024, runner_token="rt")
    box._write("step", b"x" * 100)
    _Tally(folder / ACKED_FILE).save({"step": 40})
    _Tally(folder / ACKED_FILE).save({"step": 60})
    with open(folder / ACKED_FILE, "ab") as f:
        f.write(b'{"step":9')  # cut short: 60 counts
    (folder / "events.jsonl").write_text('{"kind":"started"}\n{"kind":"step","name":"step"}\n')
    _Tally(folder / EVENTS_ACKED_FILE).save(1)

    again = Outbox.reopen(folder, client, 1024, runner_token="rt")
    await client.aclose()

    assert (again.unsent_bytes, again.unsent_events) == (40, 1)
    # Appended to, not made anew: the files the spare held are the ones written.
    assert {name: (folder / name).stat().st_ino for name in made} == made
