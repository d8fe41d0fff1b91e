"""The job token's seal in a build's outbox: only the runner token that sealed it opens it, any change to it is
refused, leases sealed by a runner of before still open, and the runner does not load `cryptography` for it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from outpost.runner import sealing
from outpost.runner.outbox import LEASE_FILE, read_lease, write_lease
from outpost.wire import RunBuildTask

RUNNER_TOKEN = "opr_runner-token-of-this-registration"
LEASE = "lease-7f3a"
JOB_TOKEN = "opj_" + "k" * 43


def test_a_sealed_token_opens_with_its_runner_token_and_lease_and_is_not_in_clear() -> None:
    for secret in ("", "x", JOB_TOKEN, "é" * 100):  # empty, one byte, one block and a bit, many blocks
        sealed = sealing.seal(secret, RUNNER_TOKEN, LEASE)
        assert sealed.startswith("s1.")
        assert sealing.unseal(sealed, RUNNER_TOKEN, LEASE) == secret
    sealed = sealing.seal(JOB_TOKEN, RUNNER_TOKEN, LEASE)
    assert JOB_TOKEN not in sealed
    assert JOB_TOKEN[4:20] not in sealed
    assert sealing.seal(JOB_TOKEN, RUNNER_TOKEN, LEASE) != sealed  # a fresh nonce each time


def test_another_runner_token_or_lease_or_any_altered_byte_is_refused() -> None:
    sealed = sealing.seal(JOB_TOKEN, RUNNER_TOKEN, LEASE)
    with pytest.raises(sealing.Unsealable):
        sealing.unseal(sealed, RUNNER_TOKEN + "x", LEASE)
    with pytest.raises(sealing.Unsealable):
        sealing.unseal(sealed, RUNNER_TOKEN, "lease-other")
    raw = bytearray(base64.urlsafe_b64decode(sealed[3:]))
    for at in (0, 16, len(raw) // 2, len(raw) - 1):  # the nonce, the ciphertext, the tag
        altered = bytearray(raw)
        altered[at] ^= 0x01
        with pytest.raises(sealing.Unsealable):
            sealing.unseal("s1." + base64.urlsafe_b64encode(bytes(altered)).decode(), RUNNER_TOKEN, LEASE)
    for junk in ("s1.", "s1.AAAA", "s1.not base64 at all!", "gAAAAAjunk"):
        with pytest.raises(sealing.Unsealable):
            sealing.unseal(junk, RUNNER_TOKEN, LEASE)


def test_the_keys_are_rfc5869_hkdf_sha256_of_the_runner_token_salted_with_the_lease() -> None:
    reference = HKDF(algorithm=hashes.SHA256(), length=64, salt=LEASE.encode(), info=b"outpost job token at rest")
    enc_key, mac_key = sealing._keys(RUNNER_TOKEN, LEASE)
    assert enc_key + mac_key == reference.derive(RUNNER_TOKEN.encode())


def test_a_lease_sealed_by_a_runner_of_before_still_opens(tmp_path: Path) -> None:
    """A runner upgraded while a build's outbox waits to be delivered: its lease holds a Fernet token."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=LEASE.encode(), info=b"outpost job token at rest")
    fernet = Fernet(base64.urlsafe_b64encode(key.derive(RUNNER_TOKEN.encode())))
    lease = {
        "build_id": "b1",
        "lease_id": LEASE,
        "lease_ttl": 30,
        "job_token": fernet.encrypt(JOB_TOKEN.encode()).decode(),
    }
    (tmp_path / LEASE_FILE).write_text(json.dumps(lease))
    assert read_lease(tmp_path, RUNNER_TOKEN).job_token == JOB_TOKEN
    with pytest.raises(ValueError, match="no job token to deliver with"):
        read_lease(tmp_path, "opr_another-registration")


def test_the_runner_writes_and_reads_its_lease_without_loading_cryptography(tmp_path: Path) -> None:
    probe = f"""
import sys
from pathlib import Path
import outpost.runner.agent
from outpost.runner.outbox import read_lease, write_lease
from outpost.wire import RunBuildTask
task = RunBuildTask(build_id="b1", lease_id={LEASE!r}, lease_ttl=30, job_token={JOB_TOKEN!r}, account="a",
                    pipeline="p", yaml="")
write_lease(Path({str(tmp_path)!r}), task, {RUNNER_TOKEN!r})
assert read_lease(Path({str(tmp_path)!r}), {RUNNER_TOKEN!r}).job_token == {JOB_TOKEN!r}
print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
    stored = (tmp_path / LEASE_FILE).read_text()
    assert JOB_TOKEN not in stored
    assert json.loads(stored)["job_token"].startswith("s1.")
    # And the test's own process (which loaded cryptography above) opens it the same way.
    task = RunBuildTask(
        build_id="b1", lease_id=LEASE, lease_ttl=30, job_token=JOB_TOKEN, account="a", pipeline="p", yaml=""
    )
    write_lease(tmp_path, task, RUNNER_TOKEN)
    assert read_lease(tmp_path, RUNNER_TOKEN).job_token == JOB_TOKEN
