"""Settings come from OUTPOST_* variables once, with the database in the data folder by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from outpost.errors import OutpostError
from outpost.settings import ServerSettings


def test_the_database_lives_in_the_data_folder_unless_one_is_named() -> None:
    assert (
        ServerSettings.from_env({}, data_dir=Path("/srv/op")).database_url == "sqlite+aiosqlite:////srv/op/outpost.db"
    )
    named = ServerSettings.from_env({"OUTPOST_DATABASE_URL": "postgresql+asyncpg://db/outpost"}, data_dir=Path("/x"))
    assert named.database_url == "postgresql+asyncpg://db/outpost"


def test_numbers_are_read_from_the_environment() -> None:
    settings = ServerSettings.from_env({"OUTPOST_LEASE_TTL": "7.5", "OUTPOST_MAX_LOG_CHUNK": "4096"})
    assert settings.lease_ttl == 7.5
    assert settings.max_log_chunk == 4096


def test_a_bad_value_is_explained() -> None:
    with pytest.raises(OutpostError, match="OUTPOST_LEASE_TTL='soon' is not a valid float"):
        ServerSettings.from_env({"OUTPOST_LEASE_TTL": "soon"})
