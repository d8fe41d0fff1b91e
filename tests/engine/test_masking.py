"""Secret values never reach a log, however the output is cut into chunks."""

from __future__ import annotations

import random

from outpost.engine.masking import MASK, Masker


def stream(masker: Masker, chunks: list[bytes]) -> bytes:
    return b"".join(masker.feed(c) for c in chunks) + masker.flush()


def test_a_secret_inside_one_chunk_is_masked() -> None:
    assert stream(Masker(["hunter2"]), [b"password is hunter2!\n"]) == b"password is " + MASK + b"!\n"


def test_a_secret_split_across_chunks_is_masked() -> None:
    assert stream(Masker(["hunter2"]), [b"password is hun", b"ter", b"2!\n"]) == b"password is " + MASK + b"!\n"


def test_output_without_a_possible_secret_start_is_not_held_back() -> None:
    masker = Masker(["hunter2"])
    assert masker.feed(b"plain line\n") == b"plain line\n"
    assert masker.feed(b"ends with hu") == b"ends with "
    assert masker.feed(b"go home\n") == b"hugo home\n"


def test_short_values_are_not_treated_as_secrets() -> None:
    assert stream(Masker(["ab", ""]), [b"abc\n"]) == b"abc\n"


def test_a_secret_that_contains_another_is_masked_whole() -> None:
    assert stream(Masker(["token", "token-extended"]), [b"token-extended token\n"]) == MASK + b" " + MASK + b"\n"


def test_any_cut_of_the_output_gives_the_same_masked_log() -> None:
    secrets = ["s3cr3t-value", "p@ss", "ssh-rsa AAAAB3Nza"]
    text = b"start s3cr3t-value middle p@ss p@s end ssh-rsa AAAAB3Nza tail s3cr3t\n" * 20
    expected = stream(Masker(secrets), [text])
    assert b"s3cr3t-value" not in expected
    assert b"p@ss" not in expected
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 40)))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert stream(Masker(secrets), chunks) == expected
