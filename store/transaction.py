"""One way to run a block in a transaction on whatever the caller passed (pool or connection).

Repository functions accept a :data:`~store.postgres.Queryable`: a pool (they acquire a connection
for the transaction) or a connection the caller already holds (their transaction then nests as a
savepoint inside the caller's, so several repository calls can commit together).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from store.postgres import Queryable


@asynccontextmanager
async def transaction(db: Queryable) -> AsyncIterator[Any]:
    """Yield a connection inside a transaction; commit on exit, roll back on an exception."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db
