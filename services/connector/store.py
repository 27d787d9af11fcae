"""Redis keys of the connector service and of its adapters, all under the one prefix
(``CCBRIDGE_REDIS_PREFIX``, ``ccb`` by default); leases are services/runtime/lease.py's.

=======================================  ==================================================
``ccb:connector:poll-lease:{name}``      the right of one replica to poll a poll-mode
                                         connector (fencing token), renewed every cycle
``ccb:rt:cursor:{queue}``                RT: highest transaction id handled in a queue
``ccb:rt:lease:{queue}``                 RT: the right to poll a queue (fencing token)
``ccb:rt:queues``                        RT: set of queues tickets were opened in
``ccb:rt:open:{conversation}``           RT: lock of one conversation's ticket creation
``ccb:rt:msg:{conversation}:<key>``      RT: a posted customer message's transaction id
``ccb:rt:msglock:{conversation}:<key>``  RT: lock of one customer message's post
``ccb:connector:genesys:case:{user}``   Genesys: the open case of an end-user identity
                                         (Genesys conversation id, Infobip conversation,
                                         idType, transcript parts sent)
``ccb:connector:genesys:open``           Genesys: set of end-user identities with an open
                                         case (polled for the conversation's end)
``ccb:connector:genesys:msg:{user}:<k>`` Genesys: a posted customer message's Genesys id
``ccb:zendesk:case:{conversation}``      Zendesk: the Sunshine conversation of one
                                         Infobip conversation and how far its opening
                                         got (hash: user, conversation, passed)
``ccb:zendesk:open:{conversation}``      Zendesk: lock of one conversation's opening
``ccb:zendesk:msg:{conversation}:<k>``   Zendesk: a posted message's Sunshine id
``ccb:zendesk:msglock:{conversation}:<k>``  Zendesk: lock of one message's post
``ccb:connector:live:<replica>``         a connector replica's liveness key (3 s TTL,
                                         renewed every second); its leases' tokens name it
=======================================  ==================================================

A queue's keys share a hash tag, a conversation's too. Releases up to d3ac8b9 kept the
poll lease at ``ccbridge:connector:poll-lease:{name}`` (no prefix); it is the poll lease's
guard during a rolling upgrade. They also kept RT's keys under ``ccb`` whatever the
prefix: with another prefix, RT's cursors, queue set and message records are read from
there when missing under the prefix (:meth:`ConnectorStore.rt_v1`), so an upgrade
neither skips agent replies nor posts a message twice (docs/deploy.md, "Upgrades").
"""

from __future__ import annotations

from ccbridge.services.runtime.lease import Lease, Liveness
from ccbridge.services.runtime.metrics import current as current_metrics
from ccbridge.services.runtime.redis import RedisClient


class ConnectorStore:
    """Key names of the connector and its adapters, and the Redis client they use."""

    def __init__(
        self, redis: RedisClient, prefix: str = "ccb", liveness: Liveness | None = None
    ) -> None:
        self.redis = redis
        self.p = prefix
        # This replica's heartbeat: a successor takes its poll leases over as soon as it
        # is gone (crashed, frozen), not after their TTL (services/runtime/lease.py).
        self.liveness = liveness
        # Leases made later (per queue, on first poll) count takeovers here too.
        self._metrics = current_metrics()

    # -- the service's poll lease --------------------------------------------------------------
    def poll_lease(self, connector: str, ttl_s: float) -> Lease:
        """The right of one replica to poll ``connector``."""
        return Lease(
            self.redis,
            f"{self.p}:connector:poll-lease:{{{connector}}}",
            max(int(ttl_s * 1000), 1000),
            guard_key=f"ccbridge:connector:poll-lease:{{{connector}}}",
            liveness=self.liveness,
            kind="poll",
            metrics=self._metrics,
        )

    # -- the rt adapter ----------------------------------------------------------------------
    def rt_cursor(self, queue: str) -> str:
        return f"{self.p}:rt:cursor:{{{queue}}}"

    def rt_lease(self, queue: str, ttl_ms: int) -> Lease:
        """The right to poll one RT queue (the key is unchanged since d3ac8b9: an older
        pod's token there keeps this one out, and this one's keeps it out)."""
        return Lease(
            self.redis,
            f"{self.p}:rt:lease:{{{queue}}}",
            ttl_ms,
            liveness=self.liveness,
            kind="poll",
            metrics=self._metrics,
        )

    @property
    def rt_queues(self) -> str:
        return f"{self.p}:rt:queues"

    def rt_open_lock(self, conversation_id: str) -> str:
        return f"{self.p}:rt:open:{{{conversation_id}}}"

    def rt_message(self, conversation_id: str, key: str) -> str:
        return f"{self.p}:rt:msg:{{{conversation_id}}}:{key}"

    def rt_message_lock(self, conversation_id: str, key: str) -> str:
        return f"{self.p}:rt:msglock:{{{conversation_id}}}:{key}"

    def rt_v1(self, key: str) -> str | None:
        """Where releases up to d3ac8b9 kept an RT key (always under ``ccb``), when that
        is another key; read when the key itself is missing."""
        v1 = "ccb" + key[len(self.p) :]
        return v1 if v1 != key else None

    # -- the genesys adapter (under the connector's own key family) ---------------------------
    def genesys_case(self, end_user: str) -> str:
        return f"{self.p}:connector:genesys:case:{{{end_user}}}"

    @property
    def genesys_open(self) -> str:
        return f"{self.p}:connector:genesys:open"

    def genesys_message(self, end_user: str, key: str) -> str:
        return f"{self.p}:connector:genesys:msg:{{{end_user}}}:{key}"

    # -- the zendesk adapter -----------------------------------------------------------------
    def zendesk_case(self, conversation_id: str) -> str:
        return f"{self.p}:zendesk:case:{{{conversation_id}}}"

    def zendesk_open_lock(self, conversation_id: str) -> str:
        return f"{self.p}:zendesk:open:{{{conversation_id}}}"

    def zendesk_message(self, conversation_id: str, key: str) -> str:
        return f"{self.p}:zendesk:msg:{{{conversation_id}}}:{key}"

    def zendesk_message_lock(self, conversation_id: str, key: str) -> str:
        return f"{self.p}:zendesk:msglock:{{{conversation_id}}}:{key}"
