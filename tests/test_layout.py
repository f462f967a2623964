"""store.Layout and the cluster URL: key names for one Redis (section 2, exactly) and for a
Redis Cluster (section 14: a room's keys in one slot), without a server."""

from __future__ import annotations

import pytest

from quart_chat.config import Settings, SettingsError
from quart_chat.store import (
    APPEND_LUA,
    JOIN_LUA,
    JOIN_SHARDED_LUA,
    MESSAGES,
    NOTIFICATIONS,
    Layout,
    is_cluster_url,
    parse_cluster_url,
    room_of_channel,
    sharded,
)


def slot_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the first non-empty {...}, else the whole key."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1:end] if start >= 0 and end > start + 1 else key


def test_one_redis_keeps_the_names_of_section_2():
    k = Layout(cluster=False)
    assert k.history("general") == "chat:history:general"
    assert k.channel("general") == MESSAGES == "chat:messages"
    assert k.events("general") == NOTIFICATIONS == "chat:room-notifications"
    assert k.rooms == k.record("general") == "chat:rooms"
    assert k.members("general") == "chat:members:general"
    assert k.sent("general", "Al", "c1") == "chat:sent:general:2:Alc1"


def test_on_a_cluster_every_key_of_a_room_shares_its_slot():
    k = Layout(cluster=True)
    room = "dev-team_2"
    keys = [k.history(room), k.trimmed(room), k.state(room), k.state_index(room), k.read(room), k.members(room),
            k.sent(room, "Bob", "x"), k.record(room), k.activity(room), k.channel(room), k.events(room)]
    assert {slot_tag(key) for key in keys} == {room}
    assert all(key.startswith("chat:") for key in keys)
    assert room_of_channel(k.channel(room)) == room and room_of_channel(MESSAGES) is None
    deployment = [k.rooms, k.activity_index, k.instances, k.node_rooms("i0#abcd")]
    assert {slot_tag(key) for key in deployment} == {"all"}
    assert k.notifications == NOTIFICATIONS  # classic pub/sub: every node delivers it


def test_sharded_scripts_publish_on_the_shard_channel():
    assert "'PUBLISH'" in APPEND_LUA and "'SPUBLISH'" not in APPEND_LUA
    assert "'SPUBLISH'" in sharded(APPEND_LUA) and "'PUBLISH'" not in sharded(APPEND_LUA)
    # The cluster's join neither creates nor announces rooms for everyone: CREATE_ROOM_LUA does.
    assert "room_created" in JOIN_LUA and "room_created" not in JOIN_SHARDED_LUA
    assert "ZRANGEBYSCORE" in JOIN_LUA and "ZRANGEBYSCORE" not in JOIN_SHARDED_LUA


def test_cluster_urls():
    url = "redis+cluster://:p%40ss@10.0.0.1:7000, 10.0.0.2:7001,[::1]:7002"
    assert is_cluster_url(url) and not is_cluster_url("redis://h:1/0")
    conf = parse_cluster_url(url)
    assert conf.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert conf.password == "p@ss" and conf.username is None
    for bad in ("redis+cluster://h", "redis+cluster://h:x", "redis+cluster://h:1/0"):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)


@pytest.mark.parametrize(("url", "error"), [
    ("redis+cluster://h:port", "REDIS_URL is not a usable redis+cluster:// URL: its port must be a number"),
    ("redis+cluster://:pw@h:1/0",
     "REDIS_URL is not a usable redis+cluster:// URL: a cluster has no database number: no path after the nodes"),
])
def test_a_bad_cluster_url_is_a_settings_error_without_the_password(url, error):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"REDIS_URL": url})
    assert str(err.value) == error and "pw" not in str(err.value)
    assert Settings.from_env({"REDIS_URL": "redis+cluster://:pw@h:1,h:2"}).redis_url.startswith("redis+cluster://")
