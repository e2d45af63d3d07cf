"""The Lua scripts a :class:`~otel_resilience.store.RedisStore` runs: each one atomic, one round trip.

Every script reads the time from the server (``TIME``), never from a replica, so replicas whose
clocks differ agree on when an OPEN period ends and on what a rate limit admitted. Durations
cross the wire in milliseconds; ``-1`` means "no end" (not OPEN) and ``-2`` "forever" (forced
open until reset).

The breaker's scripts read the time in whole milliseconds (``_NOW``); the rate limiter's
(``_NOW_US``) keep its microseconds, as fractional milliseconds: a bucket of 2000 permits a second
frees one every 0.5 ms, and a clock floored to the millisecond would make the next permit look a
fraction of a millisecond away for the whole millisecond (refused with no wait), so that a bucket
would admit at most ``burst`` permits per millisecond. Their replies stay whole milliseconds: a
wait is rounded up (a permit due in 0.3 ms is a reservation of 1 ms, never taken early).

They refuse a wait by the rule of a local limiter's
(:meth:`~otel_resilience.patterns.rate_limiter.rules._Rules._refuses_locked`), in :data:`_REFUSES`:
a permit due later than ``max_wait`` (its exact time, as a local limiter compares it: one due
exactly ``max_wait`` away, or ``1 / rate`` away with ``max_wait=1 / rate``, is waited for), or
not before the caller's deadline (the wait rounded up: the caller waits that long).
"""

from __future__ import annotations

from typing import Final

_NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_NOW_US: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
"""
"""The server's time in milliseconds, with its microseconds (the rate limiter's scripts)."""

_NOT_AN_EPOCH: Final = """
local _NOT_AN_EPOCH = 'ERR the state hash has an epoch that is no number'
"""

_LEFT: Final = """
local function left(untilms)
  untilms = tonumber(untilms or '-1')
  if untilms < 0 then return untilms end
  return math.max(untilms - now, 0)
end
"""

READ_STATE: Final = (
    _NOW
    + _NOT_AN_EPOCH
    + _LEFT
    + """
-- KEYS[1]: the breaker's state hash. Returns {epoch, state, ms left, reason}.
local v = redis.call('HMGET', KEYS[1], 'epoch', 'state', 'until', 'reason')
local epoch = tonumber(v[1] or '0')
if not epoch then return redis.error_reply(_NOT_AN_EPOCH) end
return {epoch, v[2] or '', left(v[3]), v[4] or ''}
"""
)
"""The cluster's state of one breaker (epoch 0 and state ``''`` when it has none).

A hash whose epoch is no number (written by something else) is an error reply: the key's
refusal, as ``WRONGTYPE`` is (a ``nil`` epoch cut the reply short, which no caller could read)."""

PUBLISH_STATE: Final = (
    _NOW
    + _NOT_AN_EPOCH
    + _LEFT
    + """
-- KEYS[1]: the state hash. ARGV: expected epoch, state, ms open (-1 none, -2 forever), reason,
-- channel, key ttl ms, message prefix, the cluster state it wins over ('' none, '*' every one),
-- the prefix of the breaker's keys ('ns:cb:name:'). Compare-and-set on the epoch, then publish;
-- a state that wins over the cluster's (a trip over CLOSED, an operator's action over any) is
-- published whatever the epoch. The period it
-- ends takes its probe keys with it (no one reads them again; left to key_ttl, a breaker that
-- broke every minute kept 3 hashes a period for a day). A state the server lost (restarted
-- without persistence, or the key expired) is founded again at the publisher's epoch. Epochs
-- never go back: a new period's epoch is the server's time in ms when that is larger than the
-- last epoch + 1, so a state founded again by any replica, however far behind its epoch is, is
-- newer than every period before the loss, and the replicas take it.
local stored = redis.call('HGET', KEYS[1], 'epoch')
local cur = tonumber(stored or '0')
if not cur then return redis.error_reply(_NOT_AN_EPOCH) end
if not stored then cur = tonumber(ARGV[1]) end
if cur ~= tonumber(ARGV[1]) then
  local v = redis.call('HMGET', KEYS[1], 'state', 'until', 'reason')
  if ARGV[8] == '' or (ARGV[8] ~= '*' and v[1] ~= ARGV[8]) then
    return {0, cur, v[1] or '', left(v[2]), v[3] or ''}
  end
