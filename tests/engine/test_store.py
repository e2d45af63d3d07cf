"""The bounded store keeps at most its capacity of idle entries, evicts the oldest idle ones first."""

from __future__ import annotations

import gc

import pytest

from otel_resilience.engine.store import HELD_LOOKS, BoundedStore, key_text


class Item:
    """A stored value that says whether it is busy."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.busy = False
        self.holds = False


def store(
    capacity: int, evicted: list[str] | None = None, *, revive: bool = False
) -> BoundedStore[str, Item]:
    """A store of Items that evicts the ones not busy and records evictions."""
    log = evicted if evicted is not None else []
    return BoundedStore(
        "Owner",
        "cap",
        capacity,
        is_idle=lambda item: not item.busy,
        on_evict=lambda key, _item: log.append(key),
        revive=revive,
    )


def add(s: BoundedStore[str, Item], key: str) -> Item:
    """Add (or find) the Item under ``key``."""
    return s.get_or_add(key, lambda: Item(key))[0]


def test_capacity_evicts_the_least_recently_used_first() -> None:
    """Past the cap the oldest idle entry goes, and a touched entry counts as recent."""
    evicted: list[str] = []
    s = store(2, evicted)
    add(s, "a")
    add(s, "b")
    add(s, "a")  # touch: "b" is now the oldest
    add(s, "c")
    assert evicted == ["b"]
    assert len(s) == 2
    assert s.get("a") is not None
    assert s.get("b") is None
    assert s.evicted == 1


def test_busy_entries_are_never_evicted_and_the_store_shrinks_back_later() -> None:
    """A busy entry stays (the store grows past its cap); once idle it is evicted by trim."""
    evicted: list[str] = []
    s = store(1, evicted)
    busy = add(s, "busy")
    busy.busy = True
    add(s, "x")
    add(s, "y")
    assert s.get("busy") is busy
    assert evicted == ["x"]
    assert len(s) == 2
    busy.busy = False
    assert s.trim() == 1
    assert evicted == ["x", "busy"]
    assert len(s) == 1


def _holding(evicted: list[str], capacity: int) -> BoundedStore[str, Item]:
    """A store of ``capacity`` whose idle entries may hold state (``Item.holds``); keys evicted go to ``evicted``."""
    return BoundedStore(
        "Owner",
        "cap",
        capacity,
        is_idle=lambda item: not item.busy,
        holds_state=lambda item: item.holds,
        on_evict=lambda key, _item: evicted.append(key),
    )


def test_idle_entries_holding_state_go_after_the_idle_ones_holding_none() -> None:
    """``holds_state``: such idle entries are kept past the others, up to the capacity of them."""
    evicted: list[str] = []
    s = _holding(evicted, 2)
    add(s, "kept").holds = True
    add(s, "b")
    add(s, "c")  # "kept" is the oldest, but holds state: "b" goes
    add(s, "d")
    assert evicted == ["b", "c"]
    add(s, "d").holds = True  # at the capacity: a use, evicting nothing
    add(s, "e")  # the newest (never evicted) and two that hold state: the capacity of them
    f = add(s, "f")
    assert evicted == ["b", "c", "e"]
    f.holds = True
    add(s, "g")  # three hold state, one more than the capacity: the least recently used goes
    assert evicted == ["b", "c", "e", "kept"]
    assert [key for key, _ in s.items()] == ["d", "f", "g"]


def test_an_entry_holding_state_is_asked_is_idle_again_just_before_it_goes() -> None:
    """An ``is_idle`` that marks what it allows to evict, and a ``holds_state`` that unmarks what it keeps.

    An entry evicted past the capacity of those holding state went with the mark its
    ``holds_state`` had taken off (a keyed policy's key stayed live while evicted, its calls
    counted in no totals).
    """
    marked: dict[str, bool] = {}
    evicted: list[str] = []

    def retire_if_idle(item: Item) -> bool:
        marked[item.name] = not item.busy
        return marked[item.name]

    def holds_state(item: Item) -> bool:
        if item.holds:
            marked[item.name] = False
        return item.holds

    s = BoundedStore(
        "Owner",
        "cap",
        1,
        is_idle=retire_if_idle,
        holds_state=holds_state,
        on_evict=lambda key, _item: evicted.append(key),
    )
    add(s, "a").holds = True
    add(s, "b").holds = True
    add(s, "c")  # two idle entries hold state, one more than the capacity: "a" goes
    assert evicted == ["a"]
    assert marked["a"] is True
    assert marked["b"] is False


def test_an_eviction_sets_aside_a_bounded_number_of_entries_holding_state() -> None:
    """When every idle entry holds state, adding one looks at HELD_LOOKS + 1 of them, not at every one.

    Each add looked at every entry (O(capacity) calls of ``is_idle`` and ``holds_state`` under the
    store's lock): a keyed policy of 1 000 keys whose limiters all gave permits lately took 6 ms
    a new key, every call through the policy waiting for the lock meanwhile.
    """
    looks: list[str] = []
    evicted: list[str] = []

    def holds_state(item: Item) -> bool:
        looks.append(item.name)
        return True

    s = BoundedStore(
        "Owner",
        "cap",
        100,
        is_idle=lambda item: not item.busy,
        holds_state=holds_state,
        on_evict=lambda key, _item: evicted.append(key),
    )
    for index in range(100):
        add(s, str(index))
    looks.clear()
    for index in range(100, 110):
        add(s, str(index))
    assert len(looks) <= 10 * (HELD_LOOKS + 1)
    assert len(evicted) == 10  # one an add: the oldest of those it set aside
    assert len(s) == 100


def test_an_eviction_looks_at_a_bounded_number_of_busy_entries() -> None:
    """When most entries are busy, adding one looks at HELD_LOOKS + 1 busy ones, not at every one.

    Each add looked at every busy entry (and, evicting the idle ones it met, left only busy ones
    for the next add to look at): a keyed policy whose 1 200 keys had OPEN breakers (an outage
    of many hosts) took 7 ms a new key instead of 0.1 ms, under the lock every call through the
    policy takes. The idle entries an add does not reach go at a later add: memory stays bounded.
    """
    looks: list[str] = []

    def is_idle(item: Item) -> bool:
        looks.append(item.name)
        return not item.busy

    s: BoundedStore[str, Item] = BoundedStore("Owner", "cap", 10, is_idle=is_idle)
    busy = 1_000
    for index in range(busy):
        add(s, f"busy-{index}").busy = True
    looks.clear()
    added = 300
    for index in range(added):
        add(s, f"idle-{index}")
        assert len(s) <= busy + 10 + busy // HELD_LOOKS + 2, index  # bounded, whatever the adds
    assert len(looks) <= added * (HELD_LOOKS + 1) + added * 3  # before: 300 000 looks
    for item in s.values():
        item.busy = False
    add(s, "last")
    assert len(s) == 10


def test_a_use_past_the_capacity_keeps_an_idle_entry_holding_state() -> None:
    """A use's look passes over an idle entry holding state, left where it is (being looked at is
    no use of it); the next add evicts the idle entry holding none."""
    evicted: list[str] = []
    s = _holding(evicted, 1)
    held = add(s, "held")
    held.holds = held.busy = True
    x = add(s, "x")
    x.busy = True
    held.busy = False
    assert s.use("x") is x  # past the capacity: looks at "held", holding state, and stops at x
    assert evicted == []
    assert [key for key, _ in s.items()] == ["held", "x"]
    x.busy = False
    assert s.trim() == 0  # x is the youngest: never evicted by a trim
    add(s, "y")
    assert evicted == ["x"]
    assert [key for key, _ in s.items()] == ["held", "y"]


def test_an_idle_entry_holding_state_set_aside_by_evictions_still_expires_after_its_ttl(clock) -> None:
    """Setting an entry aside is no use of it: unused for the ttl, it goes, whatever it holds.

    Each eviction that met it counted it as used then: with an add every 4 s past a capacity of
    2 and a ttl of 10 s, an entry holding state, unused for 100 s, was never evicted."""
    evicted: list[str] = []
    s = BoundedStore(
        "Owner",
        "cap",
        2,
        is_idle=lambda item: not item.busy,
        holds_state=lambda item: item.holds,
        on_evict=lambda key, _item: evicted.append(key),
        ttl=10.0,
        clock=clock,
    )
    add(s, "held").holds = True
    for turn in range(25):
        clock.advance(4.0)
        add(s, f"new-{turn}")
    assert "held" in evicted
    assert [key for key, _ in s.items()] == ["new-23", "new-24"]


def test_the_entry_just_added_is_never_evicted() -> None:
    """When every other entry is busy, the new one stays too."""
    s = store(1)
    add(s, "a").busy = True
    fresh = add(s, "b")
    assert s.get("b") is fresh
    assert len(s) == 2


def test_get_or_add_reports_creation() -> None:
    """get_or_add creates once and then finds the same value."""
    s = store(3)
    first, created = s.get_or_add("k", lambda: Item("k"))
    again, created_again = s.get_or_add("k", lambda: Item("other"))
    assert created
    assert not created_again
    assert again is first


def test_revive_returns_an_evicted_value_that_is_still_alive() -> None:
    """With revive, an evicted value someone still holds comes back instead of a second one."""
    s = store(1, revive=True)
    held = add(s, "a")
    add(s, "b")
    assert s.get("a") is None
    back, created = s.get_or_add("a", lambda: Item("a"))
    assert back is held
    assert not created
    add(s, "c")
    add(s, "d")  # "a" evicted again; nobody holds the one from "b" or "c"
    gc.collect()
    _, created = s.get_or_add("b", lambda: Item("b"))
    assert created


def test_on_revive_is_told_of_each_value_brought_back_and_of_nothing_created() -> None:
    """on_revive sees a revived value, with its key, as the store holds it again (so an owner
    can undo what on_evict did); a value created anew is not reported."""
    revived: list[tuple[str, Item, bool]] = []
    s: BoundedStore[str, Item] = BoundedStore(
        "Owner",
        "cap",
        1,
        is_idle=lambda item: not item.busy,
        revive=True,
        on_revive=lambda key, item: revived.append((key, item, s.get(key) is item)),
    )
    held = add(s, "a")
    add(s, "b")  # evicts a, still held
    assert revived == []
    assert add(s, "a") is held
    assert revived == [("a", held, True)]
    add(s, "c")  # evicts a; nobody holds b
    gc.collect()
    add(s, "b")
    assert len(revived) == 1


@pytest.mark.parametrize("capacity", [0, -1])
def test_bad_capacity_names_the_owner_field(capacity: object) -> None:
    """An int capacity < 1 is a ValueError with Owner.cap in the message."""
    with pytest.raises(ValueError, match=rf"^Owner\.cap must be >= 1, got {capacity}$"):
        BoundedStore("Owner", "cap", capacity, is_idle=lambda _: True)  # type: ignore[arg-type]


@pytest.mark.parametrize("capacity", [None, True, 1.5, "3"])
def test_a_capacity_of_another_type_is_a_type_error(capacity: object) -> None:
    """A capacity that is no int (None, a bool, a float, a str) is a TypeError, as for every count."""
    shown = rf"{capacity!r} \({type(capacity).__name__}\)"
    with pytest.raises(TypeError, match=rf"^Owner\.cap must be an int, got {shown}$"):
        BoundedStore("Owner", "cap", capacity, is_idle=lambda _: True)  # type: ignore[arg-type]


def ttl_store(clock, ttl: float, evicted: list[str]) -> BoundedStore[str, Item]:
    """A store of Items with a TTL on ``clock``."""
    return BoundedStore(
        "Owner",
        "cap",
        100,
        is_idle=lambda item: not item.busy,
        on_evict=lambda key, _item: evicted.append(key),
        ttl=ttl,
        clock=clock,
        ttl_field="idle_ttl",
    )


def test_idle_entries_unused_for_the_ttl_are_evicted_oldest_first(clock) -> None:
    """Below the cap, an entry not used for ttl seconds goes at the next add, lookup or expire()."""
    evicted: list[str] = []
    s = ttl_store(clock, 10.0, evicted)
    add(s, "a")
    clock.advance(6.0)
    add(s, "b")
    clock.advance(6.0)  # a: 12 s unused, b: 6 s
    add(s, "b")  # a use of b is a look at the oldest too
    assert evicted == ["a"]
    clock.advance(11.0)
    assert s.expire() == 1
    assert evicted == ["a", "b"]
    assert len(s) == 0
    assert s.evicted == 2
    assert s.ttl == 10.0


def test_a_busy_entry_outlives_its_ttl_and_counts_as_used_now(clock) -> None:
    """A busy expired entry is kept and its clock restarts; the idle ones behind it still expire."""
    evicted: list[str] = []
    s = ttl_store(clock, 10.0, evicted)
    busy = add(s, "busy")
    busy.busy = True
    add(s, "idle")
    clock.advance(20.0)
    assert s.expire() == 1
    assert evicted == ["idle"]
    busy.busy = False
    clock.advance(5.0)
    assert s.expire() == 0  # used (busy) 5 s ago
    clock.advance(6.0)
    assert s.expire() == 1


def test_unexpired_counts_what_an_expiry_would_keep_and_evicts_nothing(clock) -> None:
    """unexpired() leaves out the idle entries unused for ttl, keeps the busy ones, changes nothing."""
    evicted: list[str] = []
    s = ttl_store(clock, 10.0, evicted)
    assert s.unexpired(lambda item: not item.busy) == 0
    add(s, "busy").busy = True
    add(s, "old")
    clock.advance(6.0)
    add(s, "young")
    assert s.unexpired(lambda item: not item.busy) == 3
    clock.advance(6.0)  # busy and old: 12 s unused; young: 6 s
    assert s.unexpired(lambda item: not item.busy) == 2
    assert (len(s), s.evicted, evicted) == (3, 0, [])
    assert s.expire() == 1
    assert s.unexpired(lambda item: not item.busy) == len(s) == 2
    untimed = store(1)
    add(untimed, "a")
    assert untimed.unexpired(lambda _item: True) == 1  # no ttl: every entry counts


@pytest.mark.parametrize(
    ("busy", "kept"),
    [("", 2), ("a", 2), ("ab", 3), ("abc", 4), ("d", 2), ("abcd", 4)],
)
@pytest.mark.parametrize("timed", [False, True])
def test_unexpired_leaves_out_the_idle_entries_kept_past_the_capacity(
    clock, busy: str, kept: int, timed: bool
) -> None:
    """Entries added while all were busy (a burst) stay past the capacity until the next add, use
    or trim; unexpired() counts what a trim would keep (idle ones go, oldest first, never the
    youngest), and evicts nothing."""
    evicted: list[str] = []
    s: BoundedStore[str, Item] = BoundedStore(
        "Owner",
        "cap",
        2,
        is_idle=lambda item: not item.busy,
        on_evict=lambda key, _item: evicted.append(key),
        ttl=60.0 if timed else None,
        clock=clock if timed else None,
    )
    items = {}
    for key in "abcd":  # each busy as the next is added: none can be evicted
        items[key] = add(s, key)
        items[key].busy = True
    assert len(s) == 4
    for key, item in items.items():
        item.busy = key in busy
    assert s.unexpired(lambda item: not item.busy) == kept
    assert (len(s), s.evicted, evicted) == (4, 0, [])
    s.trim()
    assert len(s) == kept


def test_unexpired_counts_expired_and_surplus_idle_entries_once(clock) -> None:
    """With a ttl: the idle entries unused for ttl go first, then the idle ones past the capacity,
    as an expiry and then a trim evict them. A busy entry unused for ttl is kept and made the
    youngest: the entry used last is then no longer the youngest, and goes if idle."""
    evicted: list[str] = []
    s: BoundedStore[str, Item] = BoundedStore(
        "Owner",
        "cap",
        1,
        is_idle=lambda item: not item.busy,
        on_evict=lambda key, _item: evicted.append(key),
        ttl=10.0,
        clock=clock,
    )
    items = {}
    for key in "abc":
        items[key] = add(s, key)
        items[key].busy = True
    items["a"].busy = items["c"].busy = False
    clock.advance(5.0)
    s.use("c", evict=False)  # c used 5 s after the others
    clock.advance(6.0)  # a and b unused for 11 s: a expires, b (busy) is kept; c has not expired
    assert s.unexpired(lambda item: not item.busy) == 1  # b: c is past the capacity of 1
    assert (len(s), evicted) == (3, [])
    s.expire()
    s.trim()
    assert evicted == ["a", "c"]
    assert len(s) == 1


def test_a_ttl_needs_a_clock_and_a_positive_duration(clock) -> None:
    """The TTL is validated as a duration, named after the owner's field; a clock is required."""
    with pytest.raises(TypeError, match=r"Owner\.clock must be a Clock when idle_ttl is set"):
        BoundedStore("Owner", "cap", 1, is_idle=bool, ttl=1.0, ttl_field="idle_ttl")
    with pytest.raises(ValueError, match=r"Owner\.idle_ttl must be > 0"):
        BoundedStore("Owner", "cap", 1, is_idle=bool, ttl=0.0, clock=clock, ttl_field="idle_ttl")
    assert BoundedStore("Owner", "cap", 1, is_idle=bool).expire() == 0


