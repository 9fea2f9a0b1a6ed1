"""The runtime's side of the stats port (``fanout.model.ports.StatsSource``): a ``DispatcherStats``
snapshot read from the settle counts, the routing table and the group members' lanes and consumers.

Telemetry may take it from another thread (an OTLP export): every container is copied with one C-level
call (``dict(...)``, ``list(...)``) before it is walked, so the event loop changing it meanwhile cannot
break the walk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fanout.model.ports import DispatcherStats, LaneState, MemberState
from fanout.pipeline.counts import SettleCounts
from fanout.pipeline.lanes import Lane
from fanout.pipeline.ordered import KeyedLane
from fanout.pipeline.route import RoutingTable
from fanout.runtime.member import GroupMember


def snapshot(
    started: bool,
    counts: SettleCounts,
    table: RoutingTable,
    shared: GroupMember | None,
    ordered: Iterable[GroupMember],
    lanes: bool = True,
) -> DispatcherStats:
    ordered = list(ordered)
    members = ([shared] if shared is not None else []) + ordered
    return DispatcherStats(
        started=started,
        outcomes=dict(counts.outcomes),
        dead_letters=dict(counts.dead_letters),
        lanes=tuple(_lanes(members)) if lanes else (),
        shared=_member(shared) if shared is not None else None,
        ordered=tuple(_member(m) for m in ordered),
        subscriptions=len(table),
        disabled=tuple(s.id for s in list(table.subscriptions.values()) if not s.enabled),
    )


def _lanes(members: Iterable[GroupMember]) -> Iterator[LaneState]:
    for member in members:
        for sub_id, lane in list(member.dispatcher.lanes.by_id.items()):
            if isinstance(lane, Lane):
                yield LaneState(sub_id, len(lane.queue), lane.in_flight, lane.rate_waits, lane.breaker.state)
            elif isinstance(lane, KeyedLane):
                queued = sum(len(q) for q in list(lane.keys.values()))
                yield LaneState(sub_id, queued, lane.in_flight, lane.rate_waits, None)


def _member(member: GroupMember) -> MemberState:
    consumer = member.consumer
    stats = consumer.stats
    return MemberState(
        group=member.group_id,
        joined=consumer.joined.is_set(),
        assigned=consumer.assigned,
        last_cycle=consumer.last_cycle,
        statistics_at=stats.at,
        brokers_up=stats.brokers_up,
        lag=dict(stats.lag),
        retry_topics=member.dispatcher.retry_topics,
    )
