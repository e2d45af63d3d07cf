"""One breaker shared through a :class:`~otel_resilience.store.RedisStore`: its counts, state and leases.

A :class:`SharedBreaker` is the store's side of one breaker. The breaker's rules never wait on
it: they read :meth:`merged` (plain attributes) under their lock, and its background work runs
in the store's thread (:func:`tick`, :meth:`publish`, :func:`read_states`) and its subscriber
(:meth:`on_message`). Keys, for a breaker named ``name`` in namespace ``ns`` (``:`` and ``%`` in
the namespace and the name percent-encoded, so that two namespaces or names never share a key):

* ``ns:cb:name:state`` - a hash ``{epoch, state, until, reason}``: the cluster's state period;
  ``until`` is the server time (ms) an OPEN period ends. Expires ``key_ttl`` after its last change.
  Epochs never go back, even after the server lost the hash (``scripts.PUBLISH_STATE``).
* ``ns:cb:name:counts:EPOCH`` - a hash, one field per replica: its counts in that period, reported
  when they change and again every ``resync_interval`` while there are any (:meth:`SharedBreaker._report`).
* ``ns:cb:name:lease:EPOCH:i`` - probe lease ``i`` (``1 <= i <= half_open_max_calls``) of the
  OPEN period ``EPOCH`` once it has ended; ``SET NX PX``, so a crashed prober's lease expires.
  A replica holds one per call of it that wants one (:meth:`SharedBreaker._lease_request`). Its
  value is the holder's replica id: a holder gives its leases up by deleting those that still
  hold it (``scripts.GIVE_UP_LEASES``), once no call of it wants them (:meth:`SharedBreaker._give_up`),
  and those beyond what its calls want in its next request (``scripts.TAKE_LEASES``).
* ``ns:cb:name:probes:EPOCH`` - a hash, one field per replica: its probe successes after the
  OPEN period ``EPOCH``; their sum reaching ``success_threshold`` closes the breaker, unless
  the sum of ``ns:cb:name:slowprobes:EPOCH`` (the slow ones among them, one field per replica)
  says the probes were too slow: it re-opens then.
* ``ns:cb:name:wants:EPOCH`` - a hash, one field per replica: when a call of it was last rejected
  again for want of a lease another replica held (server ms); a holder none of whose calls
  probed since it took its leases gives them up to it (:meth:`SharedBreaker._lease_request`).
  These three are deleted when the next period is published (``scripts.PUBLISH_STATE``), else
  expire ``key_ttl`` after their last write.

A key the server refuses (``WRONGTYPE``: something else wrote a string where the store keeps a
hash, or a value a script cannot read) is that breaker's problem alone: it runs on local state
(logged once, with the key; each refused operation counted in the store's ``errors``) until the
operation works again, while the store and its other breakers go on sharing
(:meth:`SharedBreaker.accepted`). Only an outage (no answer, ``READONLY``, ``OOM``) degrades the store.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import weakref
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from otel_resilience.engine.events import StateChanged, key_attribute
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.shared import PeerCounts
from otel_resilience.patterns.circuit_breaker import shared
from otel_resilience.patterns.circuit_breaker.state import CircuitState
from otel_resilience.patterns.circuit_breaker.window import TimeWindow
from otel_resilience.store import scripts

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from otel_resilience.patterns.circuit_breaker.facade import CircuitBreaker
    from otel_resilience.store.redis_store import RedisStore

__all__ = ["SharedBreaker", "key_part", "publish_states", "read_states", "tick"]

_LOG: Final = logging.getLogger("otel_resilience")
_ADOPTING: Final = threading.local()
"""Per thread: a state change being adopted (from the cluster), which is not published back."""
_NO_COUNTS: Final = (0, 0, 0)
_PEER_MAX_AGE_MS: Final = 60_000
"""A peer's counts older than this no longer count (its replica is gone), unless the window is longer."""
_WINS_OVER: Final = "closed"
"""The cluster state a trip is published over whatever its epoch (a trip is evidence; an operator's
``disabled`` or ``metrics_only`` is not overruled by it): :data:`~otel_resilience.store.scripts.PUBLISH_STATE`
applies it on the server, in the publication's one round trip."""
_OPERATOR_WINS: Final = "*"
"""What an operator's action is published over, whatever its epoch (:data:`_OPERATORS`): the later
of two actions made on two replicas applies to all, even when its replica had not yet heard of the
earlier one (dropped, an operator's ``reset`` right after another's ``force_open`` left the cluster
OPEN until a next reset). Not an action made while its replica could not reach Redis, or whose
publication failed (an outage): sent late, it would undo the actions made on the others since;
it is published as any transition is."""
_OPERATORS: Final = frozenset({"forced", "reset"})
"""The reasons of an operator's transitions (``force_open``, ``reset``, ``force_closed``, a mode)."""
_UNPUBLISHED: Final = frozenset({"half_open"})
"""States each replica reaches on its own (the end of an OPEN period is the server's time)."""
_STATES: Final = {state.value: state for state in CircuitState}
_AFTER_A_TRIP: Final = (CircuitState.OPEN, CircuitState.HALF_OPEN)
_MODES: Final = (CircuitState.DISABLED, CircuitState.METRICS_ONLY)
"""An operator's modes: a replica in one founds it again when the server lost the cluster's state
(:meth:`SharedBreaker._take_state`), as an OPEN replica does. Left to the next transition, a mode
whose key expired (``key_ttl`` after its last change) or that a restart lost reached no replica
started since: those ran the breaker CLOSED beside the others, until an operator's next move."""
_READ_BATCH: Final = 200
"""Breakers one round trip (pipelined) reads the cluster state of, or reports the counts or
publishes the transitions of."""
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
"""A lone surrogate: UTF-8 cannot encode it (:func:`key_part` percent-encodes it)."""
_LeaseCall: TypeAlias = tuple[str, list[str], list[Any]]
"""A lease script to run in the store's round: the script, its keys, its arguments."""