def test_use_finds_without_adding_and_marks_the_entry_used() -> None:
    """A miss adds nothing; a hit is the entry's use: past the cap the unused one goes."""
    evicted: list[str] = []
    s = store(2, evicted)
    assert s.use("a") is None
    assert len(s) == 0
    a = add(s, "a")
    add(s, "b")
    assert s.use("a") is a  # "b" is now the oldest
    add(s, "c")
    assert evicted == ["b"]


def test_use_expires_what_went_unused_and_keeps_the_entry_it_uses(clock) -> None:
    """A use looks at the oldest entries too: the expired idle ones go, the one used stays."""
    evicted: list[str] = []
    s = ttl_store(clock, 10.0, evicted)
    add(s, "old")
    kept = add(s, "kept")
    clock.advance(11.0)  # both unused for 11 s: "old" expires, "kept" is used now
    assert s.use("kept") is kept
    assert evicted == ["old"]
    clock.advance(9.0)
    assert s.use("kept") is kept  # used 9 s ago, and now again
    clock.advance(9.0)
    assert s.expire() == 0
    assert s.get("kept") is kept


def test_entries_expired_by_an_add_whose_create_raises_are_still_handed_over(clock) -> None:
    """An add expires the old entries before it builds: a build that raises loses none of them.

    They left the store under its lock; a builder that raised skipped the hand-over, so their
    owner never folded their counts, and they stayed listed as leaving for good.
    """
    evicted: list[str] = []
    s = ttl_store(clock, 10.0, evicted)
    gone = add(s, "old")
    clock.advance(11.0)

    def broken() -> Item:
        raise RuntimeError("cannot build")

    with pytest.raises(RuntimeError, match="cannot build"):
        s.get_or_add("new", broken)
    assert evicted == ["old"]
    assert s.values(evicting=True) == []
    assert s.get("new") is None
    assert gone.name == "old"


