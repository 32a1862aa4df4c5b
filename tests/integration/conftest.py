"""Fixtures shared by the integration tests: fresh, migrated databases on the ``stack`` fixture's
PostgreSQL server, each with an asyncpg pool.

* ``module_database`` — one database for all the tests of a module (rows of one test stay visible
  to the next: tests make their own users, workflows and keys).
* ``isolated_database`` — one database per test, for tests whose subject scans whole tables (a
  scheduler or relay pass must never see another test's rows) or listens to its notifications.

Both yield a :class:`repository_support.MigratedDatabase` (its ``config`` for ``LISTEN`` or a
second pool, its ``pool``).  Modules that only need a pool use ``repository_support.pool_fixture``
(``pool`` = ``module_database.pool``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from repository_support import MigratedDatabase, migrated_database


@pytest.fixture(scope="module")
async def module_database(stack: Any) -> AsyncIterator[MigratedDatabase]:
    """A fresh migrated database shared by the tests of one module."""
    async with migrated_database(stack) as database:
        yield database


@pytest.fixture
async def isolated_database(stack: Any) -> AsyncIterator[MigratedDatabase]:
    """A fresh migrated database of one test's own."""
    async with migrated_database(stack) as database:
        yield database
