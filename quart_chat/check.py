"""``quart-chat check``: could an instance serve with these settings? One line per part.

Reads the settings as an instance would (the same environment, the same parser), then
reaches what they name: Redis (through the sentinels when ``REDIS_URL`` is
``redis+sentinel://``; every primary of a ``redis+cluster://``). Exit status 0 only when an
instance could serve; `EX_CONFIG` (78) for a setting that cannot be used, `EX_UNAVAILABLE`
(69) for a part that does not answer.
Fit for ``ExecStartPre=`` in a systemd unit and for CI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from .config import Settings, SettingsError
from .entry import EX_CONFIG, configuration_error

EX_UNAVAILABLE = 69
TIMEOUT = 5.0


async def _ping_redis(settings: Settings) -> str:
    """What the Redis that the settings name says of itself; raises when it does not answer."""
    from .logs import redact
    from .store import is_cluster_url, make_client

    client = make_client(settings.redis_url, socket_timeout=2.0)
    try:
        async with asyncio.timeout(TIMEOUT):
            await client.ping()
            if is_cluster_url(settings.redis_url):
                return f"{await _cluster(client)} at {redact(settings.redis_url)}"
            info = await client.info("server")
            primary = ""
            if settings.redis_url.startswith("redis+sentinel://"):
                role = await client.execute_command("ROLE")
                primary = f", primary found through the sentinels ({role[0]})"
        return f"Redis {info.get('redis_version', '?')} at {redact(settings.redis_url)}{primary}"
    finally:
        await client.aclose()


async def _cluster(client: Any) -> str:
    """What a Redis Cluster says of itself; raises unless it is whole and every primary is Redis 7+."""
    state = await client.cluster_info()
    if state.get("cluster_state") != "ok":
        raise RedisError(f"the cluster's state is {state.get('cluster_state')!r}, not ok")
    primaries = client.get_primaries()
    versions = await client.info("server", target_nodes=primaries)
    found = {info.get("redis_version", "?") for info in versions.values()} if isinstance(versions, dict) else set()
    old = sorted(v for v in found if not v.split(".")[0].isdigit() or int(v.split(".")[0]) < 7)
    if old:
        raise RedisError(f"sharded pub/sub needs Redis 7 on every primary; found {', '.join(old)}")
    return f"Redis Cluster of {len(primaries)} primaries, Redis {', '.join(sorted(found))}"


def check(env: Mapping[str, str] | None = None, say: Callable[[str], object] = print) -> int:
    """Check the settings in ``env`` (default ``os.environ``) and what they reach; the exit status."""
    try:
        settings = Settings.from_env(env)
    except SettingsError as err:
        say(f"settings: FAILED: {configuration_error(err)}")
        return EX_CONFIG
    say(f"settings: ok (instance {settings.instance}, auth {settings.auth})")
    if settings.auth == "token":
        from .auth import make_verifier

        try:
            verifier = make_verifier(settings)
        except SettingsError as err:
            say(f"token key: FAILED: {configuration_error(err)}")
            return EX_CONFIG
        say(f"token key: ok ({verifier.describe() if verifier else '?'})")
    try:
        say(f"redis: ok ({asyncio.run(_ping_redis(settings))})")
    except (RedisError, RedisClusterException, OSError, TimeoutError) as err:
        from .logs import redact

        detail = str(err) or type(err).__name__
        say(f"redis: FAILED: no answer from {redact(settings.redis_url)} ({detail})")
        return EX_UNAVAILABLE
    say("ready: an instance with these settings could serve")
    return 0
