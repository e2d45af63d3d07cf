"""The options of one demo run, validated once (no third-party import here; ``redis`` with ``--redis-url``).

Time in the demo is *compressed*: every duration of the system (configured timeouts, backoffs,
breaker timeouts, dependency latencies, the scenario's schedule) is multiplied by
``time_scale``, and every request rate is divided by it. The run is therefore the same system at
any scale, only faster: with the default ``0.05`` one second of the demo stands for twenty
seconds of production time, and the 120 s breaker timeout of the ML service lasts 6 s.
Durations given on the command line (``--duration``, ``--interval``) are real (wall) seconds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from otel_resilience.config.formats import check_format
from otel_resilience.engine.validation import MAX_DURATION, describe, in_the_way, redacted_url

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_INTERVAL",
    "DEFAULT_PORT",
    "DEFAULT_REPLICAS",
    "DEFAULT_SCENARIO",
    "DEFAULT_SEED",
    "DEFAULT_TIME_SCALE",
    "DEFAULT_WATCH_INTERVAL",
    "MAX_REPLICAS",
    "MAX_SEED",
    "REDIS_NAMESPACE",
    "SCENARIO_NAMES",
    "TICK",
    "DemoOptions",
    "check_duration_option",
    "check_host",
    "check_interval",
    "check_otlp_endpoint",
    "check_port",
    "check_redis_url",
    "check_replicas",
    "check_seed",
    "check_summary_json",
    "check_time_scale",
]

SCENARIO_NAMES: Final = ("steady", "outage", "brownout", "flapping", "surge")
"""The scenarios, in the order the help lists them."""
DEFAULT_SCENARIO: Final = "outage"
"""The scenario a bare ``otel-resilience demo`` runs: a dependency goes down and comes back."""
DEFAULT_SEED: Final = 7
"""The seed of the fault schedule when none is given (so that the default run is reproducible)."""
DEFAULT_TIME_SCALE: Final = 0.05
"""Demo seconds per production second: 1 s of demo = 20 s of production time."""
DEFAULT_HOST: Final = "127.0.0.1"
"""The address ``/metrics`` is served on."""
DEFAULT_PORT: Final = 9464
"""The port ``/metrics`` is served on (the OpenTelemetry Prometheus exporter's usual port)."""
DEFAULT_INTERVAL: Final = 1.0
"""Real seconds between two status lines of the plain output."""
DEFAULT_WATCH_INTERVAL: Final = 0.5
"""Real seconds between two looks at the ``--config`` file: an edit applies 0.5 to 1 s after it is
saved (the watch applies a file once two looks found it the same), a few status lines."""
TICK: Final = 0.25
"""Real seconds between two refreshes of the view, and so the shortest ``--interval``: the plain
view writes at most one status line per refresh."""
OTLP_PATHS: Final = ("/v1/metrics", "/v1/traces")
"""What the demo appends to ``--otlp-endpoint``: the URLs it sends its metrics and its spans to."""
MAX_SEED: Final = 2**63 - 1
"""The largest seed: it is the ``demo.seed`` resource attribute, which OTLP carries as a 64-bit
signed integer (a larger one fails the encoding of every export)."""
DEFAULT_REPLICAS: Final = 2
"""Replicas of the service that share state with ``--redis-url`` when ``--replicas`` is not given."""
MAX_REPLICAS: Final = 8
"""The most replicas: each one is a manager, a store (three connections to Redis) and its share of
the load, all in the demo's one process."""
REDIS_NAMESPACE: Final = "otel-resilience-demo"
"""The prefix of the namespace the replicas' stores share (one service's), followed by ``:`` and a
run id: a run never starts from the state an earlier one left in Redis."""
MAX_TIME_SCALE: Final = 1.0
"""The largest time scale: 1.0 runs at production timing."""
MIN_TIME_SCALE: Final = 0.005
"""The smallest time scale: 1 s of demo stands for 200 s of production time. Below it the demo
cannot keep up: its load (about 8 calls per production second, so 1,600 calls/s at 0.005) is more
than one event loop starts on time, and the scaled latencies, timeouts and hedge delays (the
database's 40 ms query, 200 µs here) get shorter than the loop's own delay between two steps: the
run then measures the loop, not the system (calls time out or fall back, the figures drift)."""


def check_duration_option(name: str, value: float) -> float:
    """Return ``value`` if it is a finite number of seconds ``> 0``, at most the library's limit.

    The limit is the one every duration of the library has
    (:data:`otel_resilience.engine.validation.MAX_DURATION`, the platform's longest wait).

    Raises:
        TypeError: If it is not a number.
        ValueError: With a message naming the option, the rule and the value.
    """
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        msg = f"{name} must be a number of seconds, got {value!r}"
        raise TypeError(msg)
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not math.isfinite(seconds) or seconds <= 0:
        msg = f"{name} must be a finite number of seconds > 0, got {describe(value)}"
        raise ValueError(msg)
    if seconds > MAX_DURATION:
        msg = f"{name} must be <= {MAX_DURATION:g} seconds (threading.TIMEOUT_MAX), got {describe(value)}"
        raise ValueError(msg)
    return seconds


def check_interval(value: float) -> float:
    """Return ``value`` if it is a valid ``--interval``: a duration ``>= TICK``.

    A duration as :func:`check_duration_option` takes it; the view refreshes every :data:`TICK`
    seconds and writes at most one status line per refresh, so a shorter interval could not be kept.

    Raises:
        TypeError: If it is not a number.
        ValueError: With a message naming ``--interval``, the rule and the value.
    """
    seconds = check_duration_option("--interval", value)
    if seconds < TICK:
        msg = (
            f"--interval must be >= {TICK:g} seconds (the view refreshes every {TICK:g} s and writes "
            f"at most one status line each time), got {describe(value)}"
        )
        raise ValueError(msg)
    return seconds


def check_time_scale(value: float) -> float:
    """Return ``value`` if ``MIN_TIME_SCALE <= value <= 1``.

    Raises:
        ValueError: With a message naming ``--time-scale``, the rule and the value.
    """
    try:
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        msg = f"--time-scale must be a finite number, got {describe(value)}"
        raise ValueError(msg)
    if not MIN_TIME_SCALE <= value <= MAX_TIME_SCALE:
        msg = (
            f"--time-scale must be >= {MIN_TIME_SCALE:g} and <= {MAX_TIME_SCALE:g} "
            f"(1 = production timing; below {MIN_TIME_SCALE:g} the demo cannot keep up with its "
            f"load and its scaled timeouts), got {value!r}"
        )
        raise ValueError(msg)
    return float(value)


def check_summary_json(path: Path) -> Path:
    """Return ``path`` if the summary can be written there, checked before the run (not after it).

    Its folder must exist, it must not be a folder, and it must take writes: an existing file is
    opened for appending (its content and times unchanged), a new one is created and removed (a
    symbolic link to a file still to be made is kept: the file it points to is removed). A
    path that is neither a file nor missing (a device, a pipe) is left to the write at the end.

    Raises:
        ValueError: With a message naming ``--summary-json``, the path and why.
    """
    folder = path.parent
    if not folder.is_dir():
        blocker = in_the_way(folder)
        if blocker is not None:
            msg = f"--summary-json: cannot write {str(path)!r}: {blocker}"
        else:
            msg = f"--summary-json: folder {str(folder)!r} does not exist"
        raise ValueError(msg)
    if path.is_dir():
        msg = (
            f"--summary-json: {str(path)!r} is a folder: name a file to write the summary to "
            f"(such as {str(path / 'summary.json')!r})"
        )
        raise ValueError(msg)
    existed = path.exists()
    if existed and not path.is_file():
        return path
    # A link to a file still to be made: the file created is the one it points to, not the link.
    created = path if existed else Path(os.path.realpath(path))  # a link loop fails at the open
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        msg = f"--summary-json: cannot write {str(path)!r}: {error.strerror or error}"
        raise ValueError(msg) from None
    if not existed:
        created.unlink(missing_ok=True)
    return path


def check_seed(value: int) -> int:
    """Return ``value`` if it is an integer from 0 to :data:`MAX_SEED`.

    Raises:
        ValueError: With a message naming ``--seed``, the rule and the value.
    """
    rule = "an integer >= 0 and <= 2**63-1 (it is the demo.seed resource attribute, a 64-bit integer in OTLP)"
    return _int_option("--seed", value, 0, MAX_SEED, f"{rule}, got {value!r}")


def check_port(value: int) -> int:
    """Return ``value`` if it is a TCP port ``1..65535`` (``0``, an ephemeral port, is refused).

    Raises:
        ValueError: With a message naming ``--port``, the rule and the value.
    """
    why = "(0 is refused: Prometheus needs a port it can be told in advance)"
    return _int_option("--port", value, 1, 65535, f"a TCP port from 1 to 65535, got {value!r} {why}")


def _unresolvable_name(host: str) -> str | None:
    """Why the resolver cannot take the address ``host``, or ``None``.

    ``socket.getaddrinfo`` encodes a name with IDNA before it looks it up: a name that codec
    refuses (an empty label, one over 63 characters) raises a ``UnicodeError`` there, not the
    ``OSError`` of a name that does not resolve. The codec's reason alone: up to 3.11 the cause of
    the error raised, on 3.12 its text, from 3.13 the ``reason`` of a ``UnicodeEncodeError``
    whose text adds the codec's name and the position.
    """
    try:
        host.encode("idna")
    except UnicodeEncodeError as error:
        return error.reason
    except UnicodeError as error:
        return str(error.__cause__ or error)
    return None


def check_host(value: str) -> str:
    """Return ``value`` if it can be the address of ``/metrics``: an IP address or a host name.

    Whether a name resolves, and whether the address is this machine's, is known when the server
    starts (then a failure is :class:`~otel_resilience.demo.otel.MetricsServerError`).

    Raises:
        ValueError: With a message naming ``--host``, the rule and the value.
    """
    if not isinstance(value, str) or not value.strip():
        msg = f"--host must be a non-empty address, got {value!r}"
        raise ValueError(msg)
    reason = _unresolvable_name(value)
    if reason is not None:
        msg = (
            "--host must be an IP address or a host name (no empty label, none over 63 characters), "
            f"got {value!r}: {reason}"
        )
        raise ValueError(msg)
    return value


def check_otlp_endpoint(value: str) -> str:
    """Return the OTLP/HTTP base URL ``value`` without a trailing slash.

    Raises:
        TypeError: If it is not a string.
        ValueError: If it is not an ``http://`` or ``https://`` URL with a host, an optional port
            from 1 to 65535 and no query or fragment, or if it ends with a signal's path: the
            demo appends :data:`OTLP_PATHS` to it.
    """
    rule = (
        "--otlp-endpoint must be an http:// or https:// URL such as http://127.0.0.1:4318 "
        "(a host, a port from 1 to 65535 if any, no query or fragment)"
    )
    if not isinstance(value, str):
        raise TypeError(f"{rule}, got {value!r}")
    shown = redacted_url(value)  # user info in the URL is basic authentication: never shown
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:  # an invalid IPv6 address, a port out of range or not a number
        raise ValueError(f"{rule}, got {shown!r}: {error}") from None
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or port == 0
        or parts.query
        or parts.fragment
    ):
        raise ValueError(f"{rule}, got {shown!r}")
    reason = _unresolvable_name(parts.hostname)
    if reason is not None:
        raise ValueError(f"{rule}, got {shown!r}: {reason}")
    base = value.rstrip("/")
    for path in OTLP_PATHS:
        if base.endswith(path):  # a signal's own URL: the demo would send to .../v1/metrics/v1/metrics
            msg = (
                "--otlp-endpoint must be the receiver's base URL, to which the demo appends "
                f"{' and '.join(OTLP_PATHS)}: got {shown!r} (give {redacted_url(base.removesuffix(path))})"
            )
            raise ValueError(msg)
    return base


