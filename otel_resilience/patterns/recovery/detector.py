"""Error-pattern detection: the same fingerprint seen ``threshold`` times within a window."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TypeAlias

__all__ = ["Fingerprint", "PatternDetector"]

Fingerprint: TypeAlias = tuple[str, str, str | None]
"""What the detector counts: the error's type name (past the attribute limit, cut with a digest of
the whole: :func:`~otel_resilience.engine.events.error_type_key`), the operation's name, and the module of the
function the operation is named after (``None`` for a configured name, such as a pipeline's):
two modules' functions of one name are two fingerprints, of one name in telemetry, each reported
with its module (``PatternDetected.module``)."""


class _Track:
    """The last ``threshold`` times one fingerprint was seen, and when it was last reported."""

    __slots__ = ("reported_at", "times")

    def __init__(self, threshold: int) -> None:
        self.times: deque[float] = deque(maxlen=threshold)
        self.reported_at: float | None = None


class PatternDetector:
    """Sans-I/O: the same fingerprint ``threshold`` times within ``window`` seconds is a pattern.

    Each fingerprint keeps only its last ``threshold`` timestamps (a bounded deque): it is a
    pattern when the oldest of them is at most ``window`` seconds old. At most
    ``max_fingerprints`` fingerprints are kept, least recently seen evicted first.
    """

    __slots__ = ("_max", "_threshold", "_tracks", "_window")

    def __init__(self, threshold: int, window: float, max_fingerprints: int) -> None:
        self._threshold = threshold
        self._window = window
        self._max = max_fingerprints
        self._tracks: OrderedDict[Fingerprint, _Track] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tracks)

    def record_locked(self, key: Fingerprint, now: float) -> bool:
        """Record one occurrence; return whether it completes a pattern not yet reported."""
        tracks = self._tracks
        track = tracks.get(key)
        if track is None:
            if len(tracks) >= self._max:
                tracks.popitem(last=False)
            track = tracks[key] = _Track(self._threshold)
        else:
            tracks.move_to_end(key)
        times = track.times
        times.append(now)
        if len(times) < self._threshold or now - times[0] > self._window:
            return False
        if track.reported_at is not None and now - track.reported_at < self._window:
            return False
        track.reported_at = now
        return True