end
local epoch = math.max(cur + 1, now)
for _, kind in ipairs({'probes:', 'slowprobes:', 'wants:'}) do redis.call('DEL', ARGV[9] .. kind .. cur) end
local open = tonumber(ARGV[3])
local untilms = open
if open >= 0 then untilms = now + open end
redis.call('HSET', KEYS[1], 'epoch', epoch, 'state', ARGV[2], 'until', untilms, 'reason', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PUBLISH', ARGV[5], ARGV[7] .. '|' .. epoch .. '|' .. ARGV[2] .. '|' .. open .. '|' .. ARGV[4])
return {1, epoch, ARGV[2], open, ARGV[4]}
"""
)
"""Move the cluster's state from a known epoch (compare-and-set) and publish the change.

The probe successes and wants of the period it ends are deleted in the same step (the period's
leases expire on their own after ``probe_lease_ttl``).

A trip wins over CLOSED (a trip is evidence) in the same step, never over an operator's
``disabled`` or ``metrics_only``; an operator's action (``force_open``, ``reset``, a mode) wins
over any state, its replica not having heard of the cluster's latest yet (the operator's last
word applies to all): one round trip, whose outcome does not depend on the
publisher reading its reply (:meth:`~otel_resilience.store.RedisStore.close` waits for its
request to be sent only)."""

FLUSH_COUNTS: Final = (
    _NOW
    + """
-- KEYS[1]: the counts hash of one state period. ARGV: replica id, calls, failures, slow,
-- max age ms of a peer's report, key ttl ms. Returns the sums of the other live replicas.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. now)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local all = redis.call('HGETALL', KEYS[1])
local calls, failures, slow = 0, 0, 0
local max_age = tonumber(ARGV[5])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then
    local c, f, s, at = string.match(all[i + 1], '(%d+) (%d+) (%d+) (%d+)')
    if c and now - tonumber(at) <= max_age then
      calls = calls + tonumber(c)
      failures = failures + tonumber(f)
      slow = slow + tonumber(s)
    else
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
end
return {calls, failures, slow}
"""
)
"""Report this replica's counts of a state period; return the other replicas' (stale ones dropped)."""

TAKE_LEASES: Final = (
    _NOW
    + _LEFT
    + """