def key_part(text: str) -> str:
    r"""Return ``text`` with ``%`` and ``:`` percent-encoded: a key part that never spans a ``:``.

    Each lone surrogate is percent-encoded too (the bytes of its ``surrogatepass`` encoding): a
    ``str`` may hold one (``json.loads('"\udcff"')``, a ``surrogateescape`` decode) that UTF-8
    cannot encode, and a key holding it could not be sent (redis-py raised ``UnicodeEncodeError``
    in the store's pipelined round, for every breaker of the store, or to a rate limiter's caller).
    No two texts give one key part.
    """
    escaped = text.replace("%", "%25").replace(":", "%3A")
    return escaped if escaped.isascii() else _SURROGATE.sub(_percent_encoded, escaped)


def _percent_encoded(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))


def key_name(name: str, key: str | None) -> str:
    """Return the key part of a pattern's ``name`` and its policy ``key`` (``None``: not keyed)."""
    return key_part(name) if key is None else f"{key_part(name)}:{key_part(key)}"


def _ms(seconds: float | None) -> int:
    """Milliseconds OPEN for a script: ``-2`` for ever, ``-1`` for no OPEN period."""
    if seconds is None:
        return -1
    return -2 if math.isinf(seconds) else max(1, round(seconds * 1000))


def _seconds(ms: int) -> float | None:
    """The inverse of :func:`_ms` (``inf`` for ever, ``None`` for no period)."""
    if ms == -2:
        return math.inf
    return None if ms < 0 else ms / 1000


