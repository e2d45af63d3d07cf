"""The demo's replicas sharing state through a real redis-server (`--redis-url`, `--replicas`)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_support import RedisServer, free_port
from rich.console import Console

from otel_resilience.__main__ import main
from otel_resilience.demo import relay
from otel_resilience.demo.app import run_demo
from otel_resilience.demo.options import DEFAULT_REPLICAS, DemoOptions, check_redis_url
from otel_resilience.demo.view import RichView
from otel_resilience.engine.shared import STORES
from otel_resilience.ops import alert_rules as ar
from otel_resilience.store import redis_store

from .conftest import FAST, Runner

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.realtime  # counts made in real time: bash .ci/run runs these files apart


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server of the test's own on a free 127.0.0.1 port, stopped by pid at its end."""
    server = RedisServer().start()
    yield server
    server.stop()


async def test_replicas_share_the_breaker_and_the_rate_limit(
    redis_server: RedisServer, run_scenario: Runner
) -> None:
    """Two replicas on one Redis: the ML service's outage is paid once for the cluster (a replica
    rejects after fewer calls to the down dependency than its failure threshold: the other's
    failures opened it), and the cluster's rate limit holds the permits of both."""
    summary, out = await run_scenario(
        "outage", 5.0, time_scale=0.05, once=True, redis_url=redis_server.url, interval=1.0
    )
    assert summary["lost_calls"] == 0
    shared = summary["shared_state"]
    assert shared["replicas"] == DEFAULT_REPLICAS
    assert shared["redis_url"] == redis_server.url
    assert shared["store"]["outages"] == 0
    assert not shared["store"]["degraded_during_run"]
    ml = shared["breakers"]["ml_service"]
    threshold = ml["failure_threshold"]
    per_replica = [replica["breakers"]["ml_service"] for replica in shared["per_replica"]]
    assert all(breaker["rejected"] > 0 for breaker in per_replica), per_replica  # all of them open
    assert all(breaker["shared"] for breaker in per_replica)
    assert ml["opened_by_others"], per_replica  # opened without paying the threshold itself
    assert ml["down_calls"] < threshold * DEFAULT_REPLICAS, per_replica  # less than local breakers pay
    limiter = shared["rate_limiters"]["content_api"]
    assert limiter["admitted"] == sum(
        r["rate_limiters"]["content_api"]["admitted"] for r in shared["per_replica"]
    )
    assert 0 < limiter["admitted"] <= limiter["limit"]
    assert limiter["within_limit"]
    assert "shared state  2 replicas on " in out
    assert "replica 2 (store ok): ml_service open" in out  # the status line, a part per replica


async def test_the_cluster_rate_limit_holds_the_replicas_permits_to_one_budget(
    redis_server: RedisServer, run_scenario: Runner
) -> None:
    """The surge offers content_api more than its limit: both replicas shed, and the permits they
    admitted together stay within the one budget (local limiters would each admit the limit)."""
    summary, _ = await run_scenario("surge", 5.0, once=True, redis_url=redis_server.url)
    assert summary["lost_calls"] == 0
    shared = summary["shared_state"]
    limiter = shared["rate_limiters"]["content_api"]
    per_replica = [replica["rate_limiters"]["content_api"] for replica in shared["per_replica"]]
    assert all(counts["shed"] > 0 for counts in per_replica), per_replica
    assert limiter["admitted"] + limiter["shed"] > limiter["limit"]  # offered more than the budget
    assert limiter["admitted"] <= limiter["limit"], limiter
    assert limiter["within_limit"]


