"""What the consumer thread does with what it fetched, and which partitions fetch.

Each fetched record is handed over, held by the retry gate (``RetryGate``: not due yet, or behind one
that is not), or rewound: its partition is paused and sought back to it, so that it is fetched again
later and never lost (past the gate's budget, on a paused partition, or beyond the uncommitted window).
Before each fetch, a partition is paused while its window is backpressured, while the gate is over its
budget and the partition holds records, or during a long hold (every partition), and resumed otherwise
(``PauseBook`` makes the calls). ``poll`` blocks until the next held record comes due at most.
"""

from __future__ import annotations

import time
from typing import cast

from confluent_kafka import Consumer, Message, TopicPartition

from fanout.kafka.assignment import Assignment
from fanout.kafka.consumer_config import consumer_error
from fanout.kafka.pauses import Holding, PauseBook
from fanout.kafka.retry_gate import RetryGate
from fanout.model.event import Headers
from fanout.model.headers import for_group, not_before_ms

TP = tuple[str, int]
POLL_SECONDS = 0.1
HELD_POLL_SECONDS = 0.01


class Intake:
    def __init__(
        self,
        assignment: Assignment,
        gate: RetryGate[Message],
        pauses: PauseBook,
        retry_topics: frozenset[str],
        group_id: str,
    ) -> None:
        self._assignment = assignment
        self._gate = gate
        self._pauses = pauses
        self._retry_topics = retry_topics
        self._group_id = group_id

    def release(self, now_ms: float) -> list[Message]:
        """Held retry records due at ``now_ms``, in order, as far as their windows admit them."""
        return self._gate.release(now_ms, self._admit) if self._gate.holding else []

    def take(self, consumer: Consumer, messages: list[Message], now_ms: float, out: list[Message]) -> None:
        """Sort a fetched batch: into ``out`` (handed over), the retry gate, or rewound (fetched again)."""
        parts = self._assignment.parts
        gate = self._gate
        gated = gate.holding
        pauses = self._pauses
        retry_topics = self._retry_topics
        rewound: set[TP] = set()
        for msg in messages:
            error = msg.error()
            if error is not None:
                consumer_error(error)
                continue
            tp = (msg.topic() or "", msg.partition() or 0)
            owned = parts.get(tp)
            if owned is None or tp in rewound:
                continue  # not ours any more / behind a rewind already made in this batch
            offset = msg.offset() or 0
            if gated and gate.holds(tp):  # behind a retry record that is not due: keep the order
                if gate.over_budget() or not gate.queue_behind(tp, offset, self._due_ms(msg), msg):
                    self._rewind(consumer, tp, offset, rewound)  # fetched again later
                continue
            if pauses.is_paused(tp):
                self._rewind(consumer, tp, offset, rewound)
                continue
            if tp[0] in retry_topics:
                due = self._due_ms(msg)
                if due is not None and due > now_ms:
                    # Held here until due. The partition keeps fetching (a tier's records come due in
                    # order, so the next ones queue behind this one) while the consumer holds fewer
                    # than HELD_BACK_BUDGET records, then pauses: pausing at every record not due made
                    # librdkafka fetch a tier one record at a time.
                    gate.gate(tp, offset, due, msg)
                    gated = True
                    continue
            if not owned.window.admit(offset):
                self._rewind(consumer, tp, offset, rewound)
                continue
            out.append(msg)

    def _admit(self, tp: TP, offset: int) -> bool:
        return self._assignment.parts[tp].window.admit(offset)

    def _due_ms(self, msg: Message) -> int | None:
        """When a retry record may be handed over (epoch ms; None: now). Another group's record is
        handed over at once, never held: the dispatcher skips it."""
        headers = cast(Headers, msg.headers())
        return not_before_ms(headers) if for_group(headers, self._group_id) else None

    def _rewind(self, consumer: Consumer, tp: TP, offset: int, rewound: set[TP]) -> None:
        """Hand nothing from ``offset`` on: pause the partition and seek back to it, so that every record
        not handed over is fetched again when it resumes (a skipped record is never lost)."""
        partition = TopicPartition(tp[0], tp[1], offset)
        if self._pauses.pause(tp):
            consumer.pause([partition])
        consumer.seek(partition)
        rewound.add(tp)

    def poll_timeout(self, holding: Holding) -> float:
        if holding is not Holding.NO:
            return HELD_POLL_SECONDS
        due = self._gate.next_due_ms()
        if due is None:
            return POLL_SECONDS
        return max(0.0, min(POLL_SECONDS, due / 1000 - time.time()))

    def update_pauses(self, consumer: Consumer, pause_all: bool) -> None:
        gate = self._gate
        over_budget = gate.over_budget()
        wanted: dict[TP, bool] = {}
        for tp, owned in self._assignment.parts.items():
            pressed = owned.window.pressed()
            wanted[tp] = pause_all or pressed or (over_budget and gate.holds(tp))
        to_pause, to_resume = self._pauses.changes(wanted)
        if to_pause:
            consumer.pause([TopicPartition(t, p) for t, p in to_pause])
        if to_resume:
            consumer.resume([TopicPartition(t, p) for t, p in to_resume])
