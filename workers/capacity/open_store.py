"""The capacity store the settings name: Redis when `CAPACITY_URL` is set, else in memory."""

from __future__ import annotations

from typing import Any

from workers.capacity.memory_store import MemoryStore
from workers.capacity.redis_store import RedisStore, settle_window
from workers.capacity.store import CapacityStore


def open_capacity_store(settings: Any, *, worker_id: str | None = None) -> CapacityStore:
    """The store `settings` name: Redis when CAPACITY_URL is set, else in memory."""
    url = settings.capacity_url
    if url is None:
        return MemoryStore()
    return RedisStore(
        url.get_secret_value(),
        lease_ttl_s=settings.capacity_lease_ttl_s,
        timeout_s=settings.capacity_timeout_s,
        worker_id=worker_id,
        settle_s=settle_window(settings.capacity_timeout_s),
    )