def check_redis_url(value: str) -> str:
    """Return ``value`` if the replicas' stores can be made on it: a Redis URL the store takes.

    The rule is :meth:`~otel_resilience.RedisStore.from_url`'s
    (:func:`~otel_resilience.store.redis_store.check_url`; the store connects lazily: a server
    that does not listen is no error here, the run then shows its stores degraded); it needs the
    ``redis`` extra, imported here only when the option is given.

    Raises:
        TypeError: If it is not a string.
        ValueError: With a message naming ``--redis-url``: the store refuses the URL, or the
            ``redis`` package is not installed.
    """
    if not isinstance(value, str):
        msg = f"--redis-url must be a redis://, rediss:// or unix:// URL, got {describe(value)}"  # type: ignore[unreachable]
        raise TypeError(msg)
    from otel_resilience.store.redis_store import check_url  # noqa: PLC0415 - with the option only

    try:
        check_url(value)
    except ImportError as error:
        cause = error.__cause__ or error
        msg = f"--redis-url needs the redis package: pip install 'otel-resilience[redis]' ({cause})"
        raise ValueError(msg) from None
    except ValueError as error:
        msg = f"--redis-url must be a Redis URL such as redis://127.0.0.1:6379/0: {error}"
        raise ValueError(msg) from None
    return value


