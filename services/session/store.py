"""Session's Redis state: handover records, inbox/outbox queues, dedupe sets, leases,
the delivery schedule, per-state indexes and dead letters.

Layout (prefix ``ccb`` by default; ``{cid}`` is a hash tag so one conversation's keys
live in one Redis Cluster slot):

=============================  ==========================================================
``ccb:h:{cid}``                hash: the handover record (state, connector, case id, ...)
``ccb:in:{cid}``               list: end-user messages to deliver to the CCaaS, in order
``ccb:out:{cid}``              list: agent messages to deliver to the end user, in order
``ccb:seen:{cid}``             set: accepted end-user (inbound) message ids (dedupe), TTL
``ccb:sa:{cid}``               set: accepted agent-side ids (dedupe), with a TTL: ``m:<id>``
                               a CCaaS agent message by its message id, ``a:<id>`` one sent
                               through the API, ``c:<event id>`` a case-closed event
``ccb:snd:{cid}``              hash: the outbox head's "sending" mark (item digest, part
                               in flight and when it was sent, parts done, lease token)
``ccb:ob:{cid}``               list: Infobip ids of the latest agent messages sent (read-
                               back never takes one of them for an unanswered send)
``ccb:ti:{cid}``               hash: ids of the transcript's inbound messages (not relayed
                               again), with a TTL; a hash stays a listpack up to 512 ids
``ccb:lease:in:{cid}``         string: fencing token of the inbox lane's holder (inbox
                               delivery, opening and closing the case)
``ccb:lease:out:{cid}``        string: fencing token of the outbox lane's holder
``ccb:lease:{cid}``            string: the one lease of releases up to d3ac8b9; held as a
                               guard while a lane lease is (rolling upgrades)
``ccb:ext:{connector:extid}``  string: reverse index case → conversation id
``ccb:park:{connector:extid}`` list: agent events of a case not linked yet (its
                               ``case.open`` answer was lost; :meth:`SessionStore.
                               park_unless_linked`) or whose opening is not ACTIVE yet
                               (:meth:`SessionStore.hold_case`), moved once it is
``ccb:parked``                 zset: cases with parked events (``connector:extid``), scored
                               by the last park (ms): sweep_retention expires them
``ccb:due:in:{s<n>}``,         zsets: conversations with work per lane, scored by due
``ccb:due:out:{s<n>}``         time (ms), in ``CCBRIDGE_DUE_SHARDS`` shards (``n`` from 0;
                               a conversation's shard: CRC-32 of its id modulo the count),
                               so a cluster spreads them over its nodes; the un-sharded
                               ``ccb:due:in`` / ``ccb:due:out`` and ``ccb:due`` of older
                               releases are adopted (:meth:`SessionStore.due`)
``ccb:tl:{cid}``               list: the handover's timeline of message events, newest
                               first, capped, with a TTL, created by the first one (state
                               changes are read from the hash: services/session/timeline.py)
``ccb:state:<STATE>``          zset: conversations per state, scored by last change (ms)
``ccb:dlq`` / ``ccb:dl:<id>``  zset + hash: dead letters (kept: sweep_retention)
``ccb:dlc:{cid}``              zset: the conversation's dead letters (ListDeadLetters by id)
``ccb:stats``                  hash: what retention removed, by kind
``ccb:lease:reconcile``        string: fencing token of the replica running the reconciler
``ccb:reconcile:``             hash: the reconciler's progress (CLOSED listing mark,
``{ccb:lease:reconcile}``      backfill cursor), in its lease's slot (the lease fences its
                               writes); ``ccb:reconcile`` of older releases is read while
                               it has no marks
``ccb:live:<replica>``         string: a Session replica's liveness key, short TTL; lease
                               tokens name their replica (runtime/lease.py, Liveness)
``ccb:fs:{<far side>}``        hash + ``:w`` zset: a far side's health gate and the
                               conversations waiting on it (runtime/farside.py)
=============================  ==========================================================

The handover hash keeps every value within Redis's ``hash-max-listpack-value`` (64 bytes)
so Redis stores it as a compact listpack (about a third of a hashtable's memory): the
routing decision is compact JSON without empty values, ``history`` records each
transition as ``STATE@<ms after created_at>``, and empty values (no tags, no metadata, a
cleared failure reason) are not stored at all: a missing field reads as empty. A state
change with a detail adds ``tl:<ms, base 36>:<STATE>`` (the detail, cut to 64 bytes) for
the timeline; readers take the fields they know and ignore the rest.

The two lanes of a conversation (inbox: end user → CCaaS, with the case's opening and
closing; outbox: agent → end user) are scheduled and leased separately, so an agent
reply never waits behind the inbox's back-off or a slow CCaaS call.

Every per-conversation transition is one Lua script over that conversation's keys only
(every script's keys share one slot); the global index keys are updated right after
(idempotently, in pipelines a cluster client splits by node) and repaired by the
reconciler, so the one layout works on one Redis and on Redis Cluster alike.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError

from ccbridge.common.v1 import common_pb2
from ccbridge.services.runtime.errors import Unavailable
from ccbridge.services.runtime.lease import LEASE_LUA, Liveness
from ccbridge.services.runtime.metrics import current as current_metrics
from ccbridge.services.runtime.redis import RawPipeline, RawScript, RedisClient, create_batch
from ccbridge.services.session.settings import DUE_SHARDS  # CCBRIDGE_DUE_SHARDS
from ccbridge.services.session.timeline import (
    HASH_DETAIL_MAX,
    TIMELINE_MAX,
    EventKind,
    TimelineEvent,
    append_commands,
    cut_utf8,
    merged,
    state_events,
    state_field,
)

log = logging.getLogger(__name__)

INGEST_IGNORED, INGEST_ACCEPTED, INGEST_DUPLICATE, INGEST_FULL = 0, 1, 2, 3
PARK_MAX = 100  # agent events parked per unlinked case, at most (then: retry later)
# Conversations remembered by ingest()'s schedule guess: a closed one leaves it when this
# replica closes it, the rest when the cache is full (bounded: make soak).
OPEN_HINT_MAX = 20_000


def _text(value: object) -> str:
    """Redis replies are bytes (decode_responses=False); some paths give str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _scored(members: Iterable[str], score: int) -> list[Any]:
    """ZADD arguments: score member score member ..."""
    out: list[Any] = []
    for member in members:
        out += (score, member)
    return out


def _checked(replies: Sequence[Any], timeline: int) -> list[Any]:
    """Raises the first error among ``replies`` except the last ``timeline`` ones (the
    timeline's writes, which never fail what they record: a failed one is logged)."""
    cut = len(replies) - timeline
    for reply in replies[:cut]:
        if isinstance(reply, Exception):
            raise reply
    for reply in replies[cut:]:
        if isinstance(reply, Exception):
            log.warning("a timeline event was not recorded: %s", reply)
            break
    return list(replies[:cut])


def now_ms() -> int:
    return int(time.time() * 1000)


class Lane(enum.Enum):
    """One direction of a conversation, delivered under its own lease and schedule."""

    INBOX = "in"  # end user → CCaaS; also opens and closes the case
    OUTBOX = "out"  # agent → end user

    @property
    def queue(self) -> str:
        """The queue's name in dead letters and logs."""
        return "inbox" if self is Lane.INBOX else "outbox"

    @property
    def other(self) -> Lane:
        return Lane.OUTBOX if self is Lane.INBOX else Lane.INBOX


LANES = (Lane.INBOX, Lane.OUTBOX)


def agent_message_key(message_id: str) -> str:
    """The dedupe id of a CCaaS agent message: its message id, whatever the envelope
    (a CCaaS re-sending it under a new event id is a duplicate)."""
    return f"m:{message_id}"


def case_closed_key(event_id: str) -> str:
    """The dedupe id of a case-closed event."""
    return f"c:{event_id}"


def lane_has_work(lane: Lane, state: str, inbox: int, outbox: int) -> bool:
    """Whether a lane has something to do now or later (back-offs aside). The inbox lane
    also owns the lifecycle: opening, and closing once both queues are empty."""
    if lane is Lane.OUTBOX:
        return bool(outbox) and state in ("ACTIVE", "CLOSING")
    if state == "OPENING":
        return True
    if state == "ACTIVE":
        return bool(inbox)
    if state == "CLOSING":
        return bool(inbox) or not outbox
    return False


# KEYS: h, in, seen, timeline   ARGV: msg id, msg bytes, dedupe ttl s, channel, end user,
# business, inbox cap, timeline event, timeline cap, timeline ttl s. A full inbox takes
# nothing (not even the dedupe id): the sender retries later.
_INGEST = """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'OPENING' and st ~= 'ACTIVE' then return 0 end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[7]) then return 3 end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 2 end
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[2])
-- The timeline never fails the message (pcall: e.g. a Redis ACL without its key family).
if type(redis.pcall('LPUSH', KEYS[4], ARGV[8])) == 'number' then
  redis.pcall('LTRIM', KEYS[4], 0, tonumber(ARGV[9]) - 1)
  redis.pcall('EXPIRE', KEYS[4], ARGV[10])
end
if ARGV[5] ~= '' and not redis.call('HGET', KEYS[1], 'end_user') then
  redis.call('HSET', KEYS[1], 'end_user', ARGV[5], 'business_sender', ARGV[6])
end
if ARGV[4] ~= '' and not redis.call('HGET', KEYS[1], 'channel') then
  redis.call('HSET', KEYS[1], 'channel', ARGV[4])
end
return 1
"""

# KEYS: h   ARGV: now, tags json, metadata json
_CREATE = """
local st = redis.call('HGET', KEYS[1], 'state')
if st then return {0, st} end
redis.call('HSET', KEYS[1], 'state', 'OPENING', 'created_at', ARGV[1], 'updated_at', ARGV[1],
  'version', 1, 'history', 'OPENING@0')
if ARGV[2] ~= '[]' then redis.call('HSET', KEYS[1], 'tags', ARGV[2]) end
if ARGV[3] ~= '{}' then redis.call('HSET', KEYS[1], 'metadata', ARGV[3]) end
return {1, 'OPENING'}
"""

