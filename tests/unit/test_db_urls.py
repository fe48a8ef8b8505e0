"""PostgreSQL connection arguments derived from the database URL."""

from __future__ import annotations

import pytest

from services.common.db import _pg_args


@pytest.mark.parametrize(
    ("url", "args"),
    [
        ("postgresql+asyncpg://u:p@127.0.0.1:5432/so", {"ssl": False}),  # TLS on loopback only costs CPU
        ("postgresql+asyncpg://u:p@localhost/so", {"ssl": False}),
        ("postgresql+asyncpg://u:p@localhost/so?ssl=require", {}),  # the URL's own choice stands
        ("postgresql+asyncpg://u:p@db.internal:5432/so", {}),  # another host keeps asyncpg's default
    ],
)
def test_tls_is_skipped_on_loopback_unless_the_url_asks(url: str, args: dict[str, object]) -> None:
    assert _pg_args(url) == args