class SharedBreaker(PeerCounts):
    """The store's link to one breaker (held weakly: a breaker that is gone is dropped).

    Attributes:
        epoch: The cluster state period this replica's state belongs to (0: none known).
        leases: Probe leases this replica holds (its probe limit while shared).
    """

    __slots__ = (
        "_adopted",
        "_breaker",
        "_failed",
        "_id",
        "_last_report",
        "_late",
        "_lease_due",
        "_lock",
        "_made_in",
        "_max_age",
        "_open_reason",
        "_peer_probes",
        "_peer_slow_probes",
        "_peers",
        "_prefix",
        "_probed",
        "_refresh",
        "_refused",
        "_rejected_seen",
        "_report_due",
        "_since",
        "_store",
        "_wanted",
        "epoch",
        "key_name",
        "leases",
    )

    def __init__(self, store: RedisStore, breaker: CircuitBreaker, replica: str, key: str | None) -> None:
        self._store = store
        self._breaker: Callable[[], CircuitBreaker | None] = weakref.ref(breaker)
        self.key_name = key_name(breaker.name, key)
        self._id = replica
        self._prefix = f"{store.key_prefix}:cb:{self.key_name}"
        self._late = False
        """The transition queued was made while the store could not reach Redis, or its publication
        failed (:meth:`RedisStore._queue`): an operator's action is then published as any
        transition is (:meth:`_publication`, :data:`_OPERATOR_WINS`)."""
        self._made_in = 0
        """The cluster's period (:attr:`epoch`) the transition queued was made in: a late one is
        published from it (:func:`publish_states`), so that a period the replica took since (on
        rejoining Redis, before the publication was sent) makes it fail as the others' later word."""
        self._adopted: object = None
        """The breaker's state period (its core's permit) as this link's last adoption left it
        (:meth:`_adopt`): while the breaker is still in it, no transition of its own came since."""
        self._peers = _NO_COUNTS
        self._peer_probes = 0
        """The other replicas' probe successes in this period, as last read from the store."""
        self._peer_slow_probes = 0
        """The slow ones among them (with ``slow_call_duration``)."""
        self._probed = False
        self._failed = False
        self._last_report: tuple[int, int, int] | None = None
        self._lease_due = 0.0
        self._rejected_seen = 0
        """The breaker's ``total_rejected`` at the last round: more since, and a call wanted a probe."""
        self._wanted = 0
        """The calls rejected in HALF_OPEN since a probe of this replica last ran (at most
        ``half_open_max_calls``): each wants a lease (:meth:`_lease_request`)."""
        self._since = 0
        """When this replica took the leases it holds (the server's ms): a want of another replica since
        then takes them, unless a probe of this one ran (:meth:`_lease_request`)."""
        self._lock = fork_safe(threading.RLock())
        """Orders the store's thread and its subscriber on :attr:`epoch` (never held by a call)."""
        self._open_reason = "failure_threshold"
        """Why this replica's breaker last opened (published again if the cluster lost it)."""
        window = breaker.config.sliding_window
        seconds = window.seconds if isinstance(window, TimeWindow) else 0.0
        self._max_age = max(_PEER_MAX_AGE_MS, round(seconds * 1000))
        self._refresh = min(store._resync_every, self._max_age / 2000)
        """Seconds after which counts that did not change are reported again (:meth:`_report`): the
        store's ``resync_interval``, and at most half :attr:`_max_age`, so that no peer drops them."""
        self._report_due = 0.0
        """When (``time.monotonic()``) counts that did not change are due to be reported again."""
        self._refused: dict[str, str] = {}
        """The operations (``state``, ``counts``, ``leases``) the server refuses, and their keys."""
        self.epoch = 0
        self.leases = 0

    def forked(self, replica: str) -> None:
        """In a forked child: report as the new replica ``replica``, without the parent's leases or counts.

        The counts of the current period stay the parent's (it reports them): the child's start
        from none, and the parent's reach the child as a peer's. So do the leases: the child's
        probe limit is its own (none) from the fork on, not from its store's first round, in
        which its calls probed on a lease its parent held (and probed on).
        """
        self._id = replica
        self._last_report = None
        self._lease_due = 0.0
        self._probed = False
        self._wanted = self.leases = 0
        breaker = self.breaker
        if breaker is not None:
            shared.forget_counts(breaker._core)
            self._apply_probe_limit(breaker)

    # -- what the breaker's rules read (under their lock; never blocking) --------------------

    def merged(self, local: tuple[int, int, int]) -> tuple[int, int, int]:
        """Return ``local`` plus the peers' counts as last read from the store."""
        peers = self._peers
        return (local[0] + peers[0], local[1] + peers[1], local[2] + peers[2])

    def failed(self) -> None:
        """Wake the store's thread: a failure is reported at once, not with the next batch."""
        self._failed = True
        self._store._wake.set()

    def merged_probes(self, local: tuple[int, int]) -> tuple[int, int]:
        """Return ``local`` ``(probe successes, slow ones)`` plus the peers' in this period, as last read."""
        return (local[0] + self._peer_probes, local[1] + self._peer_slow_probes)

    def probed(self) -> None:
        """Wake the store's thread: a probe success is reported at once (the cluster sums them)."""
        self._probed = True
        self._store._wake.set()

    # -- the store's thread --------------------------------------------------------------------

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The breaker, or ``None`` once it is gone."""
        return self._breaker()

    def on_change(self, change: StateChanged) -> None:
        """The breaker's state change callback: queue a local transition for publishing.

        A move to HALF_OPEN is never published, but it wakes the store's thread: a call made
        it, and the call asks for a probe lease in that round (:meth:`_lease_request`). A new
        OPEN period of an OPEN breaker (forced open again, for another time: the breaker's one
        change in the state it ends) is published as any opening: the others would close the
        cluster at the earlier one's end.
        """
        if change.new in _UNPUBLISHED:
            self._store._wake.set()
            return
        if getattr(_ADOPTING, "on", False):
            return
        if change.new == "open":
            self._open_reason = change.reason
        self._store._queue(self, change)

    def acted(self, change: StateChanged) -> None:
        """An operator's action that left the breaker's state as it was here: published as a transition is.

        The action is every replica's (README, "Shared state on Redis"): a reset made on a
        replica that is CLOSED (it had not yet heard of another's ``force_open``, or never takes
        the cluster's state) closes the replicas that are OPEN, as a reset of an OPEN replica
        does. Not published, they stayed OPEN (for good after a ``force_open()`` until reset).
        """
        self._store._queue(self, change)

    def publish(self, client: Any, change: StateChanged) -> None:
        """Publish a local transition (compare-and-set on :attr:`epoch`); adopt the cluster's if it moved.

        :func:`publish_states` for this one alone.
        """
        publish_states(client, [(self, change)])

    def _publication(
        self, change: StateChanged, epoch: int
    ) -> tuple[SharedBreaker, str, list[str], list[Any]]:
        """The ``PUBLISH_STATE`` call (:func:`_eval_batch`) moving the cluster from ``epoch`` on."""
        store = self._store
        open_ms = _ms(change.duration) if change.new == "open" else -1
        argv = [epoch, change.new, open_ms, change.reason, store.channel, store.key_ttl_ms]
        operator = change.reason in _OPERATORS and not self._late  # late: others may have acted since
        wins = _OPERATOR_WINS if operator else _WINS_OVER if change.new == "open" else ""
        argv += [f"{self._id}|{self.key_name}", wins]
        argv.append(f"{self._prefix}:")  # the period it ends takes its probe keys with it
        return self, scripts.PUBLISH_STATE, [f"{self._prefix}:state"], argv

    def _published(self, reply: Any, change: StateChanged) -> None:
        """Take the ``PUBLISH_STATE`` reply to ``change``: this replica's new period, or the cluster's.

        A period published is the cluster's, and this replica's too: if the replica took another
        state meanwhile (a transition of another replica delivered between its own and its
        publication: an operator's ``force_open`` there, then a ``reset`` here, made before this
        replica heard of it), it takes the one it published (:meth:`_adopt`). Left in the
        other, it ran apart from the cluster: OPEN beside a CLOSED cluster, until its next read
        of the cluster's state published its OPEN again, which undid the reset everywhere.
        Only a state it adopted is so replaced: not one it came to by a later transition of its
        own, queued (:meth:`RedisStore._queued`) or made and not yet told to the store (a
        breaker tells its changes outside its lock, in the order made: while another thread
        delivers an earlier one, a later waits), nor HALF_OPEN after an OPEN it took.

        Raises:
            Exception: ``reply`` is an outage (:meth:`accepted`).
        """
        if not self.accepted("state", f"{self._prefix}:state", reply):
            return  # refused: the breaker runs on local state (a trip is published again on healing)
        if reply[0]:
            self.epoch = max(self.epoch, int(reply[1]))
            self._forget()  # a new period: no lease held in it yet, so no probe either
            breaker = self.breaker
            if breaker is None:
                return
            if self._store._queued(self) or breaker._core._permit is not self._adopted:
                # Not in a state it adopted: its own (a later transition of this replica, queued
                # or on its way), not the one this reply confirms.
                self._apply_probe_limit(breaker)
                return
            open_ms = _ms(change.duration) if change.new == "open" else -1
            self._adopt(self.epoch, change.new, open_ms, change.reason)  # no change if it is in it
            return
        self._adopt(int(reply[1]), _text(reply[2]), int(reply[3]), _text(reply[4]), current=True)

    def accepted(self, operation: str, keys: str, reply: Any) -> bool:
        """Whether ``reply`` (to ``operation`` on ``keys``) is one to take, or the server's refusal.

        A refusal (an error the server answered, :meth:`RedisStore.answered`) is this breaker's:
        counted in the store's ``errors``; the first one of an operation is logged (naming the
        keys), and the breaker runs on local state until every refused operation worked again.
        The other breakers and the store are not affected.

        Raises:
            BaseException: ``reply`` is any other error: the store is unreachable (its outage path).
        """
        store = self._store
        if isinstance(reply, BaseException):
            if not store.answered(reply):
                raise reply
            store.refused()
            first = operation not in self._refused
            was_shared = not self._refused
            self._refused[operation] = keys
            if first:
                _LOG.warning(
                    "shared store %r refused breaker key %r (%s: %s): breaker %r runs on local state",
                    store.namespace,
                    key_attribute(keys),  # a long one cut, as a resilience.key is
                    type(reply).__name__,
                    reply,
                    key_attribute(self.key_name),
                )
            if was_shared:
                self.go_local()
            return False
        if self._refused.pop(operation, None) is not None and not self._refused:
            _LOG.warning(
                "shared store %r takes breaker %r's keys again: shared again",
                store.namespace,
                key_attribute(self.key_name),
            )
            breaker = self.breaker
            if breaker is not None:
                self._apply_probe_limit(breaker)
        return True

    @property
    def local_only(self) -> bool:
        """Whether this breaker runs on local state: its store does, or the server refuses one of its keys."""
        return bool(self._refused) or self._store.local_only

    def resync(self, client: Any) -> None:
        """Read the cluster's state and take it (:func:`read_states` for this breaker alone)."""
        read_states(client, [self])

    def _take_state(self, breaker: CircuitBreaker, reply: Any, permit: object) -> None:
        """Take the cluster's state read by ``READ_STATE`` (a replica joining, or after the store came back).

        Not when the breaker made a transition of its own since the read was asked (its state
        period, ``permit`` then, is another now) or one waits to be published: the read does not
        hold it, and taking it undid it (an operator's ``reset`` waiting to be published, undone
        by a read of the cluster still OPEN from the replica's earlier ``force_open``: OPEN again
        until the reset's publication was taken back, two transitions reported that nobody made).
        The publication compares and sets on the period and takes the cluster's state if it
        moved (:meth:`_published`); a move of the breaker's own that is not published (to
        HALF_OPEN) waits for the next read.

        An OPEN replica facing a cluster that is CLOSED, or has no state (it tripped while the
        store was away), publishes its OPEN instead: a trip is never lost. So does a replica in
        an operator's mode (:data:`_MODES`) facing no state (the server lost it): the replicas
        that start later take it. An operator's ``disabled`` or ``metrics_only`` is adopted (the
        rule of :data:`~otel_resilience.store.scripts.PUBLISH_STATE`, :data:`_WINS_OVER`).
        A CLOSED replica facing no state takes none (epoch 0), as a replica joining now does: its
        counts are then reported where that one's are (``counts:0``), until a transition founds
        a period for all. Kept at the lost period's epoch, the replicas running since then and
        those started after the loss (a restart, ``key_ttl`` after the last change) reported
        their counts apart, and opened on their own sums only.
        """
        if breaker._core._permit is not permit or self._store._queued(self):
            return
        epoch, state, left, reason = reply
        state, reason = _text(state), _text(reason)
        local = breaker._core._permit.state
        if state == "" and local is CircuitState.CLOSED:
            if self.epoch:
                self.epoch = 0
                self._forget()  # this period's peers are gone with it; its counts reported again
            return
        if int(epoch) <= self.epoch and (
            (local is CircuitState.OPEN and state in ("", _WINS_OVER)) or (local in _MODES and state == "")
        ):
            # Opened here after the last period this replica saw (it tripped while the store was
            # away), or the server lost the state of this replica's period: published through the
            # queue, where a transition of its own already waiting wins, so it is published once.
            # A cluster that moved on since (a larger epoch) is adopted instead: this replica
            # merely had not heard of it yet.
            self.epoch = int(epoch)
            if local is CircuitState.OPEN:
                again = StateChanged("closed", "open", self._open_reason, 0, breaker._core.retry_after())
            else:
                again = StateChanged(local.value, local.value, "forced")
            self._store._queue(self, again, replace=False)
            return
        self._adopt(int(epoch), state, int(left), reason, current=True)

    def on_message(self, origin: str, epoch: int, state: str, open_ms: int, reason: str) -> None:
        """A transition a replica published (from the subscriber thread); this one's own are skipped."""
        with self._lock:
            if origin != self._id and epoch > self.epoch:
                self._adopt(epoch, state, open_ms, reason)

    def _adopt(self, epoch: int, state: str, left_ms: int, reason: str, *, current: bool = False) -> None:
        """Take the cluster's period ``epoch`` in ``state`` (OPEN for ``left_ms`` more).

        ``current``: read from the server now (not a message, which may come late). The server's
        epoch never goes back, so one below this replica's says the server lost the state and
        something founded it again since (a replica of an earlier version, whose epochs only
        count up): this replica takes it as the cluster's, its own epoch with it, so that its
        next publication's compare-and-set holds again.
        """
        if current and 0 < epoch < self.epoch:
            self.epoch = epoch
            self._forget()
        breaker = self.breaker
        if breaker is None or epoch < self.epoch or state not in _STATES:
            self.epoch = max(self.epoch, epoch)
            return
        local = breaker._core._permit.state
        if epoch == self.epoch and state == "open" and local in _AFTER_A_TRIP:
            # The period this replica already took (its timer, or a newer local period that is
            # being published): nothing to adopt, only the probes it may run.
            self._apply_probe_limit(breaker)
            return
        if epoch > self.epoch:
            self._forget()
        self.epoch = epoch
        if state == "open" and reason:
            self._open_reason = reason
        open_for = _seconds(left_ms) if state == "open" else None
        if open_for is not None and not math.isinf(open_for):
            open_for = max(open_for, 1e-3)  # ended: HALF_OPEN at the next call, as after a local trip
        _ADOPTING.on = True
        try:
            shared.adopt(breaker._core, self, _STATES[state], open_for, reason or "forced")
        finally:
            _ADOPTING.on = False
        self._adopted = breaker._core._permit
        self._apply_probe_limit(breaker)

    def _report(
        self, breaker: CircuitBreaker, now: float
    ) -> tuple[tuple[object, ...], tuple[int, int, int]] | None:
        """The ``FLUSH_COUNTS`` arguments reporting this replica's counts, if they changed (or it failed).

        Counts that did not change are reported again every :attr:`_refresh` seconds while there
        are any: the other replicas drop a report older than :attr:`_max_age` (its replica is
        gone), and the server may lose it (restarted without persistence, ``FLUSHALL``, an
        eviction). Reported once, the failures of a replica with no call since were lost to the
        cluster either way: the next replica's failure did not open a breaker whose
        ``failure_threshold`` the cluster's failures met.
        """
        counts = shared.local_counts(breaker._core)
        failed, self._failed = self._failed, False
        if counts == self._last_report and not failed and (now < self._report_due or counts == _NO_COUNTS):
            return None
        self._report_due = now + self._refresh
        key = f"{self._prefix}:counts:{self.epoch}"
        return (key, self._id, *counts, self._max_age, self._max_age), counts  # older entries: gone

    def _reported(self, breaker: CircuitBreaker, counts: tuple[int, int, int], peers: Any) -> None:
        """Take the peers' counts the store answered to this replica's report of ``counts``."""
        self._last_report = counts
        if self.local_only:  # its state refused: judged on its own counts
            return
        self._peers = (int(peers[0]), int(peers[1]), int(peers[2]))
        shared.reconsider(breaker._core)

    def rejected_since(self, breaker: CircuitBreaker) -> int:
        """The calls the breaker rejected since the last round (read each round while not CLOSED)."""
        rejected = breaker._core.stats.total_rejected
        since, self._rejected_seen = rejected - self._rejected_seen, rejected
        return since

    def _lease_request(self, breaker: CircuitBreaker, now: float) -> _LeaseCall | None:
        """The lease call due this round: ``TAKE_LEASES`` (as many leases as its calls want), or a give-up.

        A replica holds leases for its calls only, as many as they want (at most
        ``half_open_max_calls``): one for each probe of it running, and one for each call it
        rejected in HALF_OPEN for want of a probe place (:attr:`_wanted`) until a probe of its own
        runs. One with no call to probe with took the cluster's leases as soon as its OPEN period
        ended (and again as they expired), and the replicas with the calls rejected every probe
        meanwhile; one whose single call was rejected took every free lease, and renewed them all
        while its one probe ran: with ``half_open_max_calls=3`` and that probe hanging on a slow
        dependency, the other replicas ran no probe for as long as it hung (0 in 1 s), though the
        cluster allowed 2 more. Due when this replica holds another number than its calls want,
        when they need renewing (``PEXPIRE``, only while a probe runs), or after a probe success
        (reported at once). Leases beyond what its calls want are given up by the request itself
        (its own deleted, once the probe limit went down: :meth:`_hold_at_most`), and all of them when
        no call wants any more (a probe of this replica ran, and no call of it was rejected since)
        in the next round (:meth:`_give_up`, in the store's pipelined round), rather than
        taken again as they expire: the next replica with a call probes within a round or two.
        Left to expire, unrenewed, they made the other replicas reject every call (``half_open_full``)
        until then, ``probe_lease_ttl`` after this one's last renewal (2.04 s with a 2 s TTL).

        Leases held for calls that were rejected before they came (no probe of this replica
        ran since) are asked for every round: once another replica's call is rejected again
        for want of one (it asked, got fewer than it wants, and had another call rejected: a
        replica with traffic), this one gives them up at once (:meth:`_leases_held`) rather than
        holding them, taken again as they expire, until a call of its own comes, which for a
        replica whose only call was rejected is never. Alone, it keeps them for its next call,
        however late.
        """
        probed, self._probed = self._probed, False
        core = breaker._core
        in_flight = core._permit.in_flight
        probing = probed or bool(in_flight)  # a probe of this replica ran since the last round
        rejected = self.rejected_since(breaker)
        again = rejected and self._wanted  # asked, and rejected again: it holds fewer than it wants
        most = breaker.config.half_open_max_calls
        self._wanted = min(rejected if probing else self._wanted + rejected, most)
        wanted = min(in_flight + self._wanted, most)
        idle = self.leases and not (probing or rejected)  # held for a call that is gone
        if not (wanted or probed):
            return self._give_up(breaker) if self.leases else None
        if wanted == self.leases and now < self._lease_due and not probed and not idle:
            return None
        if wanted < self.leases:
            wanted = self._hold_at_most(breaker, wanted)
        store = self._store
        renew = 1 if core._permit.in_flight else 0
        keys = [
            f"{self._prefix}:state",
            f"{self._prefix}:probes:{self.epoch}",
            f"{self._prefix}:wants:{self.epoch}",
            f"{self._prefix}:slowprobes:{self.epoch}",
        ]
        prefix = f"{self._prefix}:lease:{self.epoch}:"
        argv = [prefix, self._id, store.lease_ttl_ms, breaker.config.half_open_max_calls, renew]
        argv += [core.stats.success_count, store.key_ttl_ms, 1 if again else 0, self._since if idle else 0]
        argv += [core._permit.slow_probes, wanted]
        return scripts.TAKE_LEASES, keys, argv

    def _hold_at_most(self, breaker: CircuitBreaker, wanted: int) -> int:
        """Lower this replica's probe limit to ``wanted`` leases, before the leases beyond go to the others.

        A probe that started on one of them meanwhile keeps it. Returns the leases kept: ``wanted``,
        or the probes running if more.
        """
        with self._lock:  # the subscriber applies the probe limit too
            self.leases = wanted
            self._apply_probe_limit(breaker)
            in_flight = breaker._core._permit.in_flight  # no probe starts beyond the limit from now on
            if in_flight > wanted:
                self.leases = in_flight
                self._apply_probe_limit(breaker)
            return self.leases

    def _leases_held(self, client: Any, breaker: CircuitBreaker, reply: Any, now: float) -> None:
        """Take a ``TAKE_LEASES`` reply: the leases held, the peers' probe successes (or a resync).

        Leases another replica wants since this one took them, none of its probes having run
        (the request looked for a want only then), are given up (:meth:`_give_up_leases`).
        """
        core = breaker._core
        store = self._store
        held, first_ms, state, others, wanted, server_ms, others_slow = reply
        state = _text(state)
        if state not in ("", "open"):
            self.resync(client)  # the cluster moved on (closed by another replica's probes)
            return
        if int(held) and not self.leases:
            self._since = int(server_ms)
        self.leases = int(held)
        self._lease_due = now + min(int(first_ms) / 1000, store.lease_ttl_ms / 3000) if held else now
        self._apply_probe_limit(breaker)
        if int(others) != self._peer_probes or int(others_slow) != self._peer_slow_probes:
            self._peer_probes, self._peer_slow_probes = int(others), int(others_slow)
            shared.reconsider(core)  # the cluster's probe successes may close (or re-open) it now
        if int(wanted) and self.leases:
            self._give_up_leases(client, breaker)

    def _give_up_leases(self, client: Any, breaker: CircuitBreaker) -> None:
        """Give the leases this replica holds up to a replica whose calls want them, now (:meth:`_give_up`).

        It then wants none until a call of its own is rejected again.
        """
        call = self._give_up(breaker)
        if call is None:
            return
        script, keys, argv = call
        (reply,) = _eval_batch(client, [(self, script, keys, argv)])
        if self._gave_up(argv, reply):
            self._wanted = 0

    def _give_up(self, breaker: CircuitBreaker) -> _LeaseCall | None:
        """The ``GIVE_UP_LEASES`` call deleting this replica's leases, or ``None`` (a probe runs on them).

        This replica's probe limit goes to 0 first (:meth:`_hold_at_most`), so that no probe of
        it starts on leases another replica may take from now on; a probe that started before
        keeps its lease (nothing is sent: the next request gives the others up). Only the lease
        keys still holding this replica's id are deleted: one that expired and another replica
        took since is that one's. The call lost (the store unreachable, or closed first), they
        expire after ``probe_lease_ttl``, as a crashed prober's do.
        """
        with self._lock:  # the subscriber applies the probe limit too: it reads no lease from now on
            if self._hold_at_most(breaker, 0):  # a call probes with them: held, as for any probe
                return None
            prefix = f"{self._prefix}:lease:{self.epoch}:"
        return scripts.GIVE_UP_LEASES, [], [prefix, self._id, breaker.config.half_open_max_calls]

    def _gave_up(self, argv: Sequence[Any], reply: Any) -> bool:
        """Take the ``GIVE_UP_LEASES`` reply to ``argv``: whether the server took it (:meth:`accepted`).

        Raises:
            Exception: ``reply`` is an outage (:meth:`accepted`).
        """
        return self.accepted("leases", f"{argv[0]}*", reply)  # refused: on local state now (go_local)

    def _apply_probe_limit(self, breaker: CircuitBreaker) -> None:
        """Probes this replica may run: its leases, or the configured number when the store is down.

        Any thread may apply it while another finds the store down (:meth:`RedisStore.failed`
        marks it degraded, then makes every link local): the leases are applied, then the store
        looked at again, so that a limit of leases applied after the store went down (where the
        link went local first) is replaced by the local one.
        """
        if not self.local_only:
            shared.set_probe_limit(breaker._core, self, self.leases)
            if not self.local_only:
                return
        shared.set_probe_limit(breaker._core, self, breaker.config.half_open_max_calls)

    def _forget(self) -> None:
        """Forget what the store said of the peers' period (a new period, or the store gone)."""
        self._peers, self._peer_probes, self._last_report, self.leases = _NO_COUNTS, 0, None, 0
        self._peer_slow_probes = 0
        self._wanted = 0

    def reported(self) -> tuple[str, str] | None:
        """The counts report of this replica in its period (key, field), or ``None`` if it made none."""
        if self._last_report is None:
            return None
        return f"{self._prefix}:counts:{self.epoch}", self._id

    def detach(self) -> None:
        """Forget the breaker: from now on every operation of this link finds it gone."""
        self._breaker = _gone

    def go_local(self) -> None:
        """The store is unreachable: judge on local counts, gate probes locally."""
        self._forget()
        self.rejoin()

    def rejoin(self) -> None:
        """Probe as the store allows now (:meth:`_apply_probe_limit`): once it is back, on leases again.

        The round that finds the store again reads each breaker's state before the store says it
        is back: taken then, a state kept the probe limit of a breaker on its own, and a period
        open across the outage was probed on every replica without a lease.
        """
        breaker = self.breaker
        if breaker is not None:
            self._apply_probe_limit(breaker)


