"""Session's store, relay, leases, dead letters, retention and erasure against a real
Redis Cluster (three local masters, tests/support/redis_cluster.py): the store's own
tests, run again here with ``redis_url`` and ``redis_client`` pointing at the cluster.
Each conversation's keys share one slot; the schedule shards, state indexes and dead
letters are spread over the others, so these fail with CROSSSLOT or MOVED wherever a
script or a batch mixes slots."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from ccbridge.services.connector.store import ConnectorStore
from ccbridge.services.runtime.redis import RedisClient, create_redis
from ccbridge.services.runtime.redis_acl import REDIS_COMPONENTS, acl_setuser
from ccbridge.services.session.store import Lane, ReplicaWait, SessionStore
from tests.services.session import (
    test_delivery_lanes,
    test_erase,
    test_parked,
    test_reconciler,
    test_relay,
    test_retention,
    test_retry_schedules,
    test_store_hotpath,
    test_store_upgrade,
)
from tests.support.redis_server import flush_db

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def redis_url(redis_cluster_url: str) -> str:
    return redis_cluster_url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[RedisClient]:
    flush_db(redis_url)
    client = create_redis(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_schedule_shards_are_spread_over_the_masters(
    redis_client: RedisClient,
) -> None:
    """The default shard count puts each lane's schedule on every master."""
    store = SessionStore(redis_client)
    try:
        cids = [f"conv-{i}" for i in range(40)]
        await store.schedule_now(Lane.INBOX, cids)
        assert isinstance(redis_client, RedisCluster)
        owners = {
            str(node.name)
            for i in range(store.due_shards)
            if (node := redis_client.get_node_from_key(store.k_due_shard(Lane.INBOX, i)))
        }
        assert len(owners) == 3
        due, _ = await store.due(Lane.INBOX, 100)
        assert sorted(due) == sorted(cids)
        assert await store.due(Lane.INBOX, 7) == (due[:7], [])  # the soonest, all shards
    finally:
        await store.raw.aclose()


# The store's hot paths: ingest, its schedule, transcript ids, step reads.
store = test_store_hotpath.store
test_ingest_outcomes_survive_a_flushed_script_cache = (
    test_store_hotpath.test_ingest_outcomes_survive_a_flushed_script_cache
)
test_transcript_ids_and_step_reads = test_store_hotpath.test_transcript_ids_and_step_reads
# (Not its round-trip count: on a cluster the schedule entries follow the pushes in a
# round trip of their own.)

# Leases (and their upgrade guards) and the schedules of older releases.
test_an_old_pods_lease_keeps_both_lanes_out = (
    test_store_upgrade.test_an_old_pods_lease_keeps_both_lanes_out
)
test_a_lane_keeps_old_pods_out_while_held = (
    test_store_upgrade.test_a_lane_keeps_old_pods_out_while_held
)
test_the_old_schedule_is_adopted_into_both_lanes = (
    test_store_upgrade.test_the_old_schedule_is_adopted_into_both_lanes
)
test_the_unsharded_schedules_are_adopted_into_their_shards = (
    test_store_upgrade.test_the_unsharded_schedules_are_adopted_into_their_shards
)
test_the_reconcilers_progress_of_older_releases_is_read = (
    test_store_upgrade.test_the_reconcilers_progress_of_older_releases_is_read
)
test_entries_of_another_shard_count_move_to_their_shard = (
    test_store_upgrade.test_entries_of_another_shard_count_move_to_their_shard
)
test_a_stale_token_cannot_finish_or_write_after_a_new_holder = (
    test_delivery_lanes.test_a_stale_token_cannot_finish_or_write_after_a_new_holder
)
test_a_stale_token_cannot_renew_or_release_a_runtime_lease = (
    test_delivery_lanes.test_a_stale_token_cannot_renew_or_release_a_runtime_lease
)

# The relay: claims, delivery in order, failures, dead letters.
setup = test_relay.setup
test_relay_claims_only_inbox_only_conversations = (
    test_relay.test_claims_only_inbox_only_conversations
)
test_relay_delivers_in_order_pops_and_releases = test_relay.test_delivers_in_order_pops_and_releases
test_relay_partial_failure_keeps_the_rest_in_order = (
    test_relay.test_partial_failure_keeps_the_rest_in_order
)
test_relay_a_failed_call_fails_every_case_and_pops_nothing = (
    test_relay.test_a_failed_call_fails_every_case_and_pops_nothing
)
test_relay_success_after_retries_resets_the_counter = (
    test_relay.test_success_after_retries_resets_the_counter
)
test_relay_a_lost_lease_pops_nothing = test_relay.test_a_lost_lease_pops_nothing
test_relay_survives_a_flushed_script_cache = test_relay.test_survives_a_flushed_script_cache

# Both lanes through the worker, and one failure handling for relay and step.
world = test_delivery_lanes.world
idle_world = test_delivery_lanes.idle_world
test_agent_reply_is_sent_while_a_relay_batch_holds_the_inbox = (
    test_delivery_lanes.test_agent_reply_is_sent_while_a_relay_batch_holds_the_inbox
)
test_relay_and_lane_step_share_one_failure_handling = (
    test_delivery_lanes.test_relay_and_lane_step_share_one_failure_handling
)