-- KEYS[1]: the state hash; KEYS[2]: the period's probe successes (a hash, one field per
-- replica); KEYS[3]: the period's wants (a hash: each replica's latest call rejected again for
-- want of a lease, in server ms); KEYS[4]: the period's slow probe successes (a hash, one field
-- per replica). ARGV: lease key prefix, owner, ttl ms, max leases, renew (0/1), this replica's
-- probe successes, key ttl ms, wanting (0/1: a call of this replica was rejected again since it
-- asked; recorded unless it holds all it asks for now), since (when this replica took the
-- leases it holds, ms; 0: look for no want), this replica's slow probe successes, the leases
-- it asks for (0 to max leases: its probes running and its calls rejected for want of one; its
-- own beyond them are deleted, as GIVE_UP_LEASES does). Returns {leases held, ms until the
-- first of them expires, cluster state, the other replicas' probe successes in this period,
-- whether another replica wants a lease since, the server's time in ms, the other replicas'
-- slow probe successes in this period}.
local v = redis.call('HMGET', KEYS[1], 'state', 'until')
local state = v[1] or ''
if state ~= '' and state ~= 'open' then return {0, 0, state, 0, 0, now, 0} end
if state == 'open' and left(v[2]) ~= 0 then return {0, 0, state, 0, 0, now, 0} end
local held, first, asked = 0, tonumber(ARGV[3]), tonumber(ARGV[11])
local free = {}
for i = 1, tonumber(ARGV[4]) do
  local key = ARGV[1] .. i
  local owner = redis.call('GET', key)
  if owner == ARGV[2] and held < asked then
    if ARGV[5] == '1' then redis.call('PEXPIRE', key, ARGV[3]) end
    held = held + 1
    first = math.min(first, redis.call('PTTL', key))
  elseif owner == ARGV[2] then
    redis.call('DEL', key)
    free[#free + 1] = key
  elseif not owner then
    free[#free + 1] = key
  end
end
for _, key in ipairs(free) do
  if held < asked and redis.call('SET', key, ARGV[2], 'NX', 'PX', ARGV[3]) then held = held + 1 end
end
if tonumber(ARGV[6]) > 0 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
if tonumber(ARGV[10]) > 0 then
  redis.call('HSET', KEYS[4], ARGV[2], ARGV[10])
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
end
local function others_of(key)
  local sum = 0
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if all[i] ~= ARGV[2] then sum = sum + tonumber(all[i + 1]) end
  end
  return sum
end
local others = others_of(KEYS[2])
local others_slow = others_of(KEYS[4])
if ARGV[8] == '1' and held < asked then
  redis.call('HSET', KEYS[3], ARGV[2], now)
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
local wanted = 0
local since = tonumber(ARGV[9])
if held > 0 and since > 0 then
  local wants = redis.call('HGETALL', KEYS[3])
  for i = 1, #wants, 2 do
    if wants[i] ~= ARGV[2] and tonumber(wants[i + 1]) > since then wanted = 1 end
  end
end
return {held, first, state, others, wanted, now, others_slow}
"""
)
"""Hold (take, or renew with ``renew``) as many probe leases of an OPEN period that ended as the replica
wants (its own first; at most ``max`` in the cluster, one key each), deleting its own beyond them;
report this replica's probe successes (and the slow ones among them) and return the others';
record that this replica's calls want a lease another holds, and say whether another's came since
this one took its own (it then gives them up: :data:`GIVE_UP_LEASES`)."""

GIVE_UP_LEASES: Final = """
-- ARGV: lease key prefix, owner, max leases. Deletes the leases the owner holds; returns how many.
local count = 0
for i = 1, tonumber(ARGV[3]) do
  local key = ARGV[1] .. i
  if redis.call('GET', key) == ARGV[2] then
    redis.call('DEL', key)
    count = count + 1
  end
end
return count
"""
"""Give up the probe leases one replica holds (none of its calls probes with them, or wants to), for
the replicas whose calls want them to take at once, rather than when they expire. A compare-and-delete:
a lease key that no longer holds the owner's id (it expired, and another replica took it) is kept."""

_REFUSES: Final = """
-- ARGV[3]: max wait ms; ARGV[4]: ms before the caller's deadline (-1: none).
local function refuses(wait, waited)
  local deadline = tonumber(ARGV[4])
  return waited > 0 and (wait > tonumber(ARGV[3]) + 0.001 or (deadline >= 0 and waited >= deadline))
end
"""
"""Whether a caller may not wait ``wait`` ms (exact; ``waited``: rounded up) for its permit.

``max_wait`` is compared give or take the clock's microsecond: a wait computed as a difference of
two times of the server's clock (about 1.7e12 ms) carries their rounding (a few 1e-4 ms), which
would refuse a permit due exactly ``max_wait`` away at some readings (as
:meth:`~otel_resilience.patterns.rate_limiter.rules._Rules._refuses_locked` explains for a local
limiter, which compares times instead)."""

_CARRIED_OVER: Final = """
-- KEYS[2]: the limits the bucket was last taken with ('ms-per-permit burst'). ARGV[5]: the ms
-- since the asker took these limits (its reload), 0 once a permit's script answered it since.
local function carried_over(tat, interval, burst, limits)
  local was = redis.call('GET', KEYS[2])
  if not was or was == limits then return tat, false end
  local i0, b0 = string.match(was, '^(%S+) (%S+)$')
  i0, b0 = tonumber(i0), tonumber(b0)
  if not (i0 and b0) then return tat, false end
  local at = now - tonumber(ARGV[5])
  local tokens = b0 - (math.max(tat, at) - at) / i0
  if tokens < 0 then return tat - b0 * i0 + burst * interval, true end
  return at + (burst - math.min(tokens, burst)) * interval, true
end
"""
"""A cluster token bucket's theoretical arrival time ``tat`` (as stored: it may be past) carried over
to new ``limits`` (a reload), and whether it was. It is carried over as of the asker's reload
(``ARGV[5]`` ms before now: :attr:`~otel_resilience.store.rate.ClusterRules._retuned`), as a
local bucket is retuned at its reload: what it refilled since then, it refilled at the new rate
(carried over as of the asker's next call, the time between refilled at the old rate). A bucket
whose stored ``tat`` is before that moment was full then. Asked with ``0`` (the asker was
answered since its reload: another replica, still on other limits, took the bucket back), it
is carried over as of now. The tokens it held then are kept (at most the new burst: no
free permits); a debt (permits reserved ahead) still ends when it did. The one rule of
:data:`TOKEN_BUCKET` and :data:`TOKENS_AVAILABLE`, as a local bucket's retune."""

TOKEN_BUCKET: Final = (
    _NOW_US
    + _REFUSES
    + _CARRIED_OVER
    + """
-- KEYS[1]: the bucket's key (its theoretical arrival time, GCRA); KEYS[2]: the limits it was
-- last taken with ('ms-per-permit burst', as ARGV[1] and ARGV[2]). ARGV: ms per permit, burst,
-- max wait ms, ms before the deadline (-1: none), ms since the asker's reload (carried_over).
-- Returns the ms the caller waits for its permit (0: now), or -ms until the next permit when
-- refused (nothing taken); both rounded up to whole ms. Times are ms with microseconds
-- (_NOW_US), the stored one too. Taken with other limits (a reload), the bucket is carried over
-- to them first, as a local one is at its reload: the tokens it held then are kept (at most the
-- new burst: no free permits), and a debt (permits reserved ahead) still ends when it did.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local limits = ARGV[1] .. ' ' .. ARGV[2]
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local function save(at)
  local ttl = math.ceil(at - now) + 1000
  redis.call('SET', KEYS[1], at, 'PX', ttl)
  redis.call('SET', KEYS[2], limits, 'PX', ttl)
end
local carried
tat, carried = carried_over(tat, interval, burst, limits)
if tat < now then tat = now end
local wait = tat - (now + interval * (burst - 1))
if wait < 0 then wait = 0 end
local waited = math.ceil(wait)
if refuses(wait, waited) then
  if carried then save(tat) end
  return -math.max(waited, 1)
end
save(tat + interval)
return waited
"""
)
"""A cluster token bucket as GCRA: two keys (the bucket, its limits), O(1), the same admissions as
``"token_bucket"``, a reload's included (:meth:`~otel_resilience.store.rate.ClusterRules.retune`)."""

_FORGOTTEN: Final = """
-- ARGV[5]: the ms since the asker's reload and its old window before it, 0 once a permit's script
-- answered it since.
local forget = tonumber(ARGV[5])
local function forgotten(at)
  return forget > 0 and at <= now - forget
end
"""
"""Whether a sliding log's admission at ``at`` had left the asker's window at its reload (``ARGV[5]``
ms before now is its reload less its old window:
:attr:`~otel_resilience.store.rate.ClusterRules._retuned`): forgotten, as a local log forgets it
at its retune, never judged over the new window (a longer one would count it again). The one
rule of :data:`SLIDING_LOG` and :data:`LOG_AVAILABLE`."""

SLIDING_LOG: Final = (
    _NOW_US
    + _REFUSES
    + _FORGOTTEN
    + """
-- KEYS[1]: the admission log (a list, newest first). ARGV: window ms, burst, max wait ms, ms
-- before the deadline (-1: none), as _FORGOTTEN. Returns as TOKEN_BUCKET does. Taken with
-- another window (a reload), the admissions the old one had left at the reload are dropped first.
local window = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local last = redis.call('LINDEX', KEYS[1], -1)
while last and forgotten(tonumber(last)) do
  redis.call('RPOP', KEYS[1])
  last = redis.call('LINDEX', KEYS[1], -1)
end
local oldest = redis.call('LINDEX', KEYS[1], burst - 1)
local at = now
if oldest then at = math.max(now, tonumber(oldest) + window) end
local newest = tonumber(redis.call('LINDEX', KEYS[1], 0) or '0')
if at < newest then at = newest end
local wait = at - now
local waited = math.ceil(wait)
if refuses(wait, waited) then return -math.max(waited, 1) end
redis.call('LPUSH', KEYS[1], at)
redis.call('LTRIM', KEYS[1], 0, burst - 1)
redis.call('PEXPIRE', KEYS[1], math.ceil(at - now + window) + 1000)
return waited
"""
)
"""A cluster sliding log: at most ``burst`` admissions in any window (``"sliding_window"``)."""

TOKENS_AVAILABLE: Final = (
    _NOW_US
    + _CARRIED_OVER
    + """
-- KEYS, ARGV[1..2] and ARGV[5] as TOKEN_BUCKET's. Returns the tokens in the bucket now, as a string
-- (fractional while it refills; negative while permits are reserved ahead), the bucket carried
-- over to these limits as TOKEN_BUCKET carries it. Writes nothing.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
tat = carried_over(tat, interval, burst, ARGV[1] .. ' ' .. ARGV[2])
if tat < now then tat = now end
return tostring(burst - (tat - now) / interval)
"""
)
"""The permits a cluster token bucket has now (:attr:`~otel_resilience.RateLimiter.available`)."""

LOG_AVAILABLE: Final = (
    _NOW_US
    + _FORGOTTEN
    + """
-- KEYS[1], ARGV[1..2] and ARGV[5] as SLIDING_LOG's. Returns burst minus the admissions of the
-- window ending now (reservations included; none SLIDING_LOG drops), as a string. Writes nothing.
local window = tonumber(ARGV[1])
local taken = 0
for _, at in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  at = tonumber(at)
  if at + window > now and not forgotten(at) then taken = taken + 1 end
end
return tostring(tonumber(ARGV[2]) - taken)
"""
)
"""The permits a cluster sliding log has now (:attr:`~otel_resilience.RateLimiter.available`)."""