def counted(count: int, noun: str) -> str:
    """Return ``count`` and ``noun``, plural unless one (``1 replica``, ``2 replicas``)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def check_replicas(value: int) -> int:
    """Return ``value`` if it is a number of replicas, ``1 <= value <= MAX_REPLICAS``.

    Raises:
        ValueError: With a message naming ``--replicas``, the rule and the value.
    """
    rule = f"an integer from 1 to {MAX_REPLICAS} (each one a manager and a store in this process)"
    return _int_option("--replicas", value, 1, MAX_REPLICAS, f"{rule}, got {value!r}")


def _int_option(flag: str, value: int, low: int, high: int, says: str) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) from ``low`` to ``high``, both included.

    The one rule of the demo's integer options.

    Raises:
        ValueError: ``"<flag> must be <says>"``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        msg = f"{flag} must be {says}"
        raise ValueError(msg)
    return value


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """Everything one demo run needs to know. Validated at construction.

    Raises:
        TypeError: A duration is not a number, the OTLP endpoint not a string, or ``plain`` or
            ``once`` not a ``bool``.
        ValueError: An option breaks its rule (the message names the command-line option).
    """

    scenario: str = DEFAULT_SCENARIO
    """``steady``, ``outage``, ``brownout``, ``flapping`` or ``surge``. Default ``outage``."""
    seed: int = DEFAULT_SEED
    """Seed of the fault schedule and of the dependencies' randomness, ``0 <= seed <= MAX_SEED``.
    Default 7."""
    duration: float | None = None
    """Real seconds to run; ``None`` (default) runs until SIGINT or SIGTERM."""
    time_scale: float = DEFAULT_TIME_SCALE
    """Demo seconds per production second, ``MIN_TIME_SCALE <= x <= 1``. Default 0.05."""
    host: str = DEFAULT_HOST
    """Address of the ``/metrics`` server. Default ``127.0.0.1``; another only with a :attr:`port`."""
    port: int | None = DEFAULT_PORT
    """Port of the ``/metrics`` server, 1..65535; ``None`` serves no ``/metrics`` (the metrics
    are still collected). Default 9464."""
    otlp_endpoint: str | None = None
    """Base URL of an OTLP/HTTP receiver (``/v1/metrics`` and ``/v1/traces`` are appended);
    ``None`` (default) exports nothing over OTLP."""
    plain: bool = False
    """Force the plain line output even on a terminal. Default ``False``."""
    summary_json: Path | None = None
    """Where to write the summary as JSON, not the :attr:`config` file (nor a link to it); ``None``
    (default) writes none."""
    interval: float = DEFAULT_INTERVAL
    """Real seconds between two status lines of the plain output, at least :data:`TICK`. Default 1.0 s."""
    once: bool = False
    """Play the scenario's faults in the first cycle only, then keep every dependency at its
    baseline. Default ``False``: the faults come back every 600 s of production time."""
    config: Path | None = None
    """A configuration file (YAML or TOML, production values) whose policies replace the demo's
    of the same names (``content_api``, ``ml_service``, ``database``, ``tenants``); ``None``
    (default) runs the built-in policies."""
    config_format: Literal["yaml", "toml"] | None = None
    """The format of :attr:`config`, ``"yaml"`` or ``"toml"`` (``--format``); ``None`` (default)
    tells it from the file's suffix. Only with :attr:`config`."""
    watch_interval: float | None = None
    """Real seconds between two looks at :attr:`config`, which the run watches: an edit saved
    during the run applies live (``--watch-interval``, ``> 0``); ``None`` (default) for
    :data:`DEFAULT_WATCH_INTERVAL`. Only with :attr:`config`."""
    redis_url: str | None = None
    """A Redis server the run's replicas share their breakers and rate limits through
    (``--redis-url``, see :func:`check_redis_url`): the run is then :attr:`replicas` replicas of
    the service, each with its own manager and store on one namespace (:data:`REDIS_NAMESPACE`),
    the load split between them. ``None`` (default) runs one process on local state, with no external service.
    Not with :attr:`config`."""
    replicas: int | None = None
    """How many replicas share :attr:`redis_url` (``--replicas``, 1 to :data:`MAX_REPLICAS`);
    ``None`` (default) for :data:`DEFAULT_REPLICAS`. Only with :attr:`redis_url`."""
    redis_drops: bool = False
    """Whether Redis drops out again and again (``--redis-drops``): the replicas' stores reach
    :attr:`redis_url` through a relay that cuts them off for a moment every few seconds
    (:mod:`otel_resilience.demo.relay`). Only with a ``redis://`` :attr:`redis_url`."""

    def __post_init__(self) -> None:
        for flag, value in (
            ("--plain", self.plain),
            ("--once", self.once),
            ("--redis-drops", self.redis_drops),
        ):
            if not isinstance(value, bool):
                msg = f"{flag} must be True or False, got {describe(value)}"  # type: ignore[unreachable]
                raise TypeError(msg)
        if self.scenario not in SCENARIO_NAMES:
            msg = f"--scenario must be one of {', '.join(SCENARIO_NAMES)}, got {self.scenario!r}"
            raise ValueError(msg)
        check_seed(self.seed)
        if self.duration is not None:
            object.__setattr__(self, "duration", check_duration_option("--duration", self.duration))
        object.__setattr__(self, "time_scale", check_time_scale(self.time_scale))
        check_host(self.host)
        if self.port is not None:
            check_port(self.port)
        elif self.host != DEFAULT_HOST:
            msg = (
                "--host is the address of /metrics, which --no-metrics-server does not serve: "
                "give one of them"
            )
            raise ValueError(msg)
        if self.otlp_endpoint is not None:
            object.__setattr__(self, "otlp_endpoint", check_otlp_endpoint(self.otlp_endpoint))
        object.__setattr__(self, "interval", check_interval(self.interval))
        if (
            self.summary_json is not None
            and self.config is not None
            and os.path.realpath(self.summary_json) == os.path.realpath(self.config)
        ):  # the file the summary replaces is the one a link points to (write_summary_json)
            msg = (
                f"--summary-json must not be the --config file, got {str(self.summary_json)!r}: "
                "the summary would replace the configuration"
            )
            raise ValueError(msg)
        if self.config_format is not None:
            check_format(self.config_format, "--format")  # the loader's rule
            if self.config is None:
                msg = f"--format is the format of the --config file: give one (--format {self.config_format})"
                raise ValueError(msg)
        if self.watch_interval is not None:
            object.__setattr__(
                self, "watch_interval", check_duration_option("--watch-interval", self.watch_interval)
            )
            if self.config is None:
                msg = "--watch-interval is how often the --config file is looked at: give one"
                raise ValueError(msg)
        self._check_shared_state()

    def _check_shared_state(self) -> None:
        """Check :attr:`redis_url` and :attr:`replicas`, and set the replicas' default."""
        if self.redis_url is None:
            if self.replicas is not None:
                msg = "--replicas is how many replicas share the --redis-url server: give one"
                raise ValueError(msg)
            if self.redis_drops:
                msg = "--redis-drops makes the --redis-url server drop out: give one"
                raise ValueError(msg)
            return
        if self.config is not None:
            msg = (
                "--redis-url runs the demo's built-in policies on its replicas: --config is not "
                "taken with it (run one or the other)"
            )
            raise ValueError(msg)
        check_redis_url(self.redis_url)
        if self.redis_drops and not self.redis_url.startswith("redis://"):
            msg = (
                "--redis-drops relays the stores' TCP connections to the --redis-url server: it needs "
                f"a redis:// URL, got {self.redis_url.partition('://')[0]}://"
            )
            raise ValueError(msg)
        replicas = DEFAULT_REPLICAS if self.replicas is None else check_replicas(self.replicas)
        object.__setattr__(self, "replicas", replicas)

    @property
    def metrics_url(self) -> str | None:
        """The URL ``/metrics`` is served on, or ``None`` when it is not served."""
        if self.port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"
