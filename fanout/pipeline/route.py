"""route: an immutable routing table, ``RoutingTable.route(event) -> tuple[Subscription, ...]``.

Subscriptions are indexed by topic, then by pattern kind: exact type, ``prefix.*`` (keyed by
``"prefix."``) and ``*``. Within each bucket, subscriptions with an attribute filter are indexed by
their rarest (attribute, value) pair in that bucket (so ``tenant=t1`` rather than a ``region=eu``
every tenant shares), so one topic can serve thousands of tenants and a lookup costs
O(depth of the type + matches), not O(subscriptions). Tables are built off the hot path and
swapped whole; a table is never mutated after ``build``.

Subscriptions without an attribute filter whose ``filter_expr`` has a ``data.<path> == literal`` or
``data.<path> in [literals]`` conjunct are indexed by it (``DataIndex``): the payload is parsed once
and only the subscriptions filed under its value at that path are candidates.

A subscription's ``filter_expr`` (CEL, compiled when the table is built) runs last, only on the
candidates the index selected; an evaluation error is no match, counted in ``errors`` (a
``FilterErrors`` shared by the tables a dispatcher swaps in, when it passes one to ``build``). A filter
made only of equalities and numeric comparisons on ``data`` fields (``data.amount > 1000 &&
data.currency == "EUR"``) is decided from the payload without CEL when its values allow
(``fanout.model.expressions.equalities.decide``), with the same result; CEL evaluates it otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from fanout.model.event import Event
from fanout.model.expressions.equalities import decide
from fanout.model.subscription import Subscription
from fanout.pipeline.data_index import DataIndex, indexable
from fanout.pipeline.expressions import Bindings, EvaluationError, FilterErrors, passes

Filtered = tuple[Subscription, tuple[tuple[str, str], ...]]


@dataclass
class _Bucket:
    plain: list[Subscription] = field(default_factory=list)
    by_attribute: dict[str, dict[str, list[Filtered]]] = field(default_factory=dict)
    filtered: list[Subscription] = field(default_factory=list)
    by_data: DataIndex | None = None
    data_filtered: list[Subscription] = field(default_factory=list)

    def add(self, sub: Subscription) -> None:
        if sub.filter:
            self.filtered.append(sub)
        elif indexable(sub):
            self.data_filtered.append(sub)
        else:
            self.plain.append(sub)

    def seal(self) -> None:
        """Index each filtered subscription by its rarest (attribute, value) pair in this bucket
        (``by_attribute[name][value]``: no pair to build and hash per lookup), and those with only a
        ``filter_expr`` by one of its equalities."""
        if self.data_filtered:
            self.by_data = DataIndex(self.data_filtered)
            self.data_filtered = []
        counts = Counter(pair for sub in self.filtered for pair in sub.filter.items())
        for sub in self.filtered:
            items = sorted(sub.filter.items())
            first = min(items, key=counts.__getitem__)
            rest = tuple(pair for pair in items if pair != first)
            self.by_attribute.setdefault(first[0], {}).setdefault(first[1], []).append((sub, rest))
        self.filtered.clear()

    def collect(
        self, event: Event, attributes: dict[str, str], out: list[Subscription], accepted: list[Subscription]
    ) -> None:
        out.extend(self.plain)
        if self.by_data is not None:
            self.by_data.collect(event, out, accepted)
        for name, by_value in self.by_attribute.items():
            value = attributes.get(name)
            if value is None:
                continue
            for sub, rest in by_value.get(value, ()):
                if not rest or all(attributes.get(k) == v for k, v in rest):
                    out.append(sub)


@dataclass
class _TopicIndex:
    exact: dict[str, _Bucket] = field(default_factory=dict)
    prefixes: dict[str, _Bucket] = field(default_factory=dict)
    wildcard: _Bucket | None = None
    max_prefix_dots: int = 0

    def add(self, pattern: str, sub: Subscription) -> None:
        if pattern == "*":
            if self.wildcard is None:
                self.wildcard = _Bucket()
            self.wildcard.add(sub)
        elif pattern.endswith(".*"):
            prefix = pattern[:-1]
            self.prefixes.setdefault(prefix, _Bucket()).add(sub)
            self.max_prefix_dots = max(self.max_prefix_dots, prefix.count("."))
        else:
            self.exact.setdefault(pattern, _Bucket()).add(sub)

    def seal(self) -> None:
        for bucket in (*self.exact.values(), *self.prefixes.values(), self.wildcard):
            if bucket is not None:
                bucket.seal()


class RoutingTable:
    """An immutable snapshot of the subscriptions, indexed for routing."""

    __slots__ = ("_filtered", "_index", "errors", "subscriptions", "topics")

    def __init__(
        self,
        subscriptions: dict[str, Subscription],
        index: dict[str, _TopicIndex],
        errors: FilterErrors | None = None,
    ) -> None:
        self.subscriptions = subscriptions
        self._index = index
        self.topics = frozenset(index)
        self.errors = errors if errors is not None else FilterErrors()
        self._filtered = any(s.filter_expr is not None for s in subscriptions.values())

    @classmethod
    def build(cls, subscriptions: Iterable[Subscription], errors: FilterErrors | None = None) -> RoutingTable:
        """Index ``subscriptions`` (compiling their expressions: ``Subscription.warm``)."""
        by_id = {s.id: s for s in subscriptions}
        index: dict[str, _TopicIndex] = {}
        for sub in by_id.values():
            sub.warm()
            for topic in sub.topics:
                topic_index = index.setdefault(topic, _TopicIndex())
                for pattern in dict.fromkeys(sub.events):
                    topic_index.add(pattern, sub)
        for topic_index in index.values():
            topic_index.seal()
        return cls(by_id, index, errors)

    def __len__(self) -> int:
        return len(self.subscriptions)

    def get(self, sub_id: str) -> Subscription | None:
        return self.subscriptions.get(sub_id)

    def route(self, event: Event) -> tuple[Subscription, ...]:
        """Every subscription (enabled or not) whose topic, event pattern and filter match ``event``."""
        topic_index = self._index.get(event.topic)
        if topic_index is None:
            return ()
        found: list[Subscription] = []
        accepted: list[Subscription] = []
        attributes = event.attributes
        event_type = event.type
        bucket = topic_index.exact.get(event_type)
        if bucket is not None:
            bucket.collect(event, attributes, found, accepted)
        if topic_index.prefixes:
            start = 0
            for _ in range(topic_index.max_prefix_dots + 1):
                dot = event_type.find(".", start)
                if dot < 0:
                    break
                bucket = topic_index.prefixes.get(event_type[: dot + 1])
                if bucket is not None:
                    bucket.collect(event, attributes, found, accepted)
                start = dot + 1
        if topic_index.wildcard is not None:
            topic_index.wildcard.collect(event, attributes, found, accepted)
        if len(found) > 1:
            found = list({s.id: s for s in found}.values())
        chosen = self._evaluated(event, found) if self._filtered and found else tuple(found)
        if accepted:
            return tuple({s.id: s for s in (*chosen, *accepted)}.values())
        return chosen

    def _evaluated(self, event: Event, candidates: list[Subscription]) -> tuple[Subscription, ...]:
        """The candidates whose ``filter_expr`` accepts ``event`` (those without one pass)."""
        bindings: Bindings | None = None
        chosen = []
        for sub in candidates:
            program = sub.filter_program
            if program is None:
                chosen.append(sub)
                continue
            if program.conjuncts is not None:
                verdict = decide(program.conjuncts, event.parsed_data())
                if verdict is not None:
                    if verdict:
                        chosen.append(sub)
                    continue
            if bindings is None:
                bindings = Bindings(event)
            try:
                if passes(program, bindings):
                    chosen.append(sub)
            except EvaluationError as exc:
                self.errors.record(sub.id, str(exc))
        return tuple(chosen)