def test_a_store_past_its_cap_shrinks_back_as_its_entries_are_used() -> None:
    """Entries kept past the cap while busy go once idle, at later uses, not only at a later add.

    A burst of busy entries left the store above its cap for as long as no new key came: a
    service whose traffic stayed on those keys kept them all.
    """
    evicted: list[str] = []
    s = store(2, evicted)
    for key in "abcdefgh":
        add(s, key).busy = True
    assert len(s) == 8
    for item in s.values():
        item.busy = False
    for _ in range(20):
        s.use("h")
    assert len(s) == 2
    assert s.get("h") is not None
    assert len(evicted) == 6


def test_a_use_past_the_cap_looks_at_one_entry_only() -> None:
    """The shrink costs one look a use: a store whose entries are all busy is not scanned."""
    looks: list[str] = []

    def idle(item: Item) -> bool:
        looks.append(item.name)
        return not item.busy

    s: BoundedStore[str, Item] = BoundedStore("Owner", "cap", 1, is_idle=idle)
    for key in "abcd":
        s.get_or_add(key, lambda key=key: Item(key))[0].busy = True
    looks.clear()
    s.use("d")
    assert len(looks) == 1
    assert len(s) == 4


class Host(str):
    """A str whose == is its own: as a key, it would be told apart from its text by its value."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Host) and str.__eq__(self, other)

    __hash__ = str.__hash__


def test_a_key_is_its_text_a_str_exactly() -> None:
    """key_text gives ``str(key)`` as a ``str`` (not a subclass, whose ``==`` may be its own)."""

    class Tenant:
        def __str__(self) -> str:
            return Host("t-1")

    assert [key_text("Owner.for_key", key) for key in (1, 1.0, True, "1", Host("h"))] == [
        "1",
        "1.0",
        "True",
        "1",
        "h",
    ]
    assert type(key_text("Owner.for_key", Tenant())) is str
    assert key_text("Owner.for_key", Tenant()) == "t-1"
    with pytest.raises(TypeError, match=r"^Owner\.for_key\.key must be hashable, got \[\] \(list\)"):
        key_text("Owner.for_key", [])


def test_a_trim_keeps_the_order_of_last_use_so_the_youngest_entry_still_expires(clock) -> None:
    """A trim that keeps a busy entry (used now) puts it after the youngest, used earlier.

    Kept before it, the busy entry (used now) hid the youngest from the expiry, which stops at
    the first entry used within the ttl: the youngest, unused for the ttl, stayed kept (and
    counted) until the busy entry expired in its turn, a ttl later.
    """
    evicted: list[str] = []
    s: BoundedStore[str, Item] = BoundedStore(
        "Owner",
        "cap",
        1,
        is_idle=lambda item: not item.busy,
        on_evict=lambda key, _item: evicted.append(key),
        ttl=10.0,
        clock=clock,
    )
    add(s, "busy").busy = True
    add(s, "idle")  # past the cap, but the busy entry stays
    clock.advance(4.0)
    assert s.trim() == 0  # the busy entry is in use now: used 4 s after "idle"
    clock.advance(6.0)  # "idle": 10 s unused; "busy": 6 s
    assert s.unexpired(lambda item: not item.busy) == 1
    assert s.expire() == 1
    assert evicted == ["idle"]
    assert [key for key, _ in s.items()] == ["busy"]