# Generic guarded transition. KEYS: h, lane lease   ARGV: lease token ('' = no lease
# check), allowed states (comma list), new state, now, the change's timeline detail field
# and value (set only when the state changes; '' = none), then field/value pairs to set.
_TRANSITION = (
    LEASE_LUA
    + """
if ARGV[1] ~= '' and not lease_held(KEYS[2], ARGV[1]) then return {0, 'lease'} end
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {0, 'missing'} end
local allowed = false
for s in string.gmatch(ARGV[2], '[^,]+') do if s == st then allowed = true end end
if not allowed then return {0, st} end
if ARGV[3] ~= '' and ARGV[3] ~= st then
  redis.call('HSET', KEYS[1], 'state', ARGV[3])
  local hist = redis.call('HGET', KEYS[1], 'history') or ''
  local since = tonumber(ARGV[4]) - (tonumber(redis.call('HGET', KEYS[1], 'created_at')) or 0)
  redis.call('HSET', KEYS[1], 'history',
    hist .. ',' .. ARGV[3] .. '@' .. string.format('%d', since))
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], ARGV[5], ARGV[6]) end
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'version', 1)
for i = 7, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return {1, st}
"""
)

# KEYS: h, out, agent-side seen   ARGV: dedupe member, msg bytes ('' for a close), ttl,
# now, reason, the close's timeline detail field and value
_AGENT_EVENT = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 0 end
local by = redis.call('HGET', KEYS[1], 'closed_by') or ''
if st == 'CLOSED' or st == 'FAILED' or (st == 'CLOSING' and by == 'INFOBIP') then return 0 end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 2 end
redis.call('EXPIRE', KEYS[3], ARGV[3])
if ARGV[2] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  return 1
end
if st ~= 'CLOSING' then
  redis.call('HSET', KEYS[1], 'state', 'CLOSING', 'closed_by', 'CCAAS', 'close_reason', ARGV[5],
    'updated_at', ARGV[4])
  local hist = redis.call('HGET', KEYS[1], 'history') or ''
  local since = tonumber(ARGV[4]) - (tonumber(redis.call('HGET', KEYS[1], 'created_at')) or 0)
  redis.call('HSET', KEYS[1], 'history', hist .. ',CLOSING@' .. string.format('%d', since))
  redis.call('HSET', KEYS[1], ARGV[6], ARGV[7])
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
return 3
"""

# A lane step's start: takes the lane's lease (or, with a dead holder's token, takes it
# over from that token only) and reads the record and both queue lengths.
# KEYS: lease, v1 lease (guard), h, in, out   ARGV: lease ttl ms, holder, dead token or ''
# Returns {token or '', record as a flat field/value list, inbox length, outbox length,
# the holder's token when not taken ('' when none)}.
_BEGIN = (
    LEASE_LUA
    + """
local token = lease_take(KEYS[1], ARGV[1], KEYS[2], ARGV[2], ARGV[3])
return {token or '', redis.call('HGETALL', KEYS[3]), redis.call('LLEN', KEYS[4]),
  redis.call('LLEN', KEYS[5]), token and '' or (redis.call('GET', KEYS[1]) or '')}
"""
)

# The relay's claim (services/session/relay.py): takes a conversation's inbox lease and
# reads its inbox head, but only when the conversation is on the fast path: ACTIVE with a
# case, inbox not in back-off. Everything else goes to the inbox lane's full step.
# KEYS: h, lease, v1 lease (guard), in   ARGV: lease ttl ms, window, now ms, holder
# Returns {2} (not for the relay), {0} (leased elsewhere) or
# {1, token, connector, external_id, in_attempts, {head messages}}.
_CLAIM = (
    LEASE_LUA
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'connector', 'external_id', 'in_next_at',
  'in_attempts')
if f[1] ~= 'ACTIVE' or not f[3] then return {2} end
if (f[4] and tonumber(f[4]) or 0) > tonumber(ARGV[3]) then return {2} end
local head = redis.call('LRANGE', KEYS[4], 0, tonumber(ARGV[2]) - 1)
if #head == 0 then return {2} end
local token = lease_acquire(KEYS[2], ARGV[1], KEYS[3], ARGV[4])
if not token then return {0} end
return {1, token, f[2] or '', f[3], f[5] or '0', head}
"""
)

# A lane's finish: pops the delivered head messages (each only if still the head, all
# only while the lease is held), resets the lane's retry counter after a success and
# releases the lease when asked.
# KEYS: lease, queue, h   ARGV: token, lane ('in'/'out') to reset or '', release '1'/'0',
# payloads...   Returns {popped, queue length}; popped -1 when the lease was lost.
_FINISH = (
    LEASE_LUA
    + """
if not lease_held(KEYS[1], ARGV[1]) then return {-1, 0} end
local popped = 0
for i = 4, #ARGV do
  if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[i] then break end
  redis.call('LPOP', KEYS[2])
  popped = popped + 1
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[2] .. '_attempts', '0', ARGV[2] .. '_next_at', '0')
end
if ARGV[3] == '1' then lease_release(KEYS[1], ARGV[1]) end
return {popped, redis.call('LLEN', KEYS[2])}
"""
)

# Replays a dead letter into its queue if the handover can still deliver it there.
# KEYS: h, queue, seen   ARGV: "dl:<id>", message, allowed states (comma list), dedupe ttl
# Returns {1, state} queued, {2, state} already replayed, {0, state or ''} refused.
_REPLAY = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {0, ''} end
if not string.find(',' .. ARGV[3] .. ',', ',' .. st .. ',', 1, true) then return {0, st} end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return {2, st} end
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'dead_letters', -1)
return {1, st}
"""
# Erases a FAILED handover past its retention (a Retry in between wins).
# KEYS: h, in, out, seen, ti, then more of its keys to delete   ARGV: cutoff ms
# Returns {connector, external_id} or false.
_ERASE_FAILED = """
local f = redis.call('HMGET', KEYS[1], 'state', 'updated_at', 'connector', 'external_id')
if f[1] ~= 'FAILED' or (tonumber(f[2]) or 0) > tonumber(ARGV[1]) then return false end
redis.call('DEL', unpack(KEYS))
return {f[3] or '', f[4] or ''}
"""
# A dead letter is gone (retention, cap): the conversation's index and count follow.
# KEYS: h, dlc   ARGV: dead letter id
_DEAD_LETTER_GONE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'dead_letters', -1)
end
return 1
"""
# Erases one conversation's own keys unless its handover is open.
# KEYS: h, in, out, seen, ti, dlc, lease:in, lease:out, lease (v1), then more of its keys
# ARGV: open states
# Returns {0, state} refused, or {1, connector, external_id, dead letter ids...}.
_ERASE_CONVERSATION = """
local f = redis.call('HMGET', KEYS[1], 'state', 'connector', 'external_id')
if f[1] and string.find(',' .. ARGV[1] .. ',', ',' .. f[1] .. ',', 1, true) then
  return {0, f[1]}
end
local out = {1, f[2] or '', f[3] or ''}
for _, id in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do out[#out + 1] = id end
redis.call('DEL', unpack(KEYS))
return out
"""
OPEN_STATES = ("OPENING", "ACTIVE", "CLOSING")
ALL_STATES = (*OPEN_STATES, "CLOSED", "FAILED", "REJECTED")

# Where a replayed message can still be delivered (see lane_has_work).
REPLAYABLE_STATES = {"inbox": ("OPENING", "ACTIVE"), "outbox": ("ACTIVE", "CLOSING")}
# The outbox head's "sending" mark, written only while the outbox lease holds (the
# fencing token is recorded too). KEYS: out lease, snd, ob   ARGV: token, item, part in
# flight, parts done, sent at ms (0: nothing in flight), ttl s, Infobip id sent ('' none),
# ids kept. Returns 1, or 0 when the lease is lost.
_MARK = (
    LEASE_LUA
    + """
if not lease_held(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], 'item', ARGV[2], 'part', ARGV[3], 'done', ARGV[4], 'at', ARGV[5],
  'token', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[6])
if ARGV[7] ~= '' then
  redis.call('LPUSH', KEYS[3], ARGV[7])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[8]) - 1)
  redis.call('EXPIRE', KEYS[3], ARGV[6])
end
return 1
"""
)

_RENEW = LEASE_LUA + "return lease_renew(KEYS[1], ARGV[1], ARGV[2], KEYS[2])"

