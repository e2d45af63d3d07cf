"""What the library adds to a user's exception: a note (a retry's give-up, a chaos injection), a context.

A note says what the library did with an error; the error itself is what the caller catches. An
exception that refuses notes (a frozen dataclass, whose ``__setattr__`` raises; ``__notes__`` set
to something other than a list, which ``add_note`` refuses) is raised without the note, unchanged,
never replaced by the error of the refusal.

A user's function that the library calls for a failure outside its handling (a fallback's
alternative given a value it did not accept, a restart hook run after a recovery's delay) and
that raises gets that failure as its context (:func:`chain_failure`), as an error raised while
the failure was handled would: the caller sees what the function was called for.
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = ["InjectedNote", "add_note", "chain_failure", "injected"]

_NO_NOTES: Final = object()
"""What ``getattr(error, "__notes__", ...)`` returns for an error without notes (Python 3.10)."""


class InjectedNote(str):
    """The note of a fault injected in the dependency's place (a chaos drill): it marks the error.

    A ``str`` as any note (shown as its text), told apart by its class (:func:`injected`), never
    by its words.
    """

    __slots__ = ()


def injected(error: BaseException | None) -> bool:
    """Whether ``error`` was injected in the dependency's place (it carries an :class:`InjectedNote`).

    The one rule that tells a drill's fault from the dependency's own failure, asked on failure
    paths only. An error that refused the note (see :func:`add_note`) is not told apart.
    """
    notes = getattr(error, "__notes__", None)
    return isinstance(notes, list) and any(type(note) is InjectedNote for note in notes)


def add_note(error: BaseException, note: str, *, replacing: str | None = None) -> bool:
    """Attach ``note`` to ``error`` if it takes notes; return whether it took it.

    Args:
        error: The user's exception.
        note: The note.
        replacing: A prefix: the notes of ``error`` that start with it are dropped first, so
            that an exception object raised again (a reused one) carries one such note, not one
            per use. ``None`` (default) drops none.
    """
    try:
        if replacing is not None and isinstance(notes := getattr(error, "__notes__", None), list):
            notes[:] = [n for n in notes if not (isinstance(n, str) and n.startswith(replacing))]
        if sys.version_info >= (3, 11):
            error.add_note(note)
        else:  # pragma: no cover - Python 3.10
            _add_note_310(error, note)
    except Exception:  # noqa: BLE001 - the exception refuses notes: raised as it is
        return False
    return True


def _add_note_310(error: BaseException, note: str) -> None:  # pragma: no cover - Python 3.10
    """Python 3.10: what ``BaseException.add_note`` does from 3.11, refusals included.

    A missing ``__notes__`` is set as an attribute (which a frozen dataclass refuses), never
    written into the instance's ``__dict__`` behind its ``__setattr__``; one that is not a list
    is refused with a ``TypeError``.
    """
    notes = getattr(error, "__notes__", _NO_NOTES)
    if notes is _NO_NOTES:
        notes = []
        error.__notes__ = notes  # type: ignore[attr-defined,unused-ignore]  # 3.11 on: declared
    if not isinstance(notes, list):
        msg = "Cannot add note: __notes__ is not a list"
        raise TypeError(msg)
    notes.append(note)


def chain_failure(error: BaseException, failure: BaseException | None) -> None:
    """Make ``failure`` the context at the end of ``error``'s chain, raised by a function called for it.

    Where an error raised while ``failure`` was handled would have it: an error with a context of
    its own (raised while its function handled another) keeps it, and the first error of that
    chain, the one raised outside the function's own handling, gets ``failure``. A chain that
    holds ``failure`` already (the function re-raised it, or chained it itself) is left as it is,
    and so is one that loops.
    """
    if failure is None:
        return
    seen: set[int] = set()
    last = error
    while True:
        if last is failure or id(last) in seen:
            return
        seen.add(id(last))
        context = last.__context__
        if context is None:
            break
        last = context
    last.__context__ = failure