# Retention: FAILED handovers, dead letters (expiry, cap, paging), the case index.
_close_stores = test_retention._close_stores
test_failed_handovers_expire_with_their_keys = (
    test_retention.test_failed_handovers_expire_with_their_keys
)
test_dead_letters_expire_and_are_capped = test_retention.test_dead_letters_expire_and_are_capped
test_concurrent_passes_count_each_removal_once = (
    test_retention.test_concurrent_passes_count_each_removal_once
)
test_listing_one_conversations_letters_is_paged_from_its_index = (
    test_retention.test_listing_one_conversations_letters_is_paged_from_its_index
)
test_a_closed_handovers_case_index_expires_with_it = (
    test_retention.test_a_closed_handovers_case_index_expires_with_it
)

# Erasure through the real gRPC server.
test_erase_one_conversation = test_erase.test_erase_one_conversation
test_erase_an_end_user_everywhere = test_erase.test_erase_an_end_user_everywhere
test_open_handovers_are_refused_and_nothing_is_erased = (
    test_erase.test_open_handovers_are_refused_and_nothing_is_erased
)

# The reconciler: one replica's pass, its progress fenced by its lease.
far = test_reconciler.far
make = test_reconciler.make
test_one_replica_runs_the_pass_and_a_stale_token_cannot_write = (
    test_reconciler.test_one_replica_runs_the_pass_and_a_stale_token_cannot_write
)
test_a_failed_listing_keeps_the_mark_so_the_next_pass_lists_the_window_again = (
    test_reconciler.test_a_failed_listing_keeps_the_mark_so_the_next_pass_lists_the_window_again
)


async def test_session_and_connector_users_need_nothing_more_on_a_cluster(
    redis_url: str, redis_client: RedisClient
) -> None:
    """The ACL users of services/runtime/redis_acl.py, set on every master, log in from a
    ``redis+cluster://user:password@…`` URL and are denied nothing (the cluster
    client's topology reads included)."""
    assert isinstance(redis_client, RedisCluster)
    await redis_client.initialize()  # finds the masters
    nodes = redis_client.get_primaries()
    assert len(nodes) == 3
    for component in REDIS_COMPONENTS:
        command = acl_setuser(component, "pw-" + component)
        await redis_client.execute_command(*command, target_nodes=nodes)
    await redis_client.execute_command("ACL", "LOG", "RESET", target_nodes=nodes)
    hosts = redis_url.split("://", 1)[1]
    session = create_redis(f"redis+cluster://ccbridge-session:pw-session@{hosts}")
    connector = create_redis(f"redis+cluster://ccbridge-connector:pw-connector@{hosts}")
    store = SessionStore(session)
    try:
        assert await store.create("acl-1", ["vip"], {})
        await store.ingest([test_relay._message("m1", "acl-1")])
        token, rec, inbox, _ = await store.begin_step(Lane.INBOX, "acl-1", 60_000)
        assert token and rec is not None and inbox == 1
        (head,) = await store.peek(store.k_in("acl-1"), 1)
        assert await store.dead_letter(Lane.INBOX, "acl-1", token, head, "test", 3)
        assert await store.due(Lane.INBOX, 10) == (["acl-1"], [])
        assert await store.park_unless_linked("webhook", "ACL-1", "m:r1", b"") == (None, 1)
        await store.hold_case("acl-1", "webhook", "ACL-1")
        await store.release_case("acl-1", "webhook", "ACL-1")
        assert await store.sweep_retention()
        await store.reconcile_progress()
        poll = ConnectorStore(connector).poll_lease("webhook", 5.0)
        assert await poll.acquire()
        await poll.release()
        denied = await redis_client.execute_command("ACL", "LOG", target_nodes=nodes)
        assert denied == {node.name: [] for node in nodes}
    finally:
        await store.raw.aclose()
        await session.aclose()
        await connector.aclose()


# Agent events of a case not linked yet: parked on the case's slot, moved to the
# conversation's on linking, expired through the global index (found by the fault matrix).
parking = test_parked.parking
test_linking_moves_parked_replies_in_order_before_later_ones = (
    test_parked.test_linking_moves_parked_replies_in_order_before_later_ones
)
test_a_parked_close_is_applied_on_linking = test_parked.test_a_parked_close_is_applied_on_linking
test_the_opening_holds_events_back_until_active = (
    test_parked.test_the_opening_holds_events_back_until_active
)
test_an_event_parked_behind_the_hold_after_activation_is_moved_at_once = (
    test_parked.test_an_event_parked_behind_the_hold_after_activation_is_moved_at_once
)
test_an_opening_without_parked_events_releases_its_hold = (
    test_parked.test_an_opening_without_parked_events_releases_its_hold
)
test_a_case_parks_a_bounded_number_of_events = (
    test_parked.test_a_case_parks_a_bounded_number_of_events
)
test_events_of_a_case_never_linked_expire_counted = (
    test_parked.test_events_of_a_case_never_linked_expire_counted
)
test_the_sweep_moves_what_a_stopped_opening_left_parked = (
    test_parked.test_the_sweep_moves_what_a_stopped_opening_left_parked
)


# A retry that finds its message a duplicate schedules it (found by the fault matrix).
test_a_retried_agent_message_is_scheduled = (
    test_retry_schedules.test_a_retried_agent_message_is_scheduled
)
test_a_retried_end_user_message_is_scheduled = (
    test_retry_schedules.test_a_retried_end_user_message_is_scheduled
)


async def test_waiting_for_replicas_is_refused_on_a_cluster(redis_client: RedisClient) -> None:
    """WAIT counts one server's replicas; a cluster would need it on every node."""
    with pytest.raises(ValueError, match="CCBRIDGE_REDIS_WAIT_REPLICAS"):
        SessionStore(redis_client, replica_wait=ReplicaWait(1, 100))