def read_states(client: Any, links: Sequence[SharedBreaker]) -> None:
    """Read the cluster state of each of ``links`` and take it, :data:`_READ_BATCH` per round trip.

    One read per round trip made the store's thread spend a round trip per breaker on every
    resync: with thousands of breakers, seconds in which no failure was reported and no trip
    published. Each link's lock is held from its read to the taking of its state, as when it
    was read alone: a transition the subscriber takes meanwhile waits, so a state read before
    it is never taken after it.
    """
    for start in range(0, len(links), _READ_BATCH):
        batch: list[tuple[SharedBreaker, CircuitBreaker]] = []
        for link in links[start : start + _READ_BATCH]:
            breaker = link.breaker
            if breaker is not None:
                batch.append((link, breaker))
        if not batch:
            continue
        with contextlib.ExitStack() as held:
            for link, _ in batch:
                held.enter_context(link._lock)
            permits = [breaker._core._permit for _, breaker in batch]  # their periods as the read is asked
            calls = ((link, scripts.READ_STATE, [f"{link._prefix}:state"], ()) for link, _ in batch)
            replies = _eval_batch(client, calls)
            for (link, breaker), permit, reply in zip(batch, permits, replies, strict=True):
                if link.accepted("state", f"{link._prefix}:state", reply):
                    link._take_state(breaker, reply, permit)