def test_the_demo_goes_on_when_redis_stops_mid_run(redis_server: RedisServer, tmp_path: Path) -> None:
    """Redis stopped while the replicas run: their stores degrade, the calls go on on local state,
    nothing is lost, and the run ends as usual (exit status 0)."""
    summary_path = tmp_path / "summary.json"
    command = [
        sys.executable,
        "-m",
        "otel_resilience",
        "demo",
        "--scenario",
        "outage",
        "--time-scale",
        str(FAST),
        "--duration",
        "5",
        "--plain",
        "--interval",
        "0.5",
        "--no-metrics-server",
        "--redis-url",
        redis_server.url,
        "--summary-json",
        str(summary_path),
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:  # the first status line: the replicas run and share
            lines.append(line)
            if "exec/s" in line:
                break
        assert "(store ok)" in lines[-1], lines[-3:]
        redis_server.stop()
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 0, err[-2000:]
    assert "Redis unreachable: degraded, calls go on, on local state" in out
    status = [line for line in out.splitlines() if "exec/s" in line and "store DEGRADED" in line]
    assert status, out[-2000:]  # status lines went on with the stores degraded
    summary = json.loads(summary_path.read_text())
    assert summary["lost_calls"] == 0
    store = summary["shared_state"]["store"]
    assert store["degraded"]
    assert store["degraded_during_run"]
    assert store["outages"] >= DEFAULT_REPLICAS  # each replica's store counted its outage
    assert "store degraded now (local state)" in out
    # The limiters took rate / N each without Redis (store_fallback="local"): the store's count is
    # of the permits store_fallback="open" admits past the budget, which these never do. Was:
    # "0 permits given without Redis" while they gave permits for the whole outage.
    assert store["fallback_permits"] == 0
    assert "0 permits given without Redis" not in out
    assert "0 permits admitted past the cluster's budget (store_fallback open" in out
    before = sum(replica["executions"] for replica in summary["shared_state"]["per_replica"])
    assert before == summary["requests"]["total"]


def test_a_malformed_redis_url_is_a_usage_error_naming_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    """A URL the store refuses is refused before the run, with the option's name."""
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--redis-url", "http://127.0.0.1:6379/0", "--duration", "1"])
    assert caught.value.code == 2
    assert "--redis-url must be a Redis URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"redis_url": "redis://127.0.0.1:6379/notadb"},
            r"--redis-url must be a Redis URL .*database number",
        ),
        ({"redis_url": "redis://127.0.0.1:6379/0?socket_timeout=1"}, r"--redis-url must be a Redis URL"),
        ({"replicas": 2}, r"--replicas is how many replicas share the --redis-url server: give one"),
        (
            {"redis_url": "redis://127.0.0.1:6379/0", "replicas": 0},
            r"--replicas must be an integer from 1 to 8",
        ),
        (
            {"redis_url": "redis://127.0.0.1:6379/0", "config": Path("x.yaml")},
            r"--config is not taken with it",
        ),
        ({"redis_drops": True}, r"--redis-drops makes the --redis-url server drop out: give one"),
        (
            {"redis_url": "unix:///tmp/redis.sock", "redis_drops": True},
            r"--redis-drops relays the stores' TCP connections .* needs a redis:// URL, got unix://",
        ),
    ],
)
def test_shared_state_options_are_checked_at_construction(options: dict[str, object], message: str) -> None:
    """Each rule of --redis-url and --replicas raises a ValueError naming the option."""
    with pytest.raises(ValueError, match=message):
        DemoOptions(**options)  # type: ignore[arg-type]


def test_the_replicas_default_to_two_with_a_redis_url() -> None:
    """--redis-url alone runs the default number of replicas; no URL, no replicas."""
    assert DemoOptions(redis_url=f"redis://127.0.0.1:{free_port()}/0").replicas == DEFAULT_REPLICAS
    assert DemoOptions().replicas is None
    assert DemoOptions().redis_url is None


def test_a_missing_redis_extra_is_named_with_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the redis package, --redis-url is refused saying which extra to install."""
    monkeypatch.setitem(sys.modules, "redis", None)  # an import of it fails
    with pytest.raises(
        ValueError, match=r"--redis-url needs the redis package: pip install 'otel-resilience\[redis\]'"
    ):
        check_redis_url("redis://127.0.0.1:6379/0")


async def test_a_redis_that_does_not_listen_leaves_the_replicas_on_local_state(run_scenario: Runner) -> None:
    """No server on the URL: the stores degrade, the replicas' breakers trip on local state, and
    the run goes on with nothing lost."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    summary, out = await run_scenario("outage", 2.5, once=True, redis_url=url)
    assert summary["lost_calls"] == 0
    shared = summary["shared_state"]
    assert shared["store"]["degraded"]
    assert shared["store"]["outages"] >= DEFAULT_REPLICAS
    per_replica = [replica["breakers"]["ml_service"] for replica in shared["per_replica"]]
    assert not any(breaker["shared"] for breaker in per_replica)
    assert all(breaker["times_opened"] > 0 for breaker in per_replica), per_replica  # each on its own
    assert "Redis unreachable: degraded" in out


async def test_one_replica_on_an_unreachable_redis_is_counted_and_worded_right(run_scenario: Runner) -> None:
    """``--replicas 1`` says "1 replica" (the header and the summary said "1 replicas"), and the
    store's failed operations are among its operations (the summary said "10 failed
    operation(s), 5 operations": the subscriber's attempts failed uncounted)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    summary, out = await run_scenario("outage", 1.5, once=True, redis_url=url, replicas=1)
    store = summary["shared_state"]["store"]
    assert 0 < store["errors"] <= store["operations"], store
    assert "shared state: 1 replica (each a manager and a RedisStore)" in out  # the header
    assert "shared state  1 replica on " in out  # the summary
    assert not re.search(r"\b1 (replicas|operations|failures)\b", out), out


async def test_the_live_view_shows_a_row_per_replica(redis_server: RedisServer) -> None:
    """On a terminal the rich view draws the shared-state panel: each replica, its store, its breakers."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=True, color_system=None)
    options = DemoOptions(
        scenario="outage", duration=1.5, time_scale=FAST, port=None, redis_url=redis_server.url
    )
    summary = await run_demo(options, view=RichView(console), handle_signals=False)
    text = buffer.getvalue()
    assert "replicas, sharing state through Redis" in text
    for word in ("sent while down", "content_api"):
        assert word in text, word
    assert re.search(r"ml_service (closed|open|half_open)", text), "no state of ml_service's breaker"
    assert "shared state: 2 replicas (each a manager and a RedisStore)" in text  # the header
    assert summary["lost_calls"] == 0


