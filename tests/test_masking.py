"""Secret values never reach a log or a message, in any form this masker promises, however the output is cut
into chunks."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
from pathlib import Path
from urllib.parse import quote, quote_plus

from outpost.engine import BuildContext, BuildEngine, BuildOutcome
from outpost.executors.local import LocalExecutor
from outpost.masking import MASK, MIN_SECRET, Masker
from tests.engine.recorder import Recorder


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


def test_the_longest_possible_beginning_is_held_back_whichever_secret_it_belongs_to() -> None:
    long_one = "cdef-sec" + "x" * 40  # longer, and its beginning ends the chunk too, but shorter there
    short_one = "0123456789abcdef-secret"
    shown = stream(Masker([long_one, short_one]), [b"id 0123456789abcdef-sec", b"ret\n"])
    assert shown == b"id " + MASK + b"\n"


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


# --- derived forms ---------------------------------------------------------------------------------

KEY = "-----BEGIN KEY-----\nMIIEowIBAAKCAQEA7x/9+q\nAbCdEf-0123_==\n-----END KEY-----"  # a multi-line secret
PASSWORD = 'p@ss w/rd+"quote"&é'  # every character some encoding changes
B64_CHARS = re.compile(rb"[A-Za-z0-9+/=_-]{4,}")


def shown_forms(secret: str) -> list[bytes]:
    """What a step may print for `secret`, worked out here, not by the masker."""
    raw = secret.encode()
    out = [raw, quote(secret, safe="").encode(), quote(secret).encode(), quote_plus(secret).encode()]
    out += [json.dumps(secret)[1:-1].encode(), json.dumps(secret, ensure_ascii=False)[1:-1].encode()]
    out += [line.strip().encode() for line in secret.splitlines() if len(line.strip()) >= 4]
    for before in (b"", b"x", b"xy"):  # the three alignments, inside a longer stream
        out += [base64.b64encode(before + raw + b"tail"), base64.urlsafe_b64encode(before + raw + b"tail")]
    return out


def reveals(log: bytes, secret: str) -> list[bytes]:
    """Each way `log` still shows `secret`: a form verbatim, a line of it, or base64 that decodes to it."""
    raw = secret.encode()
    found = [f for f in shown_forms(secret)[:6] if f in log]
    found += [line for line in shown_forms(secret)[6:] if line in log]
    for run in B64_CHARS.findall(log):
        for start in range(4):  # a run may begin anywhere in a 4-character group
            piece = run[start:].rstrip(b"=")
            piece = piece[: len(piece) - len(piece) % 4]
            for decoded in (_b64(piece, b"+/"), _b64(piece, b"-_")):
                if raw in decoded:
                    found.append(run)
    return found


def _b64(piece: bytes, alphabet: bytes) -> bytes:
    try:
        return base64.b64decode(piece, altchars=alphabet, validate=True)
    except ValueError:
        return b""


def log_showing(secret: str) -> bytes:
    forms = shown_forms(secret)
    return b"".join(b"before " + f + b" after\n" for f in forms)


def test_every_form_of_a_secret_is_masked_wherever_the_chunk_is_cut() -> None:
    for secret in (KEY, PASSWORD, "tok-12345/x+y"):
        text = log_showing(secret)
        assert reveals(text, secret), "the test's own detector must see the forms"
        whole = stream(Masker([secret]), [text])
        assert reveals(whole, secret) == []
        for cut in range(1, len(text)):
            shown = stream(Masker([secret]), [text[:cut], text[cut:]])
            assert reveals(shown, secret) == [], (secret, cut)
        one_byte_chunks = [text[i : i + 1] for i in range(len(text))]
        assert reveals(stream(Masker([secret]), one_byte_chunks), secret) == []


def test_each_line_of_a_multi_line_secret_is_masked_alone() -> None:
    shown = stream(Masker([KEY]), [b"line: MIIEowIBAAKCAQEA7x/9+q\n", b"and AbCdEf-0123_== too\n"])
    assert shown == b"line: " + MASK + b"\nand " + MASK + b" too\n"


def test_text_that_shares_only_a_short_piece_of_a_secret_is_untouched() -> None:
    text = b"ab xyz correct horse; correct-horse; Y29y; cmVj; yes no ok\n"
    assert stream(Masker(["correct-horse-battery\nab\nxyz", "abc", "ok"]), [text]) == text


def test_a_value_shorter_than_the_minimum_is_not_a_secret() -> None:
    assert MIN_SECRET == 4
    assert stream(Masker(["abc"]), [b"abc YWJj\n"]) == b"abc YWJj\n"
    assert stream(Masker(["abcd"]), [b"abcd\n"]) == MASK + b"\n"


def test_a_whole_message_is_masked_in_every_form() -> None:
    masker = Masker([PASSWORD])
    message = f"denied by {PASSWORD} ({quote_plus(PASSWORD)})"
    assert masker.mask(message) == "denied by ***** (*****)"


# --- where the engine masks ------------------------------------------------------------------------


async def run_engine(tmp_path: Path, yaml: str, secrets: dict[str, str]) -> tuple[BuildOutcome, Recorder]:
    recorder = Recorder()
    ctx = BuildContext(
        build_id="b1", account="acme", pipeline="p", yaml=yaml, volume=tmp_path / "v", scratch=tmp_path / "s"
    )
    ctx.secrets = secrets
    outcome = await BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder).run()
    return outcome, recorder


def everything_reported(recorder: Recorder, outcome: BuildOutcome) -> bytes:
    messages = [f"{u.title} {u.message}" for _, u in recorder.updates] + [str(outcome.message)]
    return b"".join(bytes(log) for log in recorder.logs.values()) + "\n".join(messages).encode()


async def test_a_cf_export_masked_value_is_masked_encoded_in_later_steps(tmp_path: Path) -> None:
    value = "tok-12345/x+y"
    yaml = (
        "version: '1.0'\nsteps:\n"
        f"  make:\n    image: x\n    commands: ['cf_export TOKEN={value} --mask']\n"
        "  show:\n    image: x\n    commands:\n"
        "      - printf '%s' \"$TOKEN\" | base64\n"
        "      - printf 'x%s' \"$TOKEN\" | base64\n"
        "      - printf 'xy%s' \"$TOKEN\" | base64\n"
        '      - python3 -c \'import sys, urllib.parse as u; print(u.quote(sys.argv[1], safe=""))\' "$TOKEN"\n'
    )
    outcome, recorder = await run_engine(tmp_path, yaml, {})
    assert outcome.status == "success", recorder.logs
    shown = bytes(recorder.logs["show"])
    assert shown.count(MASK) == 4, shown
    assert reveals(shown, value) == []


async def test_step_and_build_messages_are_masked_like_the_log(tmp_path: Path) -> None:
    yaml = (
        "version: '1.0'\nsteps:\n"
        "  gate:\n    title: 'deploy with ${{API_KEY}}'\n    image: x\n    commands: [echo hi]\n"
        '    when:\n      condition:\n        all:\n          check: \'"${{API_KEY}}" == "nope"\'\n'
        "  fail:\n    image: x\n    commands: ['exit 3']\n"
        "    volumes: ['/nowhere/${{API_KEY}}:/x']\n"
    )
    secret = "p@ss w/rd+&é-1"
    outcome, recorder = await run_engine(tmp_path, yaml, {"API_KEY": secret})
    assert outcome.status in ("failure", "error")
    assert [u.status for n, u in recorder.updates if n == "gate"] == ["skipped"]
    assert MASK.decode() in str(recorder.final("gate").message)
    assert reveals(everything_reported(recorder, outcome), secret) == []


async def test_an_approval_answer_is_masked_in_the_log_and_the_steps_message(tmp_path: Path) -> None:
    secret = "deploy-key-7f3a"  # the approver's name happens to be a secret of the build
    yaml = "version: '1.0'\nsteps:\n  gate:\n    type: pending-approval\n    title: approve ${{DEPLOY_KEY}}\n"
    recorder = Recorder()
    ctx = BuildContext(
        build_id="b1", account="acme", pipeline="p", yaml=yaml, volume=tmp_path / "v", scratch=tmp_path / "s"
    )
    ctx.secrets = {"DEPLOY_KEY": secret}
    engine = BuildEngine(ctx, LocalExecutor(ctx.volume, ctx.scratch), recorder)
    task = asyncio.create_task(engine.run())
    async with asyncio.timeout(30):
        while not any(u.status == "pending-approval" for _, u in recorder.updates):
            await asyncio.sleep(0.02)
        assert engine.decide("gate", "approved", by=secret)
        outcome = await task
    assert outcome.status == "success"
    assert recorder.final("gate").message == "approved by *****"
    assert reveals(everything_reported(recorder, outcome), secret) == []
