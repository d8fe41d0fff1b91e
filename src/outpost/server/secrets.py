"""Secrets at rest: pipeline secret variables are stored encrypted (Fernet: AES-128-CBC + HMAC-SHA256).

The key comes from OUTPOST_SECRET_KEY or, by default, from <data dir>/secret.key, created (mode 0600)
on the first start. Losing the key makes stored secrets unreadable; back it up with the database.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from outpost.errors import OutpostError


class SecretBox:
    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise OutpostError("the secret key is not a valid Fernet key (32 url-safe base64 bytes)") from exc

    @classmethod
    def from_settings(cls, key: str, data_dir: Path) -> SecretBox:
        if key:
            return cls(key)
        path = data_dir / "secret.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise OutpostError("a stored secret cannot be decrypted with this key") from exc

    def seal_all(self, values: dict[str, str]) -> dict[str, str]:
        return {k: self.seal(v) for k, v in values.items()}

    def open_all(self, sealed: dict[str, str]) -> dict[str, str]:
        return {k: self.open(v) for k, v in sealed.items()}
