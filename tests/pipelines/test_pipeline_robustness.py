"""Garbage in never raises anything but PipelineError: random bytes, cut-off files, mangled files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from outpost.errors import PipelineError
from outpost.pipelines.parsing import load_pipeline

DATA = Path(__file__).parent / "data"
SAMPLES = sorted(DATA.glob("*.yml"))
YAML_CHARS = " \n\t:-[]{},&*!|>'\"%@`#?<=~$.0123456789abcdefxyz"


def outcome(text: str | bytes) -> str:
    """'ok' or 'invalid'; any other exception escapes and fails the test."""
    try:
        load_pipeline(text)
    except PipelineError as exc:
        problems = exc.problems
    else:
        return "ok"
    assert problems, "a PipelineError must carry at least one problem"
    return "invalid"


def test_random_bytes_give_a_pipeline_error() -> None:
    rng = random.Random(20240501)
    for _ in range(300):
        data = rng.randbytes(rng.randint(0, 400))
        assert outcome(data.decode("utf-8", errors="replace")) == "invalid"
        outcome(data)


def test_random_yaml_punctuation_never_escapes_as_another_exception() -> None:
    rng = random.Random(7)
    for _ in range(1000):
        outcome("".join(rng.choice(YAML_CHARS) for _ in range(rng.randint(0, 120))))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_every_truncation_of_a_valid_file_is_handled(sample: Path) -> None:
    text = sample.read_text()
    assert outcome(text) == "ok"
    line_ends = {i for i, c in enumerate(text) if c == "\n"}
    for end in sorted(line_ends | set(range(0, len(text), 3))):  # every line, and a third of all cuts
        outcome(text[:end])


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_mangled_copies_of_a_valid_file_are_handled(sample: Path) -> None:
    rng = random.Random(sample.name)
    text = sample.read_text()
    for _ in range(500):
        chars = list(text)
        for _ in range(rng.randint(1, 5)):
            where = rng.randrange(len(chars))
            action = rng.choice(("delete", "insert", "replace"))
            if action == "delete":
                del chars[where]
            elif action == "insert":
                chars.insert(where, rng.choice(YAML_CHARS))
            else:
                chars[where] = rng.choice(YAML_CHARS)
        outcome("".join(chars))


def test_shuffled_lines_of_a_valid_file_are_handled() -> None:
    rng = random.Random(3)
    lines = (DATA / "full.yml").read_text().splitlines(keepends=True)
    for _ in range(200):
        outcome("".join(rng.sample(lines, rng.randint(1, len(lines)))))
