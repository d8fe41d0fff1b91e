"""Tokens: generated with a kind prefix, shown once, stored only as SHA-256 hashes.

Tokens are 256 random bits, so a fast hash is enough: nobody can brute-force the preimage, and a
lookup by hash stays a single indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

API_TOKEN = "opt_"  # a person's or a script's API token
INSTALL_TOKEN = "opi_"  # one-time: registers one runner
RUNNER_TOKEN = "opr_"  # a registered runner's long-lived token
JOB_TOKEN = "opj_"  # valid for one build, while its lease lives


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_id() -> str:
    return uuid.uuid4().hex


def now() -> float:
    return time.time()
