"""Policies from a configuration file: applied once (:func:`apply_file`), or kept in step with it.

A file (:func:`otel_resilience.config.load`) names policies. Applying it to a manager creates a
named policy (as ``manager.policy(name, config)`` does) for each new name and reloads the others,
in one commit as ``manager.reconfigure_many`` does: every new policy is created and every changed
one takes its new config, or (if one is refused) none is and none does. A policy the file no
longer names is left as it is (a running service may still call it); a policy whose config did
not change is not reloaded.

:class:`ConfigWatch` polls the file (its size, times and inode, every ``interval`` seconds, in a
daemon thread: no extra dependency; an ``interval`` assigned ends the wait under way, the next look
one new interval later) and applies it once it changed and is stable: a look that
finds the file changed reads it and waits; the next look applies it only if the file still has the
same size, times, inode and content (a hash of its bytes), and applies those very bytes. A save
that is not atomic (an editor writing in two chunks, a copy in progress) is never applied half
written, even where the first chunk is a valid file with fewer keys: a change applies between one
and two ``interval`` after it is written. A file that cannot be read or parsed, or whose policies
are refused, changes nothing: the last good configuration stays, and the file is applied at the
first look that finds a complete, valid version stable. The failure is one refused reload of the
file: one warning log and one count of :attr:`ConfigWatch.failed`. A value the file gives a policy
that is refused (by the loader, or by the manager) is also reported for that policy (the
``resilience.policy.reload_failed`` span event and ``resilience.reload`` with ``outcome=failed``,
which ``ResilienceReloadFailed`` alerts on), as Polly reports ``ReloadFailed``. A file deleted,
left half-written (it does not parse), or refused in a part no single policy owns (a retry budget,
an unknown top-level key) is a failure of the file as a whole: it is reported for every policy the
last good file named. As every change, it counts only once two looks found it the same, so a write
seen in progress, finished by the next look, alerts nobody (nothing is logged or counted), and a
file left broken does. It is counted once; for as long as it stays so, :attr:`ConfigWatch.stale`
is true and ``resilience.config.stale`` is 1 for the file (``ResilienceConfigStale`` alerts on it).
The next file applied counts a succeeded reload of each policy a refusal was reported for (or, when
the manager refused the file, of each policy it changed: none took its config), its config changed
or not: the last good file put back as it was ends the refusal too.

A change is a change of content: a file whose bytes are the ones applied (or refused) last is
unchanged, whatever its stamp says (touched, saved again as it was, a Kubernetes ConfigMap's
``..data`` swapped to a copy of it). Nothing is applied or reported, :attr:`ConfigWatch.applied`
stays, ``check()`` returns ``False``, and its new stamp is kept. To put the file's configuration
back over a ``manager.reconfigure`` made since, apply it (``manager.apply_config(load(path))``).
A file refused because its ``customize`` raised (a secret store timing out) or returned no config
is applied again at each look while it stays unchanged, until it applies: a try refused with the
error of the refusal in force (:attr:`ConfigWatch.last_error`) is that refusal still (not logged,
counted or reported again), another error is a new refusal (logged and counted once). A file the
loader or the manager refused is not tried again: it would be refused until it changes.

A stamp is not trusted while the file's times are within :data:`RACY_WINDOW_NS` of the look that
read it: a filesystem with coarse timestamps gives a rewrite of the same size in the same tick the
same stamp, so such a file is read again at each look (its content's hash compared) until a look
finds its times older than that (git's "racily clean" entries). Nor is the stamp of a file that
could not be read (a process out of file descriptors, a permission or I/O error): it is read again
at each look, and applied once it can be, though its stamp did not change.

The first load, made before the watch is returned, is held to the same rule (a service started
while the file is being saved neither starts on its first chunk nor fails on it): it is applied
once two looks find the file the same. The second look comes at once when the file's times are
:data:`RACY_WINDOW_NS` older than the first (nobody wrote it since), else one ``interval`` later
but no later than when they are (at most 3 s), a sleep on the manager's clock. The file
``OTEL_RESILIENCE_CONFIG`` names is read at start-up under that rule too (:func:`read_settled`).

A process forked from one that watches (the workers of a pre-fork server such as gunicorn with
``--preload``, a ``multiprocessing`` pool with the ``fork`` method) watches too: threads do not
survive ``os.fork()``, so each running watch starts a thread of its own in the child, and every
process keeps its policies in step with the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

from otel_resilience.engine.events import error_type_name
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.registry import WATCHES
from otel_resilience.engine.validation import (
    check_called_with,
    check_duration,
    check_name,
    check_sync_callable,
    fail,
    file_path,
    wrong_return,
)
from otel_resilience.manager.config import ResilienceConfig
from otel_resilience.manager.policy import same_config

if TYPE_CHECKING:
    from otel_resilience.config import ConfigFile
    from otel_resilience.config.formats import Format
    from otel_resilience.engine.clock import Clock
    from otel_resilience.manager.named import NamedPolicies
    from otel_resilience.manager.policy import PolicyHandle

__all__ = [
    "DEFAULT_WATCH_INTERVAL",
    "START_UP_LOOK_INTERVAL",
    "ConfigWatch",
    "Customize",
    "apply_file",
    "read_settled",
    "started_in_thread",
    "stop_watches",
]

DEFAULT_WATCH_INTERVAL: Final = 2.0
"""Seconds between two looks at a watched file."""

RACY_WINDOW_NS: Final = 3_000_000_000
"""How close (in ns) a file's modification or change time may be to the moment it was looked at
for its stamp not to be trusted: a filesystem whose timestamps are coarse (FAT's 2 s, 1 s on some
network and older filesystems, the kernel's clock tick on the others) gives a rewrite of the same
size within one tick the same stamp. Such a file is read again at each look until a look
finds its times this much older than itself (git's "racily clean" entries)."""
_FIRST_LOAD_WAIT: Final = RACY_WINDOW_NS / 1e9
"""The longest a first load waits (on the manager's clock) for a file being written to settle."""


Customize = Callable[[str, "ResilienceConfig"], "ResilienceConfig"]
"""Called with each policy's name and its config from the file; returns the config to use (what a
file cannot express, a fallback function or a cache service, is added here in code)."""

_LOG: Final = logging.getLogger("otel_resilience")


def apply_file(
    manager: NamedPolicies,
    policies: Mapping[str, ResilienceConfig],
    customize: Customize | None = None,
    owed: Collection[str] = (),
) -> dict[str, PolicyHandle]:
    """Create the policies ``policies`` names that ``manager`` lacks, and reload the changed others.

    All or nothing (``manager._apply``): every new policy's config is checked, and every changed
    one built, before any policy changes; the new policies are created with the reloads, in one
    commit, and a new one a call creates meanwhile is reloaded to the file's config if it has
    another. A refusal is reported once, for the policy it concerns. A policy of ``owed`` (a watch
    reported a refused reload of it) that the file leaves as it is (the config it has, or not
    named) counts a succeeded reload.

    Returns:
        The handle of every policy the file names.

    Raises:
        TypeError: ``policies`` is not a mapping, or a key of it not a ``str``, or ``customize``
            is not a plain (sync) function (nothing changed, nothing reported), or returns no
            ``ResilienceConfig``, or a value is not one (a function that builds one included):
            reported, no policy changed.
        ValueError: A key of ``policies`` is a name ``policy()`` refuses (nothing changed, nothing
            reported).
        Exception: A config refused, or what ``customize`` raised (reported; no policy changed).
    """
    if not isinstance(policies, Mapping):
        raise fail(
            "ResilienceManager.apply_config",
            "policies",
            "a mapping of names to configs",
            policies,
            kind=TypeError,
        )
    return _apply_file(manager, policies, customize, owed, manager._refused)


def _apply_file(
    manager: NamedPolicies,
    policies: Mapping[str, ResilienceConfig],
    customize: Customize | None,
    owed: Collection[str],
    refused: Callable[[str, BaseException], None],
) -> dict[str, PolicyHandle]:
    """:func:`apply_file`, ``refused(name, error)`` called for what ``customize`` raised or returned.

    A watch's (:meth:`ConfigWatch._applied`) tells a file its ``customize`` refused (tried again
    at the next look) from one the manager refused, and reports a refusal tried again once.
    """
    _check_customize("ResilienceManager.apply_config", customize)
    for name in policies:  # before customize runs: no policy can have a name policy() refuses
        check_name("ResilienceManager.apply_config", "policies key", name)
    wanted = {name: _customized(name, config, customize, refused) for name, config in policies.items()}
    applied = manager._apply(wanted, owed)
    source = getattr(policies, "source", None)
    if source is not None:  # a loaded file: a later load of it (a watch's first) keeps its budgets
        manager._applied_files[_file_key(source)] = cast("ConfigFile", policies)
    return applied


def _check_customize(owner: str, customize: object) -> None:
    """Refuse a ``customize`` other than a plain (sync) function taking ``(name, config)``, or ``None``.

    Checked before a file is applied: a file without policies would not call it, and every later
    change would fail to apply.

    Raises:
        TypeError: Naming ``owner``'s ``customize``.
    """
    check_sync_callable(owner, "customize", customize, optional=True, what="function")
    check_called_with(owner, "customize", customize, "name", "config")


def _file_key(path: str | os.PathLike[str]) -> str:
    """The key of a file among the ones applied to a manager: its absolute path.

    Links are not followed: a link swapped to another target (a Kubernetes ConfigMap's
    ``..data``) is still the file applied under that path, and one key.
    """
    return os.path.abspath(path)  # noqa: PTH100 - resolve() follows links, which this must not


def _customized(
    name: str,
    config: ResilienceConfig,
    customize: Customize | None,
    refused: Callable[[str, BaseException], None],
) -> ResilienceConfig:
    """``customize(name, config)`` (or ``config``); what it raises is a refused reload of ``name``.

    So is what it returns that is not a config (a function that forgot its ``return``): a
    ``TypeError`` naming ``customize`` and the policy, a coroutine closed. Either is given to
    ``refused`` (the manager's report of a refused reload, or a watch's), then raised.
    """
    if customize is None:
        return config
    try:
        customized: object = customize(name, config)  # judged below: a function may forget its return
    except Exception as error:
        refused(name, error)
        raise
    if not isinstance(customized, ResilienceConfig):
        wrong = wrong_return(f"customize({name!r}, config)", customized, "it must return a ResilienceConfig")
        refused(name, wrong)
        try:
            raise wrong
        finally:
            del wrong  # its traceback holds this frame: not bound here (a cycle)
    return customized


def _checked_interval(owner: str, interval: object) -> float:
    """The seconds of a watch's ``interval``, given or assigned: a duration as every other.

    At most ``MAX_DURATION`` and ``> 0``: the thread's wait must take it (a ``timedelta``, a
    string or a negative number would end the thread, or make it look without pause).
    """
    return check_duration(owner, "interval", interval)


class _Looker:
    """Looks at a file: its stamp and its bytes, and the one rule of a stable file (see the module doc).

    A watch is one (for its first load and every later one); so is the start-up load of the file
    ``OTEL_RESILIENCE_CONFIG`` names (:func:`read_settled`).
    """

    def __init__(self, file: Path, interval: float) -> None:
        self._file = file
        self._interval = interval
        # What the last look found changed (its stamp and the hash of its content), applied at the
        # next look if the file is still the same: None when the last look found nothing new.
        self._pending: tuple[tuple[int, ...] | None, bytes | None] | None = None

    def _look(self) -> tuple[int, ...] | None:
        """What tells the file's content changed (``None`` when it cannot be read now).

        Its size and modification time, and which file it is (device and inode) with its change
        time: a file replaced by another (renamed over it, a link swapped to a new target) is
        seen even when a tool kept the size and set the modification time (a copy that keeps
        times; Nix and reproducible images, where every file has the same one).
        """
        try:
            info = self._file.stat()
        except OSError:
            return None
        return info.st_size, info.st_mtime_ns, info.st_dev, info.st_ino, info.st_ctime_ns

    def _read(self) -> bytes | OSError:
        """The file's bytes, or the error reading it raised (a look compares, then loads, what it read).

        Read as every reader reads a configuration file (``config.formats.read_file``): a path that
        names no regular file any more (a named pipe moved over it) is an error, never waited on.
        """
        from otel_resilience.config.formats import read_file  # noqa: PLC0415 - see ConfigWatch._load

        try:
            return read_file(os.fspath(self._file))
        except OSError as error:
            return error.with_traceback(None)  # kept a look: its traceback would hold the looking frame

    def _first_look(self, clock: Clock) -> tuple[int, tuple[int, ...] | None, bytes | OSError]:
        """The file once it is stable, for the first load: when it began, the stamp and content read.

        The rule of every later load (:meth:`_settles`): a look finds the file as the previous one
        did. Only the wait between the two looks differs: none for a file whose times are
        :data:`RACY_WINDOW_NS` older than the look (nobody wrote it for that long), else one
        ``interval`` but no longer than until they are (a start-up never waits an interval of an
        hour), on the manager's ``clock``. A file still rewritten after :data:`_FIRST_LOAD_WAIT`
        of waits (a process that rewrites it in place at every turn) is loaded as last read: a
        start-up waits for a save, not for good.
        """
        waited = 0.0
        while True:
            looked_at = time.time_ns()
            stamp = self._look()
            content = self._read()
            if self._settles(stamp, _digest(content)) or waited >= _FIRST_LOAD_WAIT:
                return looked_at, stamp, content
            racy = _racy_ns(stamp, looked_at)
            if racy:
                pause = min(self._interval, racy / 1e9, _FIRST_LOAD_WAIT - waited)
                clock.sleep_sync(pause)
                waited += pause

    def _settles(self, stamp: tuple[int, ...] | None, digest: bytes | None) -> bool:
        """Whether a look finds the file as the previous look did (it is applied), else it waits for the next.

        The one rule of a stable file, for the first load and every later one: a save that is not
        atomic, caught half written, is never applied (nor refused), even when it parses.
        """
        seen = (stamp, digest)
        if seen != self._pending:  # new since the previous look: applied if the next finds it the same
            self._pending = seen
            return False
        return True


START_UP_LOOK_INTERVAL: Final = 0.1
"""Seconds between the two looks of the start-up load at a file written in the last 3 s
(:func:`read_settled`): short, as the first call of a service waits for it (a service's entry
point often writes its file just before it starts), long enough for a save under way to show."""


def read_settled(
    path: str | os.PathLike[str], clock: Clock, interval: float = START_UP_LOOK_INTERVAL
) -> bytes:
    """The bytes of the file ``path`` once it is stable, read as a watch's first load reads them.

    For the start-up load (:func:`otel_resilience.config.from_env`): a service started while the
    file is being saved neither starts on its first chunk nor fails on it. The wait, when the file
    was written in the last :data:`RACY_WINDOW_NS`, is one ``interval`` but at most until then, on
    ``clock`` (:meth:`_Looker._first_look`).

    Raises:
        OSError: The file cannot be read.
    """
    _, _, content = _Looker(Path(_file_key(path)), interval)._first_look(clock)
    if isinstance(content, OSError):
        try:
            raise content
        finally:
            del content  # its traceback holds this frame: not bound here (a cycle)
    return content


class ConfigWatch(_Looker):
    """Keeps a manager's named policies in step with a configuration file (see the module doc).

    Made by ``manager.watch(path)``, which applies the file once before returning, once it is
    stable (see the module doc: a file written in the last 3 s is waited for, on the manager's
    clock), and raises if it fails then, so a service does not start on a broken configuration.
    Stop it with :meth:`stop`, or use it as a context manager. A forked child of the process
    watches on with a thread of its own (see the module doc) until it stops its copy.

    Attributes:
        path: The file watched, as given (a relative path names the file of the working
            directory the watch began in, whatever directory the process changes to later).
        interval: Seconds between two looks (a ``timedelta`` given is stored as seconds); it may
            be assigned while the watch runs, checked as the one given: the wait under way ends,
            and the next look comes one new interval after the assignment.
        format: The file's format, ``"yaml"`` or ``"toml"``: the one given, else its suffix's.
        applied: How many times a file was applied (the first load included): one whose content
            is not the one applied (or refused) last, or one its ``customize`` refused, tried
            again. A file touched or saved again with the same bytes is not applied, nor counted.
        failed: How many changed files were refused (nothing changed each time), and how many
            tries again of a file its ``customize`` refused failed with another error than the
            last.
        stale: Whether the last changed file the watch settled on was refused (no file applied
            since): the configuration in force is not the file's. Exported as
            ``resilience.config.stale`` for as long as it holds (the refusal is counted once).
        last_error: Why the last changed file the watch settled on was refused, as the warning
            logs it (``"<error type>: <message>"``; text, so that no traceback is kept), ``None``
            while the file in force is the file's (the first load, or a file applied since).
    """

    def __init__(
        self,
        manager: NamedPolicies,
        path: str | os.PathLike[str],
        *,
        interval: float | timedelta = DEFAULT_WATCH_INTERVAL,
        customize: Customize | None = None,
        format: Format | None = None,  # noqa: A002 - load(path, format=...)'s name
    ) -> None:
        from otel_resilience.config.formats import check_format, file_format  # noqa: PLC0415 - see _load

        path = file_path("ResilienceManager.watch", path)
        seconds = _checked_interval("ResilienceManager.watch", interval)
        _check_customize("ResilienceManager.watch", customize)
        if format is not None:
            check_format(format, "ResilienceManager.watch.format")
        self.path = Path(path)
        self.format: Format = file_format(os.fspath(self.path), format)
        # The file the path names now: a relative path is not read again against a working
        # directory the process changes to later (a daemon's chdir("/")).
        super().__init__(Path(_file_key(path)), seconds)
        self.applied = 0
        self.failed = 0
        self.stale = False
        self.last_error: str | None = None
        self._manager = manager
        self._customize = customize
        # The policies a refused file was reported for, since the last file applied: the next
        # file applied counts a succeeded reload of each, changed or not (a revert included).
        self._owed: set[str] = set()
        # The file settled on that its customize refused: applied again at each look until it
        # applies or another file is settled on (a secret store's timeout may pass).
        self._again: ConfigFile | None = None
        # One look at a time (the thread's and a caller's check()): a change is applied once, and
        # never an older file after a newer one; stop() waits for the look under way. Reentrant: a
        # customize may stop the watch whose look calls it. Free in a forked child.
        self._checking = fork_safe(threading.RLock())
        # The thread whose look is under way (its ident), for stop() called from that look.
        self._looking: int | None = None
        # The file applied (or refused) last: its stamp, the hash of its content, and when the
        # look that read it began (its stamp is trusted once its times are well before that).
        looked_at, stamp, content = self._first_look(manager._clock)
        self._last: ConfigFile = self._load(content, None)
        apply_file(manager, self._last, customize)
        self._settled(stamp, _digest(content), looked_at)
        self.applied = 1
        self._stop = threading.Event()
        # Set to end the thread's wait at once: by stop(), and by an interval assigned (the wait
        # starts again with it, from then on).
        self._wake = threading.Event()
        # Running before its thread starts: a child forked by another thread from now on starts
        # one of its own (a child forked before the watch was known as running would have none).
        _RUNNING.add(self)
        WATCHES.register(self, findable=False)
        self._thread = self._start()

    @property
    def interval(self) -> float:
        """Seconds between two looks.

        Assign seconds or a ``timedelta``: the next look comes one new interval after the
        assignment (the wait under way is cut short, or made longer).
        """
        return self._interval

    @interval.setter
    def interval(self, interval: float | timedelta) -> None:
        self._interval = _checked_interval("ConfigWatch", interval)
        self._wake.set()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name=f"otel-resilience watch {self.path}", daemon=True)
        thread.start()
        return thread

    @property
    def name(self) -> str:
        """The file watched (its absolute path): the ``resilience.config.file`` of its telemetry."""
        return os.fspath(self._file)

    def _restart_in_child(self) -> None:
        """Start the watch's thread again in a forked child (the parent's did not come along)."""
        if not self._stop.is_set():
            self._stop = threading.Event()  # its lock may have been held by a thread of the parent
            self._wake = threading.Event()
            self._looking = None  # a look under way in the parent's thread did not come along
            self._thread = self._start()

    def _load(self, content: bytes | OSError, last: ConfigFile | None) -> ConfigFile:
        """Load ``content`` with the retry budgets in force: those of the file's last load applied.

        That load is this watch's ``last``, or another's: the file applied at start-up
        (``OTEL_RESILIENCE_CONFIG``), another watch of it. Unchanged budgets then stay the same
        objects, so an unchanged policy gives an equal config and is not reloaded for nothing.

        Raises:
            OSError: ``content`` is the error reading the file raised.
            Exception: What :func:`otel_resilience.config.load` raises.
        """
        # The config package imports the manager's: imported when a file is read.
        from otel_resilience.config.loader import load_content  # noqa: PLC0415

        if isinstance(content, OSError):
            try:
                raise content
            finally:
                del content  # its traceback holds this frame: not bound here (a cycle)
        previous = self._manager._applied_files.get(_file_key(self._file), last)
        return load_content(content, os.fspath(self._file), self.format, previous=previous)

    def check(self) -> bool:
        """Look at the file now; apply it if it changed and is as the previous look found it.

        A look that finds the file changed since it was last applied (or refused) reads it and
        applies nothing; the next look applies what it reads if the file has the same size,
        times, inode and content as then (a save in progress is never applied half written). A
        file whose times are within :data:`RACY_WINDOW_NS` of the look that read it last, or that
        could not be read then, is read again, and changed if its content is another (a rewrite
        its stamp cannot tell, a file readable again).

        A file its ``customize`` refused is applied again by each look that finds it unchanged.

        Returns:
            Whether a file was applied, its content changed or its ``customize`` having refused it
            (``False``: its content unchanged, touched or saved again with the same bytes
            included; changed since the previous look; refused; or the watch is stopped: it
            applies nothing).
        """
        with self._checking:
            if self._stop.is_set():
                return False
            outer, self._looking = self._looking, threading.get_ident()
            try:
                applied = self._check_locked()
            finally:
                self._looking = outer
        if outer is None and self._stop.is_set():  # stopped by this look: the thread may end now
            self._join()
        return applied

    def _check_locked(self) -> bool:
        looked_at = time.time_ns()
        stamp = self._look()
        if stamp == self._stamp and self._trusted(stamp):  # as applied (or refused) last
            self._pending = None
            return self._tried_again()
        content = self._read()
        digest = _digest(content)
        if digest == self._digest and (digest is not None or stamp == self._stamp):
            # The content applied (or refused) last, under a new stamp (the file touched, saved
            # again as it was, a link swapped to a copy) or an untrusted one: unchanged. Its stamp
            # is kept (trusted once its times are old enough); a file still unreadable under a
            # new stamp (deleted since) is a change.
            self._settled(stamp, digest, looked_at)
            return self._tried_again()
        if not self._settles(stamp, digest):
            return False
        self._again = None  # another file settled on: the one refused is tried no more
        # The new stamp is kept once the file was applied or refused, not before: a child forked
        # in between (its copy of the watch never finishes this look) looks at the file again.
        try:
            loaded = self._load(content, self._last)
        except Exception as error:  # noqa: BLE001 - a bad file never stops the service: reported
            # One refused reload of the file; of a policy too when the refused value is its own,
            # else of every policy the last good file named (each one's configuration is stale).
            del content  # an error reading the file: its traceback holds this frame (a cycle)
            self._settled(stamp, digest, looked_at)
            self._refused(error)
            concerned = _policy_of(error)
            names = (concerned,) if concerned is not None else tuple(self._last)
            self._owed.update(names)
            for name in names:
                self._manager._refused(name, error)
            return False
        applied = self._applied(loaded, again=False)
        self._settled(stamp, digest, looked_at)
        return applied

    def _tried_again(self) -> bool:
        """Apply again the file settled on, if its ``customize`` refused it (it may not, now).

        Returns:
            Whether it was applied (``False``: nothing to try again, or refused again).
        """
        if self._again is None:
            return False
        return self._applied(self._again, again=True)

    def _applied(self, loaded: ConfigFile, *, again: bool) -> bool:
        """Apply ``loaded``, the file settled on (``again``: tried again after its customize refused it).

        A refusal is counted and logged once (:meth:`_refused`), and reported for the policy it
        concerns; a try again refused with the error of the refusal in force (``last_error``) is
        that refusal still: neither counted, logged nor reported again. A file its ``customize``
        refused (it raised, a secret store timing out, or returned no config) is tried again at
        each look while the file stays unchanged; one the manager refused is not (it would be
        refused again).

        Returns:
            Whether it was applied.
        """
        self._again = None

        def refused(name: str, error: BaseException) -> None:  # customize refused it: tried again
            self._again = loaded
            if not (again and _why(error) == self.last_error):
                self._owed.add(name)
                self._manager._refused(name, error)

        try:
            _apply_file(self._manager, loaded, self._customize, self._owed, refused)
        except Exception as error:  # noqa: BLE001 - reported once, for the policy it concerns
            if not (again and _why(error) == self.last_error):
                self._refused(error)
            # All or nothing: no policy the file changes took its config (the refusal was
            # reported for the one it concerns).
            self._owed.update(name for name, config in loaded.items() if _changed(self._last, name, config))
            return False
        self._last = loaded
        self._owed = set()
        self.stale = False
        self.last_error = None
        self.applied += 1
        return True

    def _trusted(self, stamp: tuple[int, ...] | None) -> bool:
        """Whether the file of ``stamp`` (as settled) is known to hold the content settled on.

        Not while its times are racy (it may have been rewritten since within their tick), nor when
        its content could not be read (an error, ``EMFILE`` or ``EACCES``, that may pass while the
        file stays the same): such a file is read again at each look.
        """
        if stamp is None:  # no file: nothing to read
            return True
        return self._digest is not None and _racy_ns(stamp, self._looked_at) == 0

    def _settled(self, stamp: tuple[int, ...] | None, digest: bytes | None, looked_at: int) -> None:
        """The file of ``stamp`` was applied or refused: the next look looks for a newer one."""
        self._stamp = stamp
        self._digest = digest
        self._looked_at = looked_at
        self._pending = None

    def _refused(self, error: BaseException) -> None:
        """Count and log a refused file: the file read (its absolute path) and the error, with its type."""
        self.failed += 1
        self.stale = True
        self.last_error = _why(error)
        _LOG.warning(
            "configuration file %s refused, the last good one stays: %s", self._file, self.last_error
        )

    def _run(self) -> None:
        while self._waited():
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the thread outlives anything a look raises: logged
                _LOG.exception("watch of configuration file %s failed; watching on", self._file)

    def _waited(self) -> bool:
        """Wait one ``interval`` for the next look (``False``: stopped meanwhile, no more looks).

        An interval assigned meanwhile ends the wait, and one of the new interval starts then.
        """
        while True:
            # Cleared before the stop and the interval are read: a stop() or an interval coming
            # after wakes the wait; one that came before (during the look) is read here.
            self._wake.clear()
            if self._stop.is_set():
                return False
            if not self._wake.wait(self._interval):
                return not self._stop.is_set()

    def stop(self) -> None:
        """Stop watching (the policies keep their configs); waits for the watch thread to end.

        A :meth:`check` under way in another thread ends first (no policy changes once this
        returns); a later one applies nothing. Called by the look under way (its ``customize``),
        it returns at once: that look goes on, and waits for the thread once it is over (the
        thread may be waiting for it).
        """
        _RUNNING.discard(self)
        WATCHES.unregister(self)
        self._stop.set()
        self._wake.set()
        if self._looking == threading.get_ident():
            # Called by the look under way (its customize): the thread may be waiting for that
            # look, so the look, which goes on, waits for the thread once it is over (check).
            return
        self._join()
        with self._checking:  # a caller's check() under way has ended
            pass

    def _join(self) -> None:
        """Wait for the watch's thread to end (unless this is it), once it was told to stop."""
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> ConfigWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ConfigWatch({str(self.path)!r}, interval={self.interval:g}, applied={self.applied})"


def _why(error: BaseException) -> str:
    """Why a file was refused, as :attr:`ConfigWatch.last_error` and the warning say it."""
    return f"{error_type_name(error)}: {error}"


def _digest(content: bytes | OSError) -> bytes | None:
    """The hash of a file's content (``None``: it could not be read)."""
    return None if isinstance(content, OSError) else hashlib.sha256(content).digest()


def _racy_ns(stamp: tuple[int, ...] | None, looked_at: int) -> int:
    """How long after ``looked_at`` (ns) the file of ``stamp`` is no longer racy (0: it is not).

    Its times are then :data:`RACY_WINDOW_NS` older than the look; at most the window (times in
    the future), 0 for no file.
    """
    if stamp is None:
        return 0
    return min(max(max(stamp[1], stamp[4]) + RACY_WINDOW_NS - looked_at, 0), RACY_WINDOW_NS)


def _changed(last: Mapping[str, ResilienceConfig], name: str, config: ResilienceConfig) -> bool:
    """Whether a policy of the file applied last is given another config."""
    previous = last.get(name)
    return previous is not None and not same_config(previous, config)


def _policy_of(error: BaseException) -> str | None:
    """The policy a file's load error is about (its value under ``policies.<name>``), or ``None``.

    ``None`` for an error of the file as a whole: it cannot be read, does not parse, or a part
    no single policy owns (a retry budget) is refused.
    """
    from otel_resilience.config import ConfigError  # noqa: PLC0415 - the config package imports the manager's

    keys = error.keys if isinstance(error, ConfigError) else ()
    if keys[:1] == ("policies",) and len(keys) > 1 and isinstance(keys[1], str):
        return keys[1]
    return None


_RUNNING: Final[weakref.WeakSet[ConfigWatch]] = weakref.WeakSet()
"""The watches not stopped yet (each is kept alive by its thread)."""


async def started_in_thread(start: Callable[[], ConfigWatch]) -> ConfigWatch:
    """Run ``start`` (a ``manager.watch(...)``) in a worker thread, and return the watch it made.

    For a coroutine: the first load, and its wait for a file being saved (up to 3 s), never
    blocks the event loop. Cancelled meanwhile, the watch the thread still makes is stopped as
    soon as it is made (nothing is left watching), by the thread itself (:class:`_Handover`):
    however the wait was cancelled, the caller alone or every task of its loop (as
    ``asyncio.run`` does at its end), and whether or not the loop still runs when the thread
    ends. What ``start`` raises is raised here.
    """
    handover = _Handover(start)
    try:
        return await asyncio.to_thread(handover.run)
    except asyncio.CancelledError:
        handover.abandon()
        raise


class _Handover:
    """A watch made in a worker thread for a caller that may give up meanwhile: the one who ends it.

    The caller cancelled, the thread can still not be stopped: whichever of the two comes last
    (the thread making the watch, the caller giving up) stops the watch, under a lock of their
    own, so it is stopped once and never left running.
    """

    __slots__ = ("_abandoned", "_lock", "_made", "_start")

    def __init__(self, start: Callable[[], ConfigWatch]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._abandoned = False
        self._made: ConfigWatch | None = None

    def run(self) -> ConfigWatch:
        """Make the watch (in the worker thread); stop it at once if its caller gave up meanwhile."""
        watch = self._start()
        with self._lock:
            abandoned = self._abandoned
            self._made = watch
        if abandoned:
            watch.stop()
        return watch

    def abandon(self) -> None:
        """The caller gave up (cancelled): stop the watch made already, or have the thread stop it."""
        with self._lock:
            self._abandoned = True
            watch = self._made
        if watch is not None:
            watch.stop()


def stop_watches(manager: NamedPolicies) -> None:
    """Stop every running watch of ``manager`` (its policies keep their configs).

    For a manager that leaves the process-wide place at the end of a test's block
    (:func:`otel_resilience.testing.fresh_defaults`): a watch its start-up code left running
    would go on polling, and keep it alive, for the rest of the test session.
    """
    for watch in list(_RUNNING):
        if watch._manager is manager:
            watch.stop()


def _restart_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: every running watch starts its thread again."""
    for watch in list(_RUNNING):
        watch._restart_in_child()


if hasattr(os, "register_at_fork"):  # POSIX: no fork elsewhere
    os.register_at_fork(after_in_child=_restart_in_child)