# KEYS: lease, hash   ARGV: token, field, value
_FENCED_HSET = (
    LEASE_LUA
    + """
if not lease_held(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""
)

# KEYS: h   ARGV: ms
_BACKFILL_MARK = """
if redis.call('HGET', KEYS[1], 'state') ~= 'ACTIVE' then return 0 end
redis.call('HSET', KEYS[1], 'backfill_at', ARGV[1])
return 1
"""
_RELEASE = LEASE_LUA + "return lease_release(KEYS[1], ARGV[1])"
# A lane's wait set (its far side is back, or it is the next to probe it), only on an
# existing handover. KEYS: h   ARGV: field ('in_next_at' / 'out_next_at'), ms
_UNPARK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Agent events of a case not linked yet (the opening's case.open answer was lost) are
# parked on the case's slot; the ext check and the park are one script, so an event is
# either parked before the link reads the parked ones or finds the link. While parked
# events wait to be moved, later ones park behind them (arrival order). A parked entry:
# "<dedupe id>\n<arrival ms>\n<close reason>\n<message bytes ('' for a close)>"; an
# empty dedupe id is the opening's hold (it holds later events back until the handover
# is ACTIVE: a close applied while OPENING would lose what the activation records).
# KEYS: ext, park   ARGV: dedupe id, entry, max entries, ttl s
# Returns {1, cid}: linked, nothing parked; else {0, outcome (1 parked, 2 duplicate,
# 3 full), cid or '' (known: moving is under way)}.
_PARK = """
local cid = redis.call('GET', KEYS[1])
local n = redis.call('LLEN', KEYS[2])
if cid and n == 0 then return {1, cid} end
local prefix = ARGV[1] .. '\\n'
for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if string.sub(e, 1, #prefix) == prefix then return {0, 2, cid or ''} end
end
if n >= tonumber(ARGV[3]) then return {0, 3, cid or ''} end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {0, 1, cid or ''}
"""
# Links a case to its conversation. KEYS: ext, park   ARGV: cid, hold entry ('': none),
# ttl s. Returns the parked entries, oldest first (moved by the caller, then unparked).
_LINK = """
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then
  local held = false
  for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    if string.sub(e, 1, 1) == '\\n' then held = true end
  end
  if not held then redis.call('RPUSH', KEYS[2], ARGV[2]) end
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return redis.call('LRANGE', KEYS[2], 0, -1)
"""
# KEYS: park   Returns the parked entries, oldest first; only the opening's hold: drops it.
_RELEASE_PARK = """
local head = redis.call('LINDEX', KEYS[1], 0)
if redis.call('LLEN', KEYS[1]) == 1 and string.sub(head, 1, 1) == '\\n' then
  redis.call('DEL', KEYS[1])
  return {}
end
return redis.call('LRANGE', KEYS[1], 0, -1)
"""
# Drops moved entries from the head (each only while still the head: another mover may
# have taken them). KEYS: park   ARGV: entries, oldest first   Returns what is left.
_UNPARK_EVENTS = """
for i = 1, #ARGV do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[i] then break end
  redis.call('LPOP', KEYS[1])
end
return redis.call('LRANGE', KEYS[1], 0, -1)
"""
# Expires a case's parked events once the newest is older than the cutoff, unless the
# case got linked (a mover stopped half-way: the caller moves them).
# KEYS: park, ext   ARGV: cutoff ms
# Returns {0} kept, {1, entries dropped}, {2, cid} linked.
_PARK_EXPIRE = """
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
if #entries == 0 then return {1, 0} end
local newest = tonumber(string.match(entries[#entries], '^[^\\n]*\\n(%d+)\\n')) or 0
if newest > tonumber(ARGV[1]) then return {0} end
local cid = redis.call('GET', KEYS[2])
if cid then return {2, cid} end
local events = 0
for _, e in ipairs(entries) do
  if string.sub(e, 1, 1) ~= '\\n' then events = events + 1 end
end
redis.call('DEL', KEYS[1])
return {1, events}
"""
# KEYS: parked index   ARGV: member, cutoff ms (a later park keeps it)
_PARKED_DONE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
"""


@dataclass
class HandoverRecord:
    """A decoded handover hash."""

    conversation_id: str
    state: str
    fields: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.fields.get(key, default)

    def get_int(self, key: str, default: int = 0) -> int:
        try:
            return int(self.fields.get(key, default))
        except ValueError:
            return default

    @property
    def tags(self) -> list[str]:
        return list(orjson.loads(self.get("tags", "[]")))

    @property
    def metadata(self) -> dict[str, str]:
        return dict(orjson.loads(self.get("metadata", "{}")))


@dataclass(frozen=True)
class SendingMark:
    """Where the outbox head's delivery to Infobip stands (``ccb:snd:{cid}``): the queue
    item (a digest of its bytes), the parts Infobip accepted (``done``), and the part
    whose Create Message was sent at ``sent_at_ms`` without a definite answer (``part``;
    ``sent_at_ms`` 0 when none is in flight). ``token`` is the fencing token of the lease
    holder that wrote it."""

    item: str
    part: int
    done: int
    sent_at_ms: int
    token: str


def message_id(payload: bytes) -> str:
    """The id of a queued message (a serialized ``Message``); '' when unreadable."""
    try:
        return common_pb2.Message.FromString(payload).id
    except DecodeError:
        return ""


def outbox_item(payload: bytes) -> str:
    """The name of an outbox queue item in its sending mark (a digest of its bytes)."""
    return hashlib.blake2b(payload, digest_size=12).hexdigest()


SENT_IDS_KEPT = 100  # Infobip ids of sent agent messages remembered per conversation


@dataclass(frozen=True)
class Claim:
    """A conversation whose inbox lease the relay holds, with its inbox head."""

    conversation_id: str
    token: str  # the lease's fencing token
    connector: str
    external_id: str
    in_attempts: int
    head: list[bytes]


@dataclass(frozen=True)
class Finish:
    """One lane's finish: what it popped and what is left in its queue."""

    popped: int  # -1: the lease was lost (nothing popped)
    left: int


@dataclass(frozen=True)
class Finishing:
    """What a lane's holder finishes with (see :meth:`SessionStore.finish`)."""

    conversation_id: str
    token: str
    payloads: Sequence[bytes]  # delivered head messages, head first
    reset_attempts: bool = False
    release: bool = False


@dataclass(frozen=True)
class DeadLetterRecord:
    id: str
    conversation_id: str
    queue: str
    message: bytes
    reason: str
    attempts: int
    dead_at_ms: int


@dataclass(frozen=True)
class Retention:
    """How long what an operator may still act on is kept (settings
    CCBRIDGE_FAILED_RETENTION_S, CCBRIDGE_DEAD_LETTER_RETENTION_S, CCBRIDGE_DEAD_LETTER_MAX).
    CLOSED handovers expire after ``closed_retention_s``; dedupe sets after their TTL."""

    failed_s: int = 30 * 86400
    dead_letter_s: int = 30 * 86400
    dead_letter_max: int = 100_000
    sweep_batch: int = 1000  # per kind and pass: a pass stays short
    # Agent events of a case not linked yet: kept at least this long after the case's
    # last one (CCBRIDGE_PARKED_TTL_S), longer than the opening's retries.
    parked_s: int = 600


@dataclass(frozen=True)
class ReplicaWait:
    """Acknowledge a message only once ``replicas`` Redis replicas hold it (Redis
    ``WAIT``, at most ``timeout_ms``; settings CCBRIDGE_REDIS_WAIT_REPLICAS and
    CCBRIDGE_REDIS_WAIT_TIMEOUT_MS, README "Durability")."""

    replicas: int
    timeout_ms: int


@dataclass
class Swept:
    """What one retention pass removed."""

    failed_handovers: int = 0
    dead_letters_expired: int = 0
    dead_letters_over_cap: int = 0
    parked_expired: int = 0  # agent events of cases never linked
    parked_cases: list[str] = field(default_factory=list)  # their cases, connector:extid


class SessionStore:
    """All Redis access of the Session service."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str = "ccb",
        dedupe_ttl_s: int = 7 * 86400,
        closed_retention_s: int = 7 * 86400,
        retention: Retention | None = None,
        inbox_max: int = 10_000,
        due_shards: int = DUE_SHARDS,
        replica_wait: ReplicaWait | None = None,
        liveness: Liveness | None = None,
        on_dead_letter: Callable[[Lane], None] | None = None,
    ) -> None:
        if due_shards < 1:
            raise ValueError("due_shards must be at least 1")
        self.r = redis
        self.due_shards = due_shards
        self.replica_wait = replica_wait
        # Leases name this replica, so a successor can take them over once it is gone.
        self.liveness = liveness
        self.holder = liveness.replica if liveness else ""
        self.p = prefix
        self.dedupe_ttl_s = dedupe_ttl_s
        self.closed_retention_s = closed_retention_s
        self.retention = retention or Retention()
        self.inbox_max = inbox_max
        self.raw = create_batch(redis)
        # Each dead letter is counted (services/session/metrics.py); lease takeovers in
        # the component's shared metrics (those of the build that creates the store).
        self.on_dead_letter = on_dead_letter
        self._runtime_metrics = current_metrics()
        if self._runtime_metrics is not None:
            for lane in LANES:
                self._runtime_metrics.lease_kind(lane.queue)
        if replica_wait is not None and not isinstance(self.raw, RawPipeline):
            # WAIT counts one server's replicas: a cluster would need it per node.
            raise ValueError("CCBRIDGE_REDIS_WAIT_REPLICAS is not supported on Redis Cluster")
        self._ingest = self.raw.register_script(_INGEST)
        self._create = redis.register_script(_CREATE)
        self._transition = redis.register_script(_TRANSITION)
        self._agent_event = redis.register_script(_AGENT_EVENT)
        self._begin = self.raw.register_script(_BEGIN)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)
        self._claim = self.raw.register_script(_CLAIM)
        self._unpark = self.raw.register_script(_UNPARK)
        self._finish = self.raw.register_script(_FINISH)
        self._replay = redis.register_script(_REPLAY)
        self._erase_failed = redis.register_script(_ERASE_FAILED)
        self._dead_letter_gone = redis.register_script(_DEAD_LETTER_GONE)
        self._erase_conversation = redis.register_script(_ERASE_CONVERSATION)
        self._fenced_hset = redis.register_script(_FENCED_HSET)
        self._backfill_mark = redis.register_script(_BACKFILL_MARK)
        self._mark = redis.register_script(_MARK)
        self._park = redis.register_script(_PARK)
        self._link = redis.register_script(_LINK)
        self._release_park = redis.register_script(_RELEASE_PARK)
        self._unpark_events = redis.register_script(_UNPARK_EVENTS)
        self._park_expire = redis.register_script(_PARK_EXPIRE)
        self._parked_done = redis.register_script(_PARKED_DONE)
        # Conversations whose last ingested message was taken (see ingest()).
        self._open_hint: dict[str, None] = {}

    async def _exec(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The hot paths' commands in one round trip per server (a ``Batch``); raises
        the first error reply."""
        (replies,) = await self._exec_in_turn(commands)
        return replies

    async def _exec_in_turn(self, *groups: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
        """:meth:`_exec` for groups that must run one after the other (``Batch.
        execute_in_turn``: one round trip on one server, one per group on a cluster)."""
        replies = await self.raw.execute_in_turn(*groups)
        for group in replies:
            for reply in group:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    async def _replicated(self, seen_keys: Iterable[str]) -> None:
        """With ``replica_wait``: returns once that many replicas hold every write made so
        far, else raises Unavailable (the caller answers 503; the sender retries and the
        dedupe makes the retry harmless). Without it: at once.

        ``WAIT`` counts the writes of its own connection, so it follows a write of its
        own on the same one: the TTL of the dedupe sets just written (or found: a
        duplicate's first copy, stored by an attempt answered 503, may not be on a
        replica yet) set again, which replicates after everything written before."""
        wait = self.replica_wait
        keys = list(dict.fromkeys(seen_keys))
        if wait is None or not keys:
            return
        commands: list[tuple[Any, ...]] = [("EXPIRE", k, self.dedupe_ttl_s) for k in keys]
        commands.append(("WAIT", wait.replicas, wait.timeout_ms))
        confirmed = int((await self._exec(commands))[-1])
        if confirmed < wait.replicas:
            raise Unavailable(
                f"{confirmed} of {wait.replicas} Redis replicas confirmed the write within "
                f"{wait.timeout_ms} ms"
            )

    # -- key names ---------------------------------------------------------------------
    def k_h(self, cid: str) -> str:
        return f"{self.p}:h:{{{cid}}}"

    def k_in(self, cid: str) -> str:
        return f"{self.p}:in:{{{cid}}}"

    def k_out(self, cid: str) -> str:
        return f"{self.p}:out:{{{cid}}}"

    def k_seen(self, cid: str) -> str:
        return f"{self.p}:seen:{{{cid}}}"

    def k_seen_agent(self, cid: str) -> str:
        return f"{self.p}:sa:{{{cid}}}"

    def k_sending(self, cid: str) -> str:
        return f"{self.p}:snd:{{{cid}}}"

    def k_sent_ids(self, cid: str) -> str:
        return f"{self.p}:ob:{{{cid}}}"

    def _agent_side_keys(self, cid: str) -> list[str]:
        """The agent-side dedupe set, the sending mark and the Infobip ids sent."""
        return [self.k_seen_agent(cid), self.k_sending(cid), self.k_sent_ids(cid)]

    def k_tx(self, cid: str) -> str:
        return f"{self.p}:ti:{{{cid}}}"

    def k_queue(self, lane: Lane, cid: str) -> str:
        return self.k_in(cid) if lane is Lane.INBOX else self.k_out(cid)

    def k_lease(self, lane: Lane, cid: str) -> str:
        return f"{self.p}:lease:{lane.value}:{{{cid}}}"

    def k_lease_v1(self, cid: str) -> str:
        """The one per-conversation lease of releases up to d3ac8b9 (see LEASE_LUA's
        guard): while old pods may run, no lane is taken while they hold it."""
        return f"{self.p}:lease:{{{cid}}}"

    def k_ext(self, connector: str, external_id: str) -> str:
        return f"{self.p}:ext:{{{connector}:{external_id}}}"

    def k_park(self, connector: str, external_id: str) -> str:
        """list: parked agent events of a case not linked yet (the ext key's slot)."""
        return f"{self.p}:park:{{{connector}:{external_id}}}"

    @property
    def k_parked(self) -> str:
        """zset: cases with parked events, scored by their last park (ms)."""
        return f"{self.p}:parked"

    def due_shard(self, cid: str) -> int:
        """The schedule shard of a conversation (the same in every process)."""
        return zlib.crc32(cid.encode()) % self.due_shards

    def k_due(self, lane: Lane, cid: str) -> str:
        """The lane's schedule shard that holds ``cid``."""
        return self.k_due_shard(lane, self.due_shard(cid))

    def k_due_shard(self, lane: Lane, shard: int) -> str:
        return f"{self.p}:due:{lane.value}:{{s{shard}}}"

    def _due_by_shard(self, lane: Lane, cids: Iterable[str]) -> dict[str, list[str]]:
        """The conversations grouped by the lane's schedule shard key."""
        out: dict[str, list[str]] = {}
        for cid in cids:
            out.setdefault(self.k_due(lane, cid), []).append(cid)
        return out

    def k_due_unsharded(self, lane: Lane) -> str:
        """The lane's one schedule of releases before the shards, adopted by :meth:`due`."""
        return f"{self.p}:due:{lane.value}"

    @property
    def k_due_v1(self) -> str:
        """The one schedule of releases up to d3ac8b9, adopted by :meth:`due`."""
        return f"{self.p}:due"

    def _older_schedules(self) -> list[str]:
        """Schedules of older releases a conversation may still sit in (upgrades)."""
        return [*(self.k_due_unsharded(lane) for lane in LANES), self.k_due_v1]

    def k_state(self, state: str) -> str:
        return f"{self.p}:state:{state}"

    @property
    def k_dlq(self) -> str:
        return f"{self.p}:dlq"

    def k_dlc(self, cid: str) -> str:
        """zset: the conversation's dead letters, scored by when they died."""
        return f"{self.p}:dlc:{{{cid}}}"

    @property
    def k_stats(self) -> str:
        """hash: what retention removed, by kind (counted, never silent)."""
        return f"{self.p}:stats"

    def k_dl(self, dl_id: str) -> str:
        return f"{self.p}:dl:{dl_id}"

    def k_tl(self, cid: str) -> str:
        """list: the handover's timeline (services/session/timeline.py)."""
        return f"{self.p}:tl:{{{cid}}}"

    # -- timeline ----------------------------------------------------------------------
    @property
    def timeline_ttl_s(self) -> int:
        """The TTL every timeline write sets: the longest the handover's data is kept
        (closed, FAILED, dead letters); a closed handover's expires with its record."""
        keep = self.retention
        return max(self.closed_retention_s, keep.failed_s, keep.dead_letter_s)

    def _timeline(self, cid: str, *events: TimelineEvent) -> list[tuple[Any, ...]]:
        """The commands recording message events (state changes are recorded by the
        scripts that make them, in the handover hash)."""
        return append_commands(self.k_tl(cid), list(events), self.timeline_ttl_s)

    async def record(self, cid: str, *events: TimelineEvent) -> None:
        """Appends message events to the handover's timeline (one round trip; a failure
        is logged, never raised)."""
        commands = self._timeline(cid, *events)
        _checked(await self.raw.execute(commands), len(commands))

    async def timeline(self, cid: str, limit: int) -> list[TimelineEvent]:
        """The handover's newest ``limit`` events, newest first: its state changes (from
        the hash) merged with its message events (unreadable entries are skipped)."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.k_h(cid))
            pipe.lrange(self.k_tl(cid), 0, limit - 1)
            raw_fields, raw_events = await pipe.execute()
        fields = {_text(k): _text(v) for k, v in raw_fields.items()}
        events = [e for item in raw_events if (e := TimelineEvent.decode(item)) is not None]
        return merged(state_events(fields), events, limit)

    # -- handovers ---------------------------------------------------------------------
    async def create(self, cid: str, tags: Sequence[str], metadata: dict[str, str]) -> bool:
        """Creates an OPENING handover; False when one exists (any state)."""
        ts = now_ms()
        created, _state = await self._create(
            keys=[self.k_h(cid)],
            args=[
                ts,
                orjson.dumps(list(tags)),
                orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS),
            ],
        )
        if int(created):
            await self._index(cid, "OPENING", None, ts, due=(Lane.INBOX,))
        return bool(int(created))

    async def get(self, cid: str) -> HandoverRecord | None:
        return self._record(cid, await self.r.hgetall(self.k_h(cid)))

    def _record(self, cid: str, raw: Any) -> HandoverRecord | None:
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return HandoverRecord(cid, fields.get("state", ""), fields)

    async def begin_step(
        self, lane: Lane, cid: str, lease_ttl_ms: int
    ) -> tuple[str | None, HandoverRecord | None, int, int]:
        """Takes the lane's lease and reads the record and both queue lengths, in one
        round trip: (fencing token or None when held elsewhere, record, inbox length,
        outbox length). A lease whose holder's replica is gone (:class:`Liveness`) is
        taken over from that holder's token (a second round trip, only then)."""
        keys = [
            self.k_lease(lane, cid),
            self.k_lease_v1(cid),
            self.k_h(cid),
            self.k_in(cid),
            self.k_out(cid),
        ]
        (reply,) = await self._evalsha_many(self._begin, [(keys, [lease_ttl_ms, self.holder, ""])])
        owner = _text(reply[4])
        if not _text(reply[0]) and owner and self.liveness and await self.liveness.gone(owner):
            # Its holder's replica is gone: no need to wait out the lease's TTL.
            (reply,) = await self._evalsha_many(
                self._begin, [(keys, [lease_ttl_ms, self.holder, owner])]
            )
            if _text(reply[0]):
                log.info("took over a %s lease from a replica that is gone", lane.queue)
                if self._runtime_metrics is not None:
                    self._runtime_metrics.lease_taken_over(lane.queue)
        token = _text(reply[0])
        flat = reply[1]
        raw = dict(zip(flat[0::2], flat[1::2], strict=True))
        return (token or None), self._record(cid, raw), int(reply[2]), int(reply[3])

    async def renew_lease(self, lane: Lane, cid: str, token: str, ttl_ms: int) -> bool:
        return bool(
            await self._renew(
                keys=[self.k_lease(lane, cid), self.k_lease_v1(cid)], args=[token, ttl_ms]
            )
        )

    async def release_lease(self, lane: Lane, cid: str, token: str) -> None:
        await self._release(keys=[self.k_lease(lane, cid)], args=[token])

    async def snapshot(self, cid: str) -> tuple[HandoverRecord | None, int, int]:
        """The record and both queue lengths, in one round trip."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.k_h(cid))
            pipe.llen(self.k_in(cid))
            pipe.llen(self.k_out(cid))
            raw, inbox, outbox = await pipe.execute()
        return self._record(cid, raw), int(inbox), int(outbox)

    async def unschedule_if_idle(self, lane: Lane, cid: str) -> bool:
        """Drops the lane from its schedule, then (in order: the same round trip on one
        server, the next on a cluster) reads the queues and state; if the lane got work
        meanwhile it is scheduled again at once. Returns whether it was rescheduled."""
        _, (inbox, outbox, state) = await self._exec_in_turn(
            [("ZREM", self.k_due(lane, cid), cid)],
            [("LLEN", self.k_in(cid)), ("LLEN", self.k_out(cid)), ("HGET", self.k_h(cid), "state")],
        )
        if state is not None and lane_has_work(lane, _text(state), int(inbox), int(outbox)):
            await self.schedule(lane, cid, now_ms())
            return True
        return False

    async def queue_lengths(self, cid: str) -> tuple[int, int]:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.llen(self.k_in(cid))
            pipe.llen(self.k_out(cid))
            inbox, outbox = await pipe.execute()
        return int(inbox), int(outbox)

    async def transition(
        self,
        cid: str,
        *,
        allowed: Sequence[str],
        new_state: str = "",
        lane: Lane = Lane.INBOX,
        lease_token: str = "",
        values: dict[str, str] | None = None,
        due: Sequence[Lane] = (),
    ) -> tuple[bool, str]:
        """Atomically moves to ``new_state`` (or only sets ``values``) if the current
        state is in ``allowed`` (and, with a token, ``lane``'s lease is still that
        holder's); then schedules the ``due`` lanes now.

        Returns (done, previous state or 'lease'/'missing')."""
        ts = now_ms()
        known = values or {}
        detail = known.get("failure_reason") or known.get("close_reason") or ""
        args: list[Any] = [lease_token, ",".join(allowed), new_state, ts]
        if new_state and detail:  # recorded with the state change, in the hash
            args += (state_field(ts, new_state), cut_utf8(detail, HASH_DETAIL_MAX))
        else:
            args += ("", "")
        for key, value in known.items():
            args.extend((key, value))
        ok, prev = await self._transition(keys=[self.k_h(cid), self.k_lease(lane, cid)], args=args)
        prev_s = prev.decode() if isinstance(prev, bytes) else str(prev)
        if int(ok) and new_state and new_state != prev_s:
            await self._index(cid, new_state, prev_s, ts, due=due)
        elif int(ok):
            for due_lane in due:
                await self.schedule(due_lane, cid, ts)
        return bool(int(ok)), prev_s

    async def _index(
        self,
        cid: str,
        state: str,
        prev: str | None,
        ts: int,
        *,
        due: Sequence[Lane],
    ) -> None:
        """Indexes a state change (one round trip; its script recorded it in the hash,
        which is the timeline's record of state changes)."""
        async with self.r.pipeline(transaction=False) as pipe:
            if prev and prev != state:
                pipe.zrem(self.k_state(prev), cid)
            pipe.zadd(self.k_state(state), {cid: ts})
            for lane in due:
                pipe.zadd(self.k_due(lane, cid), {cid: ts})
            await pipe.execute()

    async def finish_closed(self, cid: str) -> None:
        """Housekeeping after CLOSED: drop from the schedule, expire the record."""
        self._open_hint.pop(cid, None)
        ttl = self.closed_retention_s
        connector, external_id = await self.r.hmget(self.k_h(cid), ["connector", "external_id"])
        async with self.r.pipeline(transaction=False) as pipe:
            if connector and external_id:  # the case → conversation index goes with it
                pipe.expire(self.k_ext(_text(connector), _text(external_id)), ttl)
            for key in (*(self.k_due(lane, cid) for lane in LANES), *self._older_schedules()):
                pipe.zrem(key, cid)
            pipe.expire(self.k_h(cid), ttl)
            pipe.expire(self.k_tx(cid), ttl)
            pipe.expire(self.k_tl(cid), ttl)
            pipe.expire(self.k_in(cid), ttl)
            pipe.expire(self.k_out(cid), ttl)
            pipe.zremrangebyscore(self.k_state("CLOSED"), 0, now_ms() - ttl * 1000)
            await pipe.execute()

    async def finish_rejected(self, cid: str) -> None:
        """Housekeeping after REJECTED: the record expires like a closed one unless the
        conversation is escalated again (:meth:`reopen_rejected`)."""
        ttl = self.closed_retention_s
        async with self.r.pipeline(transaction=False) as pipe:
            for lane in LANES:
                pipe.zrem(self.k_due(lane, cid), cid)
            for key in (self.k_h(cid), self.k_in(cid), self.k_out(cid), self.k_tl(cid)):
                pipe.expire(key, ttl)
            pipe.zremrangebyscore(self.k_state("REJECTED"), 0, now_ms() - ttl * 1000)
            await pipe.execute()

    async def reopen_rejected(self, cid: str) -> bool:
        """A new escalation of a REJECTED handover: OPENING again, kept (no expiry); end-user
        messages taken while it was OPENING before are delivered once the case opens (those
        in the case's transcript are skipped as usual)."""
        ok, _ = await self.transition(
            cid,
            allowed=("REJECTED",),
            new_state="OPENING",
            due=(Lane.INBOX,),
            values={"failure_reason": "", "open_attempts": "0", "open_next_at": "0"},
        )
        if ok:
            async with self.r.pipeline(transaction=False) as pipe:
                for key in (self.k_h(cid), self.k_in(cid), self.k_out(cid)):
                    pipe.persist(key)
                await pipe.execute()
        return ok

    # -- ingest --------------------------------------------------------------------------
    async def ingest(self, messages: Sequence[common_pb2.Message]) -> list[int]:
        """Stores end-user messages of open handovers. Returns an outcome per message.

        One round trip for the batch: the schedule entries of conversations that took
        messages before (``_open_hint``) are added in the same pipeline, right after the
        pushes, so the common case needs no second round trip; a conversation taking its
        first messages is scheduled in a second one. A wrong guess (the handover closed
        meanwhile) only costs one empty step, which removes the entry. (On a cluster the
        entries follow the pushes in a round trip of their own: nodes keep no common
        order.)"""
        if not messages:
            return []
        hint = self._open_hint
        ts = now_ms()
        guessed = [cid for cid in dict.fromkeys(m.conversation_id for m in messages) if cid in hint]
        commands = [
            self._ingest.command(
                [
                    self.k_h(m.conversation_id),
                    self.k_in(m.conversation_id),
                    self.k_seen(m.conversation_id),
                    self.k_tl(m.conversation_id),
                ],
                [
                    m.id,
                    m.SerializeToString(),
                    self.dedupe_ttl_s,
                    m.channel,
                    getattr(m, "from"),
                    m.to,
                    self.inbox_max,
                    TimelineEvent(ts, EventKind.STORED, "inbox", m.id).encode(),
                    TIMELINE_MAX,
                    self.timeline_ttl_s,
                ],
            )
            for m in messages
        ]
        # NX: a conversation in back-off keeps its later due time. After the pushes (a
        # step that finds the entry finds the messages too).
        schedules = [
            ("ZADD", key, "NX", *_scored(cids, ts))
            for key, cids in self._due_by_shard(Lane.INBOX, guessed).items()
        ]
        replies, _ = await self._exec_in_turn(commands, schedules)
        outcomes = [int(reply) for reply in replies]
        first = set()
        for m, outcome in zip(messages, outcomes, strict=True):
            cid = m.conversation_id
            if outcome == INGEST_IGNORED:
                hint.pop(cid, None)
                continue
            # A duplicate too: the attempt that stored it may have failed before its
            # schedule write (answered 503, so this is the sender's retry).
            if outcome in (INGEST_ACCEPTED, INGEST_DUPLICATE) and cid not in hint:
                first.add(cid)
            if len(hint) >= OPEN_HINT_MAX:
                hint.clear()  # a cache: losing it costs one round trip per conversation
            hint[cid] = None
        first.difference_update(guessed)
        if first:
            await self._exec(
                [
                    ("ZADD", key, "NX", *_scored(cids, ts))
                    for key, cids in self._due_by_shard(Lane.INBOX, first).items()
                ]
            )
        await self._replicated(
            self.k_seen(m.conversation_id)
            for m, outcome in zip(messages, outcomes, strict=True)
            if outcome in (INGEST_ACCEPTED, INGEST_DUPLICATE)
        )
        return outcomes

    async def agent_event(
        self, cid: str, dedupe_id: str, message: bytes | None, reason: str = ""
    ) -> int:
        """Stores an agent message (or a case-closed event) unless ``dedupe_id`` was seen
        (see :func:`agent_message_key`, :func:`case_closed_key`). 0 ignored, 1 message
        queued, 2 duplicate, 3 closing."""
        ts = now_ms()
        result = int(
            await self._agent_event(
                keys=[self.k_h(cid), self.k_out(cid), self.k_seen_agent(cid)],
                args=[
                    dedupe_id,
                    message or b"",
                    self.dedupe_ttl_s,
                    ts,
                    reason,
                    state_field(ts, "CLOSING"),
                    cut_utf8(f"closed at the CCaaS: {reason}", HASH_DETAIL_MAX),
                ],
            )
        )
        if result == 3:
            async with self.r.pipeline(transaction=False) as pipe:
                for state in ("OPENING", "ACTIVE"):
                    pipe.zrem(self.k_state(state), cid)
                pipe.zadd(self.k_state("CLOSING"), {cid: ts})
                for lane in LANES:
                    pipe.zadd(self.k_due(lane, cid), {cid: ts})
                await pipe.execute()
        elif result in (1, 2):
            # NX: an outbox in back-off keeps its time; the inbox's never matters here.
            # A duplicate too: the attempt that stored it may have failed before this
            # write (answered 503, so this is the sender's retry); an outbox already
            # empty costs one empty step.
            stored = TimelineEvent(
                ts, EventKind.STORED, "outbox", dedupe_id.partition(":")[2] or dedupe_id
            )
            recorded = self._timeline(cid, stored) if result == 1 else []
            _checked(
                await self.raw.execute(
                    [("ZADD", self.k_due(Lane.OUTBOX, cid), "NX", ts, cid), *recorded]
                ),
                len(recorded),
            )
        if result:
            await self._replicated([self.k_seen_agent(cid)])
        return result

    async def queue_agent_message(self, cid: str, message: common_pb2.Message) -> bool:
        """Queues an agent message sent through the API; False when a duplicate."""
        res = await self.agent_event(cid, f"a:{message.id}", message.SerializeToString())
        return res == 1

    # -- the outbox head's sending mark -----------------------------------------------------
    async def sending(self, cid: str) -> tuple[SendingMark | None, list[str]]:
        """The outbox head's sending mark (None when there is none) and the Infobip ids
        of the latest agent messages sent, in one round trip."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.k_sending(cid))
            pipe.lrange(self.k_sent_ids(cid), 0, -1)
            raw, ids = await pipe.execute()
        known = [_text(i) for i in ids]
        if not raw:
            return None, known
        f = {_text(k): _text(v) for k, v in raw.items()}
        try:
            mark = SendingMark(
                item=f.get("item", ""),
                part=int(f.get("part", "-1")),
                done=int(f.get("done", "0")),
                sent_at_ms=int(f.get("at", "0")),
                token=f.get("token", ""),
            )
        except ValueError:
            return None, known
        return mark, known

    async def mark_sending(
        self,
        cid: str,
        token: str,
        item: str,
        *,
        part: int,
        done: int,
        sent_at_ms: int,
        infobip_id: str = "",
    ) -> bool:
        """Writes the sending mark (and remembers ``infobip_id`` as sent) while the
        outbox lease is ``token``'s; False when the lease is lost."""
        return bool(
            await self._mark(
                keys=[self.k_lease(Lane.OUTBOX, cid), self.k_sending(cid), self.k_sent_ids(cid)],
                args=[
                    token,
                    item,
                    part,
                    done,
                    sent_at_ms,
                    self.dedupe_ttl_s,
                    infobip_id,
                    SENT_IDS_KEPT,
                ],
            )
        )

    async def clear_sending(self, cid: str) -> None:
        """Drops the sending mark once its item left the queue (a left-over mark names
        another item than the next head's, so it is never applied to it)."""
        await self.r.delete(self.k_sending(cid))

    # -- reverse index, transcript ids ------------------------------------------------------
    async def link_case(self, cid: str, connector: str, external_id: str) -> None:
        """Writes the case → conversation index, then moves the agent events parked for
        the case (:meth:`park_unless_linked`) into the conversation, in arrival order
        (not while it is OPENING: see :meth:`hold_case`)."""
        entries = await self._link(
            keys=[self.k_ext(connector, external_id), self.k_park(connector, external_id)],
            args=[cid, "", 0],
        )
        await self._move_parked(cid, connector, external_id, entries)

    async def hold_case(self, cid: str, connector: str, external_id: str) -> None:
        """The opening's link, before the handover is ACTIVE: writes the case →
        conversation index and holds the case's agent events back (parked, in order)
        until :meth:`release_case`. A close applied while OPENING would lose what the
        activation records (end user, channel, routing)."""
        hold = b"\n" + str(now_ms()).encode() + b"\n\n"
        await self._link(
            keys=[self.k_ext(connector, external_id), self.k_park(connector, external_id)],
            args=[cid, hold, self.dedupe_ttl_s],
        )

    async def release_case(self, cid: str, connector: str, external_id: str) -> None:
        """After the opening's activation: moves the events held since :meth:`hold_case`
        (and any parked before) into the conversation, in arrival order."""
        entries = await self._release_park(keys=[self.k_park(connector, external_id)])
        await self._move_parked(cid, connector, external_id, entries)

    async def park_unless_linked(
        self,
        connector: str,
        external_id: str,
        dedupe_id: str,
        message: bytes | None,
        reason: str = "",
    ) -> tuple[str | None, int]:
        """An agent event (``message`` without its conversation id, or a case close
        with ``reason``) of a case: (conversation id, 0) when the case is linked (the
        caller stores the event with :meth:`agent_event`), else the event is parked
        until the case is linked, at most ``retention.parked_s`` after the case's last
        one: (None, INGEST_ACCEPTED, INGEST_DUPLICATE or INGEST_FULL). A case's
        ``case.open`` answer can be lost (a timeout) while the CCaaS created the case;
        its agent may reply before the opening's retry links it."""
        clean = "".join(c if c.isprintable() else " " for c in reason)
        entry = b"\n".join(
            (dedupe_id.encode(), str(now_ms()).encode(), clean.encode(), message or b"")
        )
        park = self.k_park(connector, external_id)
        reply = await self._park(
            keys=[self.k_ext(connector, external_id), park],
            args=[dedupe_id, entry, PARK_MAX, self.dedupe_ttl_s],
        )
        if int(reply[0]) == 1:
            return _text(reply[1]), 0
        outcome, cid = int(reply[1]), _text(reply[2])
        if outcome == INGEST_FULL:
            return None, outcome
        # Linked, behind parked events or the opening's hold: moved after them, unless
        # the handover is still OPENING (its opening moves them).
        moved = bool(cid) and await self._move_parked(
            cid, connector, external_id, await self.r.lrange(park, 0, -1)
        )
        if not moved:
            # A duplicate too: the attempt that parked it may have failed before this
            # write (answered 503, so this is the sender's retry).
            await self.r.zadd(self.k_parked, {f"{connector}:{external_id}": now_ms()})
        await self._replicated([park])
        return None, outcome

    async def _move_parked(
        self, cid: str, connector: str, external_id: str, entries: Sequence[Any]
    ) -> bool:
        """Stores parked events into the conversation in order, then drops them from
        the park; again while more were parked meanwhile. Idempotent (the agent-side
        dedupe): concurrent movers and a mover's crash leave each event stored once.
        Returns False, moving nothing, while the handover is OPENING (its opening
        moves them once ACTIVE: :meth:`release_case`)."""
        if not entries:
            return True
        if await self.r.hget(self.k_h(cid), "state") in (b"OPENING", "OPENING"):
            return False
        park = self.k_park(connector, external_id)
        while entries:
            for raw in entries:
                dedupe_id, _at, reason, payload = _bytes(raw).split(b"\n", 3)
                if not dedupe_id:
                    continue  # the opening's hold
                message = None
                if payload:
                    msg = common_pb2.Message.FromString(payload)
                    msg.conversation_id = cid
                    message = msg.SerializeToString()
                await self.agent_event(cid, dedupe_id.decode(), message, reason.decode())
            entries = await self._unpark_events(keys=[park], args=list(entries))
        return True

    async def lookup_case(self, connector: str, external_id: str) -> str | None:
        raw = await self.r.get(self.k_ext(connector, external_id))
        return _text(raw) if raw else None

    async def remember_transcript(self, cid: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hset(self.k_tx(cid), mapping=dict.fromkeys(ids, b""))
            pipe.expire(self.k_tx(cid), self.dedupe_ttl_s)
            await pipe.execute()

    async def in_transcript(self, cid: str, message_id: str) -> bool:
        return bool(await self.r.hexists(self.k_tx(cid), message_id))

    async def in_transcript_many(self, cid: str, message_ids: Sequence[str]) -> list[bool]:
        """For each id, whether it is in the conversation's transcript (one round trip)."""
        if not message_ids:
            return []
        found = await self.r.hmget(self.k_tx(cid), list(message_ids))
        return [value is not None for value in found]

    # -- schedule ----------------------------------------------------------------------
    async def due(self, lane: Lane, limit: int) -> tuple[list[str], list[str]]:
        """The ``limit`` conversations whose ``lane`` is due soonest, from all its shards,
        and (inbox lane only) those adopted from the schedule of releases up to d3ac8b9.

        Entries found elsewhere than in their shard move there, due now: from the lane's
        un-sharded schedule (releases before the shards, whose pods may still write there
        during a rolling upgrade), from ``ccb:due`` (into both lanes' shards) and from
        another shard (``CCBRIDGE_DUE_SHARDS`` changed). Returns (due, adopted): ``due``
        includes every moved one, ``adopted`` those of ``ccb:due`` (both lanes have work).
        """
        ts = now_ms()
        shards = [self.k_due_shard(lane, i) for i in range(self.due_shards)]
        older = [self.k_due_unsharded(lane)]
        if lane is Lane.INBOX:
            older.append(self.k_due_v1)
        replies = await self._exec(
            [
                ("ZRANGEBYSCORE", key, "-inf", ts, "WITHSCORES", "LIMIT", 0, limit)
                for key in (*shards, *older)
            ]
        )
        found: list[tuple[float, str]] = []
        moves: list[tuple[str, list[str], Sequence[Lane]]] = []  # from, cids, to lanes
        for shard, reply in enumerate(replies[: len(shards)]):
            pairs = [(float(reply[i + 1]), _text(reply[i])) for i in range(0, len(reply), 2)]
            found += pairs
            misplaced = [cid for _, cid in pairs if self.due_shard(cid) != shard]
            if misplaced:
                moves.append((shards[shard], misplaced, (lane,)))
        found.sort()
        due = [cid for _, cid in found[:limit]]
        adopted: list[str] = []
        for key, reply in zip(older, replies[len(shards) :], strict=True):
            cids = [_text(c) for c in reply[0::2]]
            if not cids:
                continue
            moves.append((key, cids, LANES if key == self.k_due_v1 else (lane,)))
            if key == self.k_due_v1:
                adopted += cids
            due += cids
        if moves:
            commands: list[tuple[Any, ...]] = []
            for _key, cids, lanes in moves:
                for each in lanes:
                    commands += [
                        ("ZADD", shard_key, "NX", *_scored(group, ts))
                        for shard_key, group in self._due_by_shard(each, cids).items()
                    ]
            # Removed only after they are in their shards: a crash in between keeps both.
            await self._exec(commands)
            await self._exec([("ZREM", key, *cids) for key, cids, _ in moves])
        return list(dict.fromkeys(due)), list(dict.fromkeys(adopted))

    async def schedule(self, lane: Lane, cid: str, at_ms: int) -> None:
        await self.r.zadd(self.k_due(lane, cid), {cid: at_ms})

    async def schedule_now(self, lane: Lane, cids: Sequence[str]) -> None:
        """Schedules these conversations' lane now (one round trip)."""
        if cids:
            ts = now_ms()
            await self._exec(
                [
                    ("ZADD", key, *_scored(group, ts))
                    for key, group in self._due_by_shard(lane, cids).items()
                ]
            )

    async def unpark(self, lane: Lane, cids: Sequence[str], at_ms: int | None = None) -> None:
        """Hands conversations waiting on a far side back to their lane (now, or at
        ``at_ms``): sets the lane's wait to then and schedules it (one round trip)."""
        if cids:
            field, at = f"{lane.value}_next_at", now_ms() if at_ms is None else at_ms
            # The wait is lowered before the schedule entry appears (in turn on a cluster).
            await self._exec_in_turn(
                [self._unpark.command([self.k_h(cid)], [field, at]) for cid in cids],
                [
                    ("ZADD", key, *_scored(group, at))
                    for key, group in self._due_by_shard(lane, cids).items()
                ],
            )

    async def postpone_if_earlier(self, lane: Lane, cid: str, at_ms: int) -> None:
        """Moves an existing schedule entry later (another replica holds the lease)."""
        await self.r.zadd(self.k_due(lane, cid), {cid: at_ms}, xx=True, gt=True)

    async def unschedule(self, lane: Lane, cid: str) -> None:
        await self.r.zrem(self.k_due(lane, cid), cid)

    async def scheduled(self, lane: Lane, cid: str) -> bool:
        return await self.r.zscore(self.k_due(lane, cid), cid) is not None

    # -- queues --------------------------------------------------------------------------
    async def peek(self, queue_key: str, count: int) -> list[bytes]:
        """The first ``count`` messages of a queue, head first."""
        return [_bytes(raw) for raw in await self.r.lrange(queue_key, 0, count - 1)]

    async def pop_head(self, lane: Lane, cid: str, token: str, expected: bytes) -> int:
        """Pops the lane's head if it is still ``expected`` and the lease still that
        holder's: 1 popped, 0 head changed, -1 lease lost."""
        (finish,) = await self.finish(lane, [Finishing(cid, token, [expected])], delivered=False)
        return finish.popped

    # -- delivery primitives, batched (services/session/delivery.py) -----------------------
    async def _evalsha_many(
        self, script: RawScript, calls: Sequence[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        """Runs ``script`` once per (keys, args) in one pipelined round trip."""
        return await self._exec([script.command(keys, args) for keys, args in calls])

    async def claim(
        self, cids: Sequence[str], lease_ttl_ms: int, window: int
    ) -> list[Claim | bool | None]:
        """The relay's claim, for each conversation: a :class:`Claim` (inbox lease
        taken, head read), ``False`` when another holder has the lease, ``None`` when it
        is not for the relay (the inbox lane's full step handles it). One round trip."""
        ts = now_ms()
        replies = await self._evalsha_many(
            self._claim,
            [
                (
                    [
                        self.k_h(cid),
                        self.k_lease(Lane.INBOX, cid),
                        self.k_lease_v1(cid),
                        self.k_in(cid),
                    ],
                    [lease_ttl_ms, window, ts, self.holder],
                )
                for cid in cids
            ],
        )
        out: list[Claim | bool | None] = []
        for cid, reply in zip(cids, replies, strict=True):
            kind = int(reply[0])
            if kind == 1:
                out.append(
                    Claim(
                        conversation_id=cid,
                        token=_text(reply[1]),
                        connector=_text(reply[2]),
                        external_id=_text(reply[3]),
                        in_attempts=int(_text(reply[4]) or 0),
                        head=[_bytes(p) for p in reply[5]],
                    )
                )
            else:
                out.append(False if kind == 0 else None)
        return out

    async def in_transcript_batch(
        self, ids_by_conversation: Sequence[tuple[str, Sequence[str]]]
    ) -> list[list[bool]]:
        """``in_transcript_many`` for several conversations in one round trip."""
        replies = await self._exec(
            [("HMGET", self.k_tx(cid), *ids) for cid, ids in ids_by_conversation if ids]
        )
        found = iter(replies)
        return [
            [value is not None for value in next(found)] if ids else []
            for _cid, ids in ids_by_conversation
        ]

    async def finish(
        self,
        lane: Lane,
        finishes: Sequence[Finishing],
        *,
        unschedule: bool = False,
        delivered: bool = True,
    ) -> list[Finish]:
        """For each :class:`Finishing`: pops its payloads off the lane's queue head
        (each only if still the head, none unless the fencing token still holds the
        lease), resets the lane's retry counter and releases the lease when asked, and
        reads the queue's length; all in one round trip.

        With ``unschedule`` each conversation first leaves the lane's schedule (same
        round trip, before the pops); the caller schedules again whatever has work left
        (:meth:`schedule_now`). That order keeps a message from being stranded: Ingest
        pushes, then schedules, so a message pushed after the unschedule puts the
        conversation back itself, and one pushed before it is counted in the length.
        (On Redis Cluster the unschedules are a round trip of their own, before the
        pops: each node keeps only its own order.)

        ``delivered``: the payloads reached the far side; each is recorded on its
        handover's timeline in the same round trip."""
        unschedules = [
            ("ZREM", self.k_due(lane, f.conversation_id), f.conversation_id)
            for f in finishes
            if unschedule
        ]
        commands: list[tuple[Any, ...]] = []
        for f in finishes:
            cid = f.conversation_id
            commands.append(
                self._finish.command(
                    [self.k_lease(lane, cid), self.k_queue(lane, cid), self.k_h(cid)],
                    [
                        f.token,
                        lane.value if f.reset_attempts else "",
                        "1" if f.release else "0",
                        *f.payloads,
                    ],
                )
            )
        ts = now_ms()
        recorded = [
            command
            for f in finishes
            if delivered
            for command in self._timeline(
                f.conversation_id,
                *(
                    TimelineEvent(ts, EventKind.DELIVERED, lane.queue, message_id(p))
                    for p in f.payloads
                ),
            )
        ]
        # The timeline's writes ride with the pops (no round trip of their own on a cluster).
        done, replies = await self.raw.execute_in_turn(unschedules, [*commands, *recorded])
        _checked([*done, *replies], len(recorded))
        return [Finish(int(r[0]), int(r[1])) for r in replies[: len(commands)]]

    # -- dead letters ------------------------------------------------------------------------
    async def dead_letter(
        self,
        lane: Lane,
        cid: str,
        token: str,
        payload: bytes,
        reason: str,
        attempts: int,
    ) -> bool:
        """Moves the lane's head message to the dead letters (only if still the head
        and the token still holds the lease).

        The record is written before the head is popped (the dead-letter keys live in
        another hash slot, so one script cannot do both): a crash in between leaves the
        message at the head as well, to be dead-lettered again, never nowhere."""
        dl_id = uuid.uuid4().hex
        ts = now_ms()
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hset(
                self.k_dl(dl_id),
                mapping={
                    "conversation_id": cid,
                    "queue": lane.queue,
                    "message": payload,
                    "reason": reason[:500],
                    "attempts": attempts,
                    "dead_at": ts,
                },
            )
            pipe.zadd(self.k_dlq, {dl_id: ts})
            pipe.zadd(self.k_dlc(cid), {dl_id: ts})
            await pipe.execute()
        if await self.pop_head(lane, cid, token, payload) != 1:
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.zrem(self.k_dlq, dl_id)
                pipe.zrem(self.k_dlc(cid), dl_id)
                pipe.delete(self.k_dl(dl_id))
                await pipe.execute()
            return False
        dead = TimelineEvent(
            ts, EventKind.DEAD_LETTERED, lane.queue, message_id(payload), detail=reason
        )
        recorded = self._timeline(cid, dead)
        _checked(
            await self.raw.execute([("HINCRBY", self.k_h(cid), "dead_letters", 1), *recorded]),
            len(recorded),
        )
        if self.on_dead_letter is not None:
            self.on_dead_letter(lane)
        return True

    async def list_dead_letters(
        self, cid: str, offset: int, limit: int
    ) -> tuple[list[DeadLetterRecord], int | None]:
        """A page of dead letters, oldest first: all of them, or one conversation's (its
        own index). Two round trips whatever the page size."""
        index = self.k_dlc(cid) if cid else self.k_dlq
        if cid and not await self.r.exists(index):
            await self._index_dead_letters_of(cid)
        ids = [_text(i) for i in await self.r.zrange(index, offset, offset + limit)]
        more = len(ids) > limit
        ids = ids[:limit]
        async with self.r.pipeline(transaction=False) as pipe:
            for dl_id in ids:
                pipe.hgetall(self.k_dl(dl_id))
            raws = await pipe.execute() if ids else []
        out = [
            rec
            for dl_id, raw in zip(ids, raws, strict=True)
            if (rec := self._dead_letter(dl_id, raw)) is not None
        ]
        return out, (offset + limit) if more else None

    async def _index_dead_letters_of(self, cid: str, *, always: bool = False) -> None:
        """Builds a conversation's dead-letter index from the global one: dead letters of
        releases before the per-conversation index (once per conversation, and only when
        its handover counts some — ``always`` when erasing)."""
        if not always:
            rec = await self.get(cid)
            if rec is None or rec.get_int("dead_letters") <= 0:
                return
        cursor = 0
        while True:
            cursor, page = await self.r.zscan(self.k_dlq, cursor, count=1000)
            ids = [_text(member) for member, _ in page]
            async with self.r.pipeline(transaction=False) as pipe:
                for dl_id in ids:
                    pipe.hget(self.k_dl(dl_id), "conversation_id")
                owners = await pipe.execute() if ids else []
            mine = {
                dl_id: score
                for (dl_id, score), owner in zip(
                    ((_text(m), sc) for m, sc in page), owners, strict=True
                )
                if owner is not None and _text(owner) == cid
            }
            if mine:
                await self.r.zadd(self.k_dlc(cid), mine)
            if cursor == 0:
                return

    def _dead_letter(self, dl_id: str, raw: Any) -> DeadLetterRecord | None:
        if not raw:
            return None
        f = {_text(k): v for k, v in raw.items()}
        return DeadLetterRecord(
            id=dl_id,
            conversation_id=_text(f["conversation_id"]),
            queue=_text(f["queue"]),
            message=_bytes(f["message"]),
            reason=_text(f["reason"]),
            attempts=int(_text(f["attempts"])),
            dead_at_ms=int(_text(f["dead_at"])),
        )

    async def get_dead_letter(self, dl_id: str) -> DeadLetterRecord | None:
        return self._dead_letter(dl_id, await self.r.hgetall(self.k_dl(dl_id)))

    async def replay_dead_letter(self, rec: DeadLetterRecord) -> tuple[Lane | None, str]:
        """Queues a dead letter again at the end of its queue, if its handover can still
        deliver it there. Returns the lane (None when refused) and the handover's state
        ('' when the handover no longer exists). Idempotent: a letter replayed twice (a
        crash between the two steps) is queued once."""
        lane = Lane.INBOX if rec.queue == "inbox" else Lane.OUTBOX
        cid = rec.conversation_id
        outcome, state = await self._replay(
            keys=[self.k_h(cid), self.k_queue(lane, cid), self.k_seen(cid)],
            args=[
                f"dl:{rec.id}",
                rec.message,
                ",".join(REPLAYABLE_STATES[lane.queue]),
                self.dedupe_ttl_s,
            ],
        )
        if int(outcome) == 0:
            return None, _text(state)
        # The global indexes after the conversation's own keys (Redis Cluster layout).
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zrem(self.k_dlq, rec.id)
            pipe.zrem(self.k_dlc(cid), rec.id)
            pipe.delete(self.k_dl(rec.id))
            pipe.zadd(self.k_due(lane, cid), {cid: now_ms()})
            replayed = TimelineEvent(
                now_ms(), EventKind.REPLAYED, rec.queue, message_id(rec.message)
            )
            recorded = self._timeline(cid, replayed)
            for command in recorded:
                pipe.execute_command(*command)
            _checked(await pipe.execute(raise_on_error=False), len(recorded))
        return lane, _text(state)

    async def discard_dead_letter(self, rec: DeadLetterRecord) -> bool:
        """Drops a dead letter for good (an operator's decision); False when it was gone
        already (another call or retention took it)."""
        if not await self._drop_dead_letters([rec.id]):
            return False
        discarded = TimelineEvent(
            now_ms(), EventKind.DISCARDED, rec.queue, message_id(rec.message), detail="operator"
        )
        if await self.r.exists(self.k_h(rec.conversation_id)):
            await self.record(rec.conversation_id, discarded)
        return True

    # -- listing ---------------------------------------------------------------------------
    async def list_state(self, state: str, offset: int, limit: int) -> tuple[list[str], bool]:
        raw = await self.r.zrevrange(self.k_state(state), offset, offset + limit)
        ids = [_text(c) for c in raw]
        return ids[:limit], len(ids) > limit

    # -- retention -------------------------------------------------------------------------
    async def sweep_retention(self, now: int | None = None) -> Swept:
        """Removes FAILED handovers and dead letters past their retention, and the oldest
        dead letters beyond the cap; counts each kind in ``stats`` (bounded per pass)."""
        now = now_ms() if now is None else now
        keep, swept = self.retention, Swept()
        cutoff = now - keep.failed_s * 1000
        failed = await self.r.zrangebyscore(
            self.k_state("FAILED"), 0, cutoff, start=0, num=keep.sweep_batch
        )
        for raw in failed:
            cid = _text(raw)
            erased = await self._erase_failed(
                keys=[
                    self.k_h(cid),
                    self.k_in(cid),
                    self.k_out(cid),
                    self.k_seen(cid),
                    self.k_tx(cid),
                    *self._agent_side_keys(cid),
                    self.k_tl(cid),
                ],
                args=[cutoff],
            )
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.zrem(self.k_state("FAILED"), cid)  # erased, retried or stale
                if erased:
                    connector, external_id = (_text(v) for v in erased)
                    if connector and external_id:
                        pipe.delete(self.k_ext(connector, external_id))
                await pipe.execute()
            swept.failed_handovers += bool(erased)
        expired = await self.r.zrangebyscore(
            self.k_dlq, 0, now - keep.dead_letter_s * 1000, start=0, num=keep.sweep_batch
        )
        swept.dead_letters_expired = await self._drop_dead_letters(expired)
        over = await self.r.zcard(self.k_dlq) - keep.dead_letter_max
        if over > 0:
            oldest = await self.r.zrange(self.k_dlq, 0, min(over, keep.sweep_batch) - 1)
            swept.dead_letters_over_cap = await self._drop_dead_letters(oldest)
        await self._sweep_parked(now, swept)
        counts = {
            "failed_handovers_expired": swept.failed_handovers,
            "dead_letters_expired": swept.dead_letters_expired,
            "dead_letters_over_cap": swept.dead_letters_over_cap,
            "parked_expired": swept.parked_expired,
        }
        if any(counts.values()):
            async with self.r.pipeline(transaction=False) as pipe:
                for kind, count in counts.items():
                    if count:
                        pipe.hincrby(self.k_stats, kind, count)
                await pipe.execute()
        return swept

    async def _sweep_parked(self, now: int, swept: Swept) -> None:
        """Drops the parked events of cases never linked within ``retention.parked_s``
        of their last one (counted in ``swept``); moves those of a case linked meanwhile
        whose mover stopped half-way."""
        cutoff = now - self.retention.parked_s * 1000
        members = await self.r.zrangebyscore(
            self.k_parked, 0, cutoff, start=0, num=self.retention.sweep_batch
        )
        for raw in members:
            case = _text(raw)
            connector, _, external_id = case.partition(":")
            park = self.k_park(connector, external_id)
            reply = await self._park_expire(
                keys=[park, self.k_ext(connector, external_id)], args=[cutoff]
            )
            if int(reply[0]) == 0:
                continue  # parked again since: its park moved the score
            if int(reply[0]) == 2:
                entries = await self.r.lrange(park, 0, -1)
                if not await self._move_parked(_text(reply[1]), connector, external_id, entries):
                    continue  # still OPENING: its opening moves them
            elif int(reply[1]):
                swept.parked_expired += int(reply[1])
                swept.parked_cases.append(case)
            await self._parked_done(keys=[self.k_parked], args=[case, cutoff])

    async def _drop_dead_letters(self, raw_ids: Sequence[Any]) -> int:
        """Removes dead letters; returns how many this call removed (another replica's
        pass may race: each letter is counted by the one whose ZREM took it)."""
        ids = [_text(i) for i in raw_ids]
        if not ids:
            return 0
        async with self.r.pipeline(transaction=False) as pipe:
            for dl_id in ids:
                pipe.zrem(self.k_dlq, dl_id)
                pipe.hget(self.k_dl(dl_id), "conversation_id")
            replies = await pipe.execute()
        taken = [
            (dl_id, owner)
            for dl_id, removed, owner in zip(ids, replies[0::2], replies[1::2], strict=True)
            if removed
        ]
        for dl_id, owner in taken:
            if owner is not None:
                cid = _text(owner)
                await self._dead_letter_gone(keys=[self.k_h(cid), self.k_dlc(cid)], args=[dl_id])
        if taken:
            await self.r.delete(*(self.k_dl(dl_id) for dl_id, _ in taken))
        return len(taken)

    async def retention_stats(self) -> dict[str, int]:
        """What retention has removed so far, by kind."""
        raw = await self.r.hgetall(self.k_stats)
        return {_text(k): int(_text(v)) for k, v in raw.items()}

    # -- erasure (data-protection requests) ------------------------------------------------
    async def open_state(self, cid: str) -> str:
        """The handover's state if it is open (OPENING, ACTIVE, CLOSING), else ''."""
        state = await self.r.hget(self.k_h(cid), "state")
        return _text(state) if state is not None and _text(state) in OPEN_STATES else ""

    async def erase_conversation(self, cid: str) -> tuple[bool, int]:
        """Erases what is stored about ``cid`` unless its handover is open; returns
        (erased, dead letters erased). Erasing nothing known is not an error."""
        await self._index_dead_letters_of(cid, always=True)  # letters from before the index
        reply = await self._erase_conversation(
            keys=[
                self.k_h(cid),
                self.k_in(cid),
                self.k_out(cid),
                self.k_seen(cid),
                self.k_tx(cid),
                self.k_dlc(cid),
                self.k_lease(Lane.INBOX, cid),
                self.k_lease(Lane.OUTBOX, cid),
                self.k_lease_v1(cid),
                *self._agent_side_keys(cid),
                self.k_tl(cid),
            ],
            args=[",".join(OPEN_STATES)],
        )
        if int(reply[0]) == 0:
            return False, 0
        connector, external_id = _text(reply[1]), _text(reply[2])
        letters = [_text(i) for i in reply[3:]]
        async with self.r.pipeline(transaction=False) as pipe:
            if connector and external_id:
                pipe.delete(self.k_ext(connector, external_id))
            for state in ALL_STATES:
                pipe.zrem(self.k_state(state), cid)
            for key in (*(self.k_due(lane, cid) for lane in LANES), *self._older_schedules()):
                pipe.zrem(key, cid)
            for dl_id in letters:
                pipe.delete(self.k_dl(dl_id))
            if letters:
                pipe.zrem(self.k_dlq, *letters)
            await pipe.execute()
        return True, len(letters)

    async def conversations_of(self, end_user: str) -> list[str]:
        """Every conversation the bridge holds something about whose end user is
        ``end_user``: handovers in any state, and dead letters whose handover is gone.
        A scan (data-protection requests are rare): O(handovers + dead letters)."""
        found: dict[str, None] = {}
        for state in ALL_STATES:
            cursor = 0
            while True:
                cursor, page = await self.r.zscan(self.k_state(state), cursor, count=1000)
                cids = [_text(member) for member, _ in page]
                async with self.r.pipeline(transaction=False) as pipe:
                    for cid in cids:
                        pipe.hget(self.k_h(cid), "end_user")
                    owners = await pipe.execute() if cids else []
                found.update(
                    (cid, None)
                    for cid, owner in zip(cids, owners, strict=True)
                    if owner is not None and _text(owner) == end_user
                )
                if cursor == 0:
                    break
        cursor = 0
        while True:
            cursor, page = await self.r.zscan(self.k_dlq, cursor, count=1000)
            ids = [_text(member) for member, _ in page]
            async with self.r.pipeline(transaction=False) as pipe:
                for dl_id in ids:
                    pipe.hmget(self.k_dl(dl_id), ["conversation_id", "message"])
                rows = await pipe.execute() if ids else []
            for cid_raw, payload in rows:
                if cid_raw is None or payload is None:
                    continue
                message = common_pb2.Message.FromString(_bytes(payload))
                if end_user in (getattr(message, "from"), message.to):
                    found[_text(cid_raw)] = None
            if cursor == 0:
                break
        return list(found)

    # -- reconciler (services/session/reconciler.py) ---------------------------------------
    @property
    def k_reconcile_lease(self) -> str:
        """Lease of the one replica that runs the reconciler's pass."""
        return f"{self.p}:lease:reconcile"

    @property
    def k_reconcile(self) -> str:
        """Hash of the reconciler's progress: ``closed_mark`` (ms: where the next CLOSED
        listing starts, before the margin) and ``backfill_cursor`` (offset into ACTIVE).
        Its hash tag is the lease's whole name: the same slot as the lease, so one script
        checks the lease and writes it (Redis Cluster)."""
        return f"{self.p}:reconcile:{{{self.k_reconcile_lease}}}"

    @property
    def k_reconcile_v1(self) -> str:
        """The progress hash of older releases, read while the new one has no marks."""
        return f"{self.p}:reconcile"

    async def index_rows(
        self, cids: Sequence[str]
    ) -> list[tuple[str | None, int, int, bool, bool]]:
        """For each conversation, in one round trip: (state or None, inbox length, outbox
        length, inbox lane scheduled, outbox lane scheduled)."""
        if not cids:
            return []
        commands: list[tuple[Any, ...]] = []
        for cid in cids:
            commands += [
                ("HGET", self.k_h(cid), "state"),
                ("LLEN", self.k_in(cid)),
                ("LLEN", self.k_out(cid)),
                ("ZSCORE", self.k_due(Lane.INBOX, cid), cid),
                ("ZSCORE", self.k_due(Lane.OUTBOX, cid), cid),
            ]
        replies = await self._exec(commands)
        return [
            (
                _text(replies[i]) if replies[i] is not None else None,
                int(replies[i + 1]),
                int(replies[i + 2]),
                replies[i + 3] is not None,
                replies[i + 4] is not None,
            )
            for i in range(0, len(replies), 5)
        ]

    async def states(self, cids: Sequence[str]) -> list[str | None]:
        """Each conversation's handover state (None: no handover), in one round trip."""
        if not cids:
            return []
        replies = await self._exec([("HGET", self.k_h(cid), "state") for cid in cids])
        return [_text(reply) if reply is not None else None for reply in replies]

    async def oldest_open_ms(self) -> int | None:
        """The earliest last-change time (ms) of an OPENING or ACTIVE handover."""
        found: list[int] = []
        for state in ("OPENING", "ACTIVE"):
            first = await self.r.zrange(self.k_state(state), 0, 0, withscores=True)
            found += [int(float(pair[1])) for pair in first if isinstance(pair, tuple | list)]
        return min(found) if found else None

    async def reconcile_progress(self) -> tuple[int | None, int]:
        """(closed mark in ms or None before the first pass, backfill cursor)."""
        fields = ["closed_mark", "backfill_cursor"]
        mark, cursor = await self.r.hmget(self.k_reconcile, fields)
        if mark is None and cursor is None:  # an upgrade: the older release's marks
            mark, cursor = await self.r.hmget(self.k_reconcile_v1, fields)
        return (int(mark) if mark else None), (int(cursor) if cursor else 0)

    async def save_reconcile_progress(self, token: str, field_name: str, value: int) -> bool:
        """Stores one progress field only while ``token`` still holds the reconciler's
        lease (a paused former holder cannot move the marks back)."""
        return bool(
            int(
                await self._fenced_hset(
                    keys=[self.k_reconcile_lease, self.k_reconcile], args=[token, field_name, value]
                )
            )
        )

    async def set_backfill_mark(self, cid: str, created_ms: int) -> None:
        """Records the newest inbound message the backfill has seen (``backfill_at``, ms)
        on an ACTIVE handover; a handover gone or past ACTIVE is left alone."""
        await self._backfill_mark(keys=[self.k_h(cid)], args=[created_ms])
