"""Unit tests of the hub: gap-free hand-over from history to live delivery, and fan-out."""

from __future__ import annotations

from quart_chat.rooms import Hub


class Sink:
    def __init__(self, key: str = "k") -> None:
        self.key = key
        self.got: list[str] = []

    def deliver(self, frame: str) -> None:
        self.got.append(frame)

    deliver_lazy = deliver


def test_buffered_messages_after_history_are_delivered_once():
    hub, a = Hub(), Sink()
    hub.begin_join(a, "r")
    hub.dispatch("r", (1, 0), "m1")  # already in the history read below
    hub.dispatch("r", (2, 0), "m2")  # arrived after the history read
    hub.finish_join(a, "r", history_last=(1, 0))
    hub.dispatch("r", (3, 0), "m3")
    assert a.got == ["m2", "m3"]


def test_history_ahead_of_subscriber_skips_until_caught_up():
    hub, old, new = Hub(), Sink("old"), Sink("new")
    hub.begin_join(old, "r")
    hub.finish_join(old, "r", None)
    hub.dispatch("r", (1, 0), "m1")
    hub.begin_join(new, "r")
    hub.finish_join(new, "r", history_last=(3, 0))  # history already holds 2 and 3
    for n in (2, 3, 4):
        hub.dispatch("r", (n, 0), f"m{n}")
    assert old.got == ["m1", "m2", "m3", "m4"]
    assert new.got == ["m4"]


def test_duplicates_and_stale_ids_are_dropped():
    hub, a = Hub(), Sink()
    hub.begin_join(a, "r")
    hub.finish_join(a, "r", None)
    hub.dispatch("r", (2, 0), "m2")
    hub.dispatch("r", (2, 0), "m2")
    hub.dispatch("r", (1, 5), "old")
    assert a.got == ["m2"]


def test_isolation_and_notifications():
    hub, a, b = Hub(), Sink("a"), Sink("b")
    for s, room in ((a, "x"), (b, "y")):
        hub.attach(s)
        hub.begin_join(s, room)
        hub.finish_join(s, room, None)
    hub.dispatch("x", (1, 0), "mx")
    hub.notify_room("x", "joined-x", skip="a")
    hub.notify_all("created")
    assert a.got == ["mx", "created"] and b.got == ["created"]


def test_detach_forgets_empty_rooms():
    hub, a = Hub(), Sink()
    hub.attach(a)
    hub.begin_join(a, "r")
    hub.finish_join(a, "r", None)
    hub.detach(a, ["r"])
    assert hub.rooms == {} and hub.receivers == {}


def test_catch_up_start():
    hub, a, b = Hub(), Sink("a"), Sink("b")
    hub.begin_join(a, "r")
    # Only a join in progress: its history may have been read before the subscriber
    # (re)subscribed, so a catch-up must start from the beginning (the joiner keeps only
    # what follows its history).
    assert hub.catchup_from("r") == (0, 0)
    hub.finish_join(a, "r", None)
    assert hub.catchup_from("r") == (0, 0)  # live since an empty room
    hub.dispatch("r", (5, 0), "m5")
    hub.begin_join(b, "r")
    hub.finish_join(b, "r", (7, 0))
    assert hub.catchup_from("r") == (5, 0)
    assert hub.catchup_from("nope") is None


async def test_a_failed_join_rolls_back_unless_the_receiver_was_in_the_room():
    """`Hub.join`: when reading the history fails, a new joiner is out of the room again (no
    live delivery, no buffer left behind); one that was already in it stays, untouched."""
    import pytest

    hub, new, old = Hub(), Sink("new"), Sink("old")
    await hub.join(old, "r", _read(["h"]), lambda history: None)

    async def broken() -> list[str]:
        raise ConnectionError("Redis went away")

    for receiver in (new, old):
        with pytest.raises(ConnectionError):
            await hub.join(receiver, "r", broken, lambda history: None)
    assert not hub.is_member(new, "r") and hub.is_member(old, "r")
    assert new not in hub.rooms["r"].pending and old not in hub.rooms["r"].pending
    hub.dispatch("r", (5, 0), "live")
    assert new.got == [] and old.got == ["live"]
    # A join that read nothing and had nobody else leaves no room behind either.
    alone = Sink("alone")
    with pytest.raises(ConnectionError):
        await hub.join(alone, "empty", broken, lambda history: None)
    assert "empty" not in hub.rooms


def _read(history: list[str]):
    async def read() -> list[str]:
        return history
    return read


def test_metrics_merge_adds_workers_up():
    """`metrics.merge`: numbers and histogram buckets summed, tables per key, health the worst
    of the workers, the deepest outbox the deepest of any."""
    from quart_chat.metrics import merge

    a = {"sent": 3, "redis_up": 1, "subscriber_up": 1, "outbox_max": 2, "closes": {"1001": 1},
         "join_seconds": [1.0, 2.0], "workers": 1}
    b = {"sent": 4, "redis_up": 0, "subscriber_up": 1, "outbox_max": 7, "closes": {"1001": 2, "1013": 1},
         "join_seconds": [0.5, 0.5], "workers": 1}
    assert merge([a, b]) == {"sent": 7, "redis_up": 0, "subscriber_up": 1, "outbox_max": 7,
                             "closes": {"1001": 3, "1013": 1}, "join_seconds": [1.5, 2.5], "workers": 2}
    assert merge([a]) == a and merge([]) == {}
