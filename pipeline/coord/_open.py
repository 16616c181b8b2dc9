"""Opening a coordination backend: one Redis client, one session, and the shared pieces built on
them for a gateway (:func:`open_coordination`).

A session is one process's membership: its liveness key is refreshed while it runs, so when a
process dies its open reservations are charged in full by the others (or by its own resume) and
its flights' leases run out. Every shared piece names an endpoint by
:func:`~pipeline.coord._conn.endpoint_key` (base URL, model and a hash of the API key, never the
key), so processes that use one account share one limit, whatever they call the endpoint.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from pipeline._background import background_tasks
from pipeline.coord._conn import PATIENCE_S, endpoint_key, open_redis
from pipeline.coord._links import Background, BudgetLink, RateLink
from pipeline.llm._limits import SERVER_SHARE

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from pipeline.coord._budget import SharedAccounts
    from pipeline.coord._cache import RedisCache, SharedFlights
    from pipeline.llm._endpoint import EndpointConfig


@dataclass(eq=False)
class Coordination:
    """The shared pieces of one process's session; give it to
    :func:`~pipeline.llm.open_gateway` (``coordination=``)."""

    redis: Redis
    url: str
    session: str
    run: str
    run_account: str
    accounts: SharedAccounts
    cache: RedisCache
    flights: SharedFlights
    background: Background

    def limits(self, config: EndpointConfig) -> RateLink:
        """The endpoint's shared requests/min and tokens/min buckets and pause."""
        from pipeline.coord._limits import SharedRate

        rate = SharedRate(
            self.redis,
            url=self.url,
            key=endpoint_key(config.base_url, config.model, config.api_key.reveal()),
            rpm=config.rpm,
            tpm=config.tpm,
            share=SERVER_SHARE,
            max_pause_s=config.retry.retry_after_cap_s,
        )
        return RateLink(rate, self.background)

    def budget(self) -> BudgetLink:
        """The budget's accounts, shared: the run's caps hold over every process of the run
        (or of the team, with a ``budget_scope``)."""
        return BudgetLink(self.accounts, run=self.run, run_account=self.run_account)


@asynccontextmanager
async def open_coordination(
    url: str, *, run: str | None = None, budget_scope: str | None = None
) -> AsyncIterator[Coordination]:
    """Connect to the Redis at ``url`` (``ConfigError`` at once when unreachable) and open a
    session. ``run`` names the run whose processes share the run's caps and jobs' caps (default:
    this session alone); ``budget_scope`` names an account shared by every run that names it,
    to which the run's caps then apply."""
    from pipeline.coord._budget import SharedAccounts
    from pipeline.coord._cache import RedisCache, SharedFlights

    session = uuid.uuid4().hex[:16]
    run = run or f"session-{session}"
    async with open_redis(url) as redis:
        accounts = SharedAccounts(redis, url=url, session=session)
        coordination = Coordination(
            redis=redis,
            url=url,
            session=session,
            run=run,
            run_account=f"team:{budget_scope}" if budget_scope else f"run:{run}",
            accounts=accounts,
            cache=RedisCache(redis, url=url),
            flights=SharedFlights(redis, url=url, session=session),
            background=Background("coordination"),
        )
        async with background_tasks() as tg:
            await accounts.start(tg)
            coordination.background.start(tg)
            try:
                yield coordination
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(PATIENCE_S):
                    coordination.background.close()
                    await coordination.background.drain()
                    await accounts.close()
