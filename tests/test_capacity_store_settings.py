"""The capacity store's settings (issue 16): CAPACITY_URL and the lease numbers, checked with
clear errors; Redis's password never printed, in either log format or on any error path."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterator

import pytest
import structlog
from pydantic import ValidationError

from config.logging import clear_context, configure_logging
from config.settings import PROJECT_ROOT, Settings, describe_settings_error
from tests.test_selector import scenario, trio
from workers import plan, simulate
from workers.capacity.open_store import open_capacity_store
from workers.capacity.redis_store import RedisStore
from workers.capacity.selector import Selector
from workers.capacity.store import CapacityStoreUnavailable

MARK = "XYZZY"  # in every password below: no output may contain it
FORMATS = ("console", "json")
NAMES = (
    "CAPACITY_URL",
    "CAPACITY_LEASE_TTL_S",
    "CAPACITY_REFRESH_S",
    "CAPACITY_TIMEOUT_S",
    "CAPACITY_WHEN_UNAVAILABLE",
    "CAPACITY_WAIT_S",
)


def dead_url(password: str = f"pw-{MARK}") -> str:
    """A Redis URL with a password, on a loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://:{password}@127.0.0.1:{port}/0"


@pytest.fixture
def log_buffer(restore_logging: None) -> Iterator[Callable[[str], io.StringIO]]:
    def configure(fmt: str) -> io.StringIO:
        buf = io.StringIO()
        configure_logging(fmt, "DEBUG", stream=buf)  # type: ignore[arg-type]
        return buf

    yield configure
    clear_context()


def test_the_defaults_keep_capacity_in_memory_with_documented_numbers():
    s = Settings(_env_file=None)
    assert s.capacity_url is None
    assert (s.capacity_lease_ttl_s, s.capacity_refresh_s, s.capacity_timeout_s) == (20, 5, 0.25)
    example = (PROJECT_ROOT / ".env.example").read_text()
    assert all(f"{name}=" in example for name in NAMES)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (
            {"capacity_url": f"http://:{MARK}@host/"},
            "CAPACITY_URL: value error, must be a redis://",
        ),
        ({"capacity_url": f"host:6379-{MARK}"}, "CAPACITY_URL: value error, must be a redis://"),
        # 21.5: the whole URL, not only its scheme (each used to fail on every call, or
        # silently mean something else)
        (
            {"capacity_url": f"redis://:{MARK}@host/0?bogus=1"},
            "CAPACITY_URL: value error, has an unknown query parameter 'bogus'",
        ),
        (
            {"capacity_url": f"redis://:{MARK}@host:99999/0"},
            "CAPACITY_URL: value error, has a host or port that cannot be read",
        ),
        (
            {"capacity_url": f"redis://:{MARK}@::1:6379/0"},
            "CAPACITY_URL: value error, has a host or port that cannot be read",
        ),
        (
            {"capacity_url": f"redis://:{MARK}@host:6379/notadb"},
            "CAPACITY_URL: value error, names a database that is not a number",
        ),
        (
            {"capacity_url": f"redis://host/0?db=x&password={MARK}"},
            "CAPACITY_URL: value error, cannot be read by the Redis client: Invalid value for 'db'",
        ),
        (
            {"capacity_url": f"redis://:{MARK}@host/0?socket_timeout=9"},
            "CAPACITY_URL: value error, sets 'socket_timeout', which the worker sets from "
            "CAPACITY_TIMEOUT_S",
        ),
        ({"capacity_wait_s": 3}, "CAPACITY_WAIT_S: input should be less than or equal to 2.5"),
        ({"capacity_when_unavailable": "cast"}, "CAPACITY_WHEN_UNAVAILABLE: input should be"),
        ({"capacity_refresh_s": 8}, "CAPACITY_REFRESH_S: value error, must be at most a third"),
        (
            {"capacity_lease_ttl_s": 3, "capacity_refresh_s": 1, "capacity_timeout_s": 1},
            "CAPACITY_TIMEOUT_S: value error, must be below CAPACITY_REFRESH_S (1 s)",
        ),
        ({"capacity_timeout_s": 0}, "CAPACITY_TIMEOUT_S: input should be greater than 0"),
        ({"capacity_lease_ttl_s": -1}, "CAPACITY_LEASE_TTL_S: input should be greater than 0"),
    ],
)
def test_bad_capacity_settings_are_named_with_the_fix(values, problem):
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, **values)
    line = describe_settings_error(info.value)
    assert line.startswith(problem) and "fix it in the environment or .env" in line
    assert MARK not in line


@pytest.mark.parametrize(
    "url",
    [
        "redis://[::1]:6379/0",
        "redis://host",
        "unix:///run/redis.sock?db=0&password=x",
        "rediss://:pw@host:6380/1?ssl_cert_reqs=none",
        "redis://host/2?health_check_interval=5&client_name=worker",
    ],
)
def test_good_capacity_urls_pass(url):
    assert Settings(_env_file=None, capacity_url=url).capacity_url is not None


def test_a_shorter_ttl_with_a_shorter_refresh_is_fine():
    s = Settings(_env_file=None, capacity_lease_ttl_s=1.5, capacity_refresh_s=0.5)
    assert (s.capacity_lease_ttl_s, s.capacity_refresh_s) == (1.5, 0.5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_redis_unavailable_is_logged_without_its_password(fmt, log_buffer):
    buf = log_buffer(fmt)
    settings = Settings(_env_file=None, capacity_url=dead_url())
    store = open_capacity_store(settings)
    sel = Selector(trio("primary_first"), store=store)
    with pytest.raises(CapacityStoreUnavailable) as info:
        sel.cast(scenario("c1", {"role": "driver"}))
    lease_log = structlog.stdlib.get_logger("workers.test")
    lease_log.exception("cast_failed", store=store.describe())  # as a worker would log it
    out = buf.getvalue()
    assert "capacity_store_unavailable" in out and "cast_failed" in out
    assert "redis://:***@127.0.0.1:" in out  # where, without the password
    for text in (out, str(info.value), repr(store), repr(settings), str(settings)):
        assert MARK not in text
    store.close()


def test_a_password_in_an_odd_place_is_still_kept_out_of_errors():
    url = dead_url(password=f"{MARK}@x")  # an unescaped @ in the password
    store = RedisStore(url)
    with pytest.raises(CapacityStoreUnavailable) as info:
        store.snapshot(["a"], [])
    assert MARK not in str(info.value) and MARK not in repr(store)
    store.close()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("main", [plan.main, simulate.main], ids=["plan", "simulate"])
def test_a_cli_with_a_bad_capacity_url_names_it_not_its_value(main, fmt, monkeypatch, capsys):
    monkeypatch.setenv("LOG_FORMAT", fmt)
    monkeypatch.setenv("CAPACITY_URL", f"http://user:{MARK}@redis.internal:6379/0")
    code = main(["dispatch_checkin"])
    out, err = capsys.readouterr()
    assert code == 2 and "bad settings: CAPACITY_URL: " in err
    assert MARK not in out + err