def publish_states(
    client: Any,
    changes: Sequence[tuple[SharedBreaker, StateChanged]],
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Publish local transitions (:data:`_READ_BATCH` per round trip); stop between two when ``stop()``.

    A round trip each made a store with many trips queued (a dependency that broke hundreds of
    breakers) spend as many round trips publishing them, in which no failure was reported and
    no lease taken, and the last trip reached the other replicas after all the others'. Each
    link's lock is held from its publication to the taking of its reply, as in
    :func:`read_states`. A trip whose compare-and-set fails against a CLOSED cluster is
    published all the same, by the script (a trip wins over CLOSED): one round trip per batch,
    whose outcome on the server does not wait for its reply. The transitions the store did not
    take (an outage) are queued again (:meth:`RedisStore._queue`: unless a newer one of their
    breaker came), with those of the batches not sent, and the first outage is raised once
    every other reply of its batch was taken.

    Raises:
        Exception: The store is unreachable (its outage path).
    """
    for start in range(0, len(changes), _READ_BATCH):
        if stop():
            return
        unsent, outage = _publish_batch(client, changes[start : start + _READ_BATCH])
        if outage is not None:
            for link, change in [*unsent, *changes[start + _READ_BATCH :]]:
                link._store._queue(link, change, replace=False)
            raise outage


def _publish_batch(
    client: Any, changes: Sequence[tuple[SharedBreaker, StateChanged]]
) -> tuple[list[tuple[SharedBreaker, StateChanged]], BaseException | None]:
    """Publish ``changes`` in one round trip; return the unsent, the outage."""
    unsent: list[tuple[SharedBreaker, StateChanged]] = []
    outage: BaseException | None = None
    with contextlib.ExitStack() as held:
        for link, _ in changes:
            held.enter_context(link._lock)
        errors = changes[0][0]._store._redis_errors
        try:
            replies = _eval_batch(
                client,
                (
                    link._publication(change, link._made_in if link._late else link.epoch)
                    for link, change in changes
                ),
            )
        except errors as error:  # the round trip failed: every reply is that outage
            replies = [error] * len(changes)
        for (link, change), reply in zip(changes, replies, strict=True):
            try:
                link._published(reply, change)
            except errors as error:
                outage = outage or error
                unsent.append((link, change))
    return unsent, outage


def _eval_batch(
    client: Any, calls: Iterable[tuple[SharedBreaker, str, Sequence[Any], Sequence[Any]]]
) -> list[Any]:
    """Run ``calls`` (``link, script, keys, argv``) in one round trip (a pipeline).

    Each counts an operation of its link's store. Returns the replies in order, an error (a
    refusal, an outage) in place of its call's reply.
    """
    pipe = client.pipeline(transaction=False)
    for link, script, keys, argv in calls:
        next(link._store._ops)
        pipe.eval(script, len(keys), *keys, *argv)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    return replies


def tick(client: Any, links: Sequence[SharedBreaker], now: float) -> None:
    """Report the counts of ``links`` that changed (:data:`_READ_BATCH` per round trip); manage leases.

    Counts are reported for a CLOSED breaker when they changed (at once after a failure), which
    after a new period or a reconnection is every breaker: pipelined, a round costs a few round
    trips whatever the number of breakers, not one per breaker (seconds with thousands of them,
    in which no trip was published). Leases are taken or renewed for HALF_OPEN breakers whose
    calls want a probe (:meth:`SharedBreaker._lease_request`), pipelined too: a dependency behind
    hundreds of breakers that broke them all had each ask in a round trip of its own, every
    round while another replica held its leases.
    """
    reports: list[tuple[SharedBreaker, CircuitBreaker, tuple[object, ...], tuple[int, int, int]]] = []
    asks: list[tuple[SharedBreaker, CircuitBreaker, str, list[str], list[Any]]] = []
    for link in links:
        breaker = link.breaker
        if breaker is None:
            continue
        core = breaker._core
        state = core._permit.state
        if state is CircuitState.CLOSED or state is CircuitState.METRICS_ONLY:
            report = link._report(breaker, now)
            if report is not None:
                reports.append((link, breaker, *report))
        elif state is CircuitState.HALF_OPEN:  # a call moved it there (a collection only peeks)
            request = link._lease_request(breaker, now)
            if request is not None:
                asks.append((link, breaker, *request))
        elif state is CircuitState.OPEN:
            link.rejected_since(breaker)  # the rejections of an OPEN period want no probe
    for start in range(0, len(asks), _READ_BATCH):
        leases = asks[start : start + _READ_BATCH]
        asked = ((link, script, keys, argv) for link, _, script, keys, argv in leases)
        replies = _eval_batch(client, asked)
        for (link, breaker, script, keys, argv), reply in zip(leases, replies, strict=True):
            if script is scripts.GIVE_UP_LEASES:
                link._gave_up(argv, reply)
            elif link.accepted("leases", ", ".join(keys), reply):
                link._leases_held(client, breaker, reply, now)
    for start in range(0, len(reports), _READ_BATCH):
        batch = reports[start : start + _READ_BATCH]
        flushes = ((link, scripts.FLUSH_COUNTS, args[:1], args[1:]) for link, _, args, _ in batch)
        replies = _eval_batch(client, flushes)  # a key the server refused is its breaker's alone
        for (link, breaker, args, counts), peers in zip(batch, replies, strict=True):
            if link.accepted("counts", str(args[0]), peers):
                link._reported(breaker, counts, peers)
            else:
                link._last_report = counts  # reported again when they change, not every round


def _gone() -> None:
    """The breaker of a detached link."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