def test_checking_the_redis_url_leaves_no_store_behind() -> None:
    """The option's check makes no store: no namespace of its own shows on /metrics."""
    before = [item.name for item in STORES.items()]
    assert DemoOptions(redis_url="redis://127.0.0.1:6379/0").redis_url == "redis://127.0.0.1:6379/0"
    assert [item.name for item in STORES.items()] == before


async def test_redis_dropping_out_again_and_again_is_an_outage_of_every_store_each_time(
    redis_server: RedisServer, run_scenario: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--redis-drops: the stores reach Redis through a relay that cuts them off on its schedule;
    each drop is an outage of every store (what ResilienceSharedStoreFlapping counts, 3 in 30 min
    of one instance), each recovered from, and no call is lost. The schedule is shortened here
    (a drop of 0.3 s every 1.2 s) so that a short run holds several."""
    monkeypatch.setattr(relay, "DROP_EVERY", 1.2)
    monkeypatch.setattr(relay, "DROP_FOR", 0.3)
    summary, out = await run_scenario(
        "steady", 4.5, time_scale=0.05, redis_url=redis_server.url, redis_drops=True, interval=1.0
    )
    assert summary["lost_calls"] == 0
    shared = summary["shared_state"]
    drops = shared["redis_drops"]
    assert drops >= 3
    assert shared["redis_url"] == redis_server.url  # the server's, not the relay's
    per_store = [replica["store"]["outages"] for replica in shared["per_replica"]]
    assert all(drops - 1 <= outages <= drops for outages in per_store), (drops, per_store)
    assert shared["store"]["outages"] == sum(per_store) >= 3  # one instance: what the alert counts
    assert not shared["store"]["degraded"]  # Redis is back before the run ends
    assert shared["store"]["operations"] > 0
    assert out.count("store of replica 1: Redis unreachable") >= 3
    assert out.count("store of replica 1: Redis reached again") >= 3
    assert f"Redis dropped out {drops} time(s) (--redis-drops" in out


def test_the_docs_promise_the_flapping_alert_of_redis_drops_and_allow_the_degraded_one() -> None:
    """docs/demo.md promises what every --redis-drops run shows, ResilienceSharedStoreFlapping, and
    not that ResilienceSharedStoreDegraded stays quiet: a store's tries back off further apart than
    the gap between two drops, so a store may still be degraded when the next drop begins."""
    gap = relay.DROP_EVERY - relay.DROP_FOR
    assert gap < redis_store._RETRY_MAX
    degraded_for = ar._seconds(ar.scale_duration(ar.RuleOptions().store_degraded_for, 0.05))
    text = (Path(__file__).resolve().parents[2] / "docs" / "demo.md").read_text(encoding="utf-8")
    paragraph = " ".join(text.split("**Redis dropping out", 1)[1].split("\n\n", 1)[0].split())
    assert "stays quiet" not in paragraph
    assert "fires `ResilienceSharedStoreFlapping`" in paragraph
    degraded = (
        f"`ResilienceSharedStoreDegraded` (degraded for 2 min: {degraded_for:g} s at that scale) may fire"
    )
    assert degraded in paragraph
    assert f"later than the {gap:g} s between two drops" in paragraph
    assert f"back off up to {redis_store._RETRY_MAX:g} s apart" in paragraph


async def test_without_redis_drops_the_summary_has_none(
    redis_server: RedisServer, run_scenario: Runner
) -> None:
    """Without --redis-drops the stores reach Redis itself, and ``redis_drops`` is null."""
    summary, out = await run_scenario("steady", 1.0, time_scale=0.05, redis_url=redis_server.url)
    assert summary["shared_state"]["redis_drops"] is None
    assert summary["shared_state"]["store"]["outages"] == 0
    assert "Redis dropped out" not in out


def test_the_relay_url_keeps_the_user_password_database_and_query() -> None:
    """The stores' URL is the server's with the relay's address: credentials and database kept."""
    assert (
        relay.relayed_url("redis://user:secret@redis.internal:6380/3?health_check_interval=2", 41000)
        == "redis://user:secret@127.0.0.1:41000/3?health_check_interval=2"
    )
    assert relay.relayed_url("redis://localhost/0", 41000) == "redis://127.0.0.1:41000/0"


def test_redis_drops_on_the_command_line_reach_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    """``--redis-drops`` is parsed into the options: alone, it is a usage error naming it."""
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--redis-drops", "--duration", "1"])
    assert caught.value.code == 2
    assert "--redis-drops makes the --redis-url server drop out: give one" in capsys.readouterr().err
