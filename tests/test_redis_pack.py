"""The capacity store sends its scripts packed by its own one-pass packer (workers/capacity/
redis_store.py `pack_command`): it must write exactly what redis-py's packer writes."""

from __future__ import annotations

import pytest
from redis.connection import Connection

from workers.capacity.redis_store import pack_command

PARTS = [
    (b"EVALSHA", "a" * 40, 4, "{capacity}:rr", "{capacity}:leases"),
    (b"EVALSHA", "b" * 40, 0, 20000, -1, 0, "5:héllo:w-1:-:7", "c1/driver", ""),
    (b"SCRIPT", b"LOAD", "return {1, 2}"),
]


@pytest.mark.parametrize("parts", PARTS)
def test_a_command_is_packed_as_redis_py_packs_it(parts):
    assert pack_command(*parts) == b"".join(Connection().pack_command(*parts))
