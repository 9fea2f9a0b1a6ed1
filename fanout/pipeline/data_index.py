"""DataIndex: subscriptions keyed by one ``data.<path> == literal`` (or ``in [literals]``) conjunct of
their ``filter_expr``, so that routing an event to 1,000 filtered subscriptions evaluates CEL only on
the few whose conjunct the event's payload satisfies (O(matches), not O(subscriptions)).

Each subscription is filed under one of its filter's ``Equality`` conjuncts (``fanout.model.expressions
.equalities``): the one whose values the fewest other subscriptions in the bucket share. ``collect``
reads the event's value at each indexed path once: when ``value_key`` keys it, only the subscriptions
filed under that key are candidates (the others' filters are false for this event); when the value is
missing or the index cannot decide for it (a list, a map, a number beyond 2^53, a payload that is not
a JSON object), every subscription filed under that path is a candidate. The router then evaluates the
full filter on the candidates, so what matches is exactly what evaluating every filter would select;
the only difference is that a filter the index ruled out is not evaluated, so it cannot count an error.
A filter that is the equality alone (``data.customer == "c1"``) is not evaluated either when the key
matches: it is true then (``Program.sole``).
"""

from __future__ import annotations

from collections import Counter

from fanout.model.event import Event
from fanout.model.expressions.equalities import MISSING, Equality, Key, value_at, value_key
from fanout.model.subscription import Subscription

Path = tuple[str, ...]
_Filed = tuple[list[Subscription], list[Subscription]]  # (to evaluate, accepted: the filter is the key)


def indexable(sub: Subscription) -> bool:
    """Whether ``sub``'s filter has a conjunct the index can file it under."""
    program = sub.filter_program
    return program is not None and bool(program.equalities)


class DataIndex:
    """Subscriptions filed by path and value key; built once, never mutated after."""

    __slots__ = ("_paths",)

    def __init__(self, subs: list[Subscription]) -> None:
        """Index ``subs`` (each ``indexable``)."""
        chosen: list[tuple[Subscription, Equality]] = []
        counts: Counter[tuple[Path, Key]] = Counter()
        for sub in subs:
            program = sub.filter_program
            assert program is not None
            counts.update((e.path, k) for e in program.equalities for k in e.keys)
        for sub in subs:
            program = sub.filter_program
            assert program is not None
            best = min(program.equalities, key=lambda e: sum(counts[(e.path, k)] for k in e.keys))
            chosen.append((sub, best))
        self._paths: dict[Path, tuple[dict[Key, _Filed], list[Subscription]]] = {}
        for sub, equality in chosen:
            table, everyone = self._paths.setdefault(equality.path, ({}, []))
            everyone.append(sub)
            sole = sub.filter_program is not None and sub.filter_program.sole
            for key in equality.keys:
                filed = table.setdefault(key, ([], []))
                filed[1 if sole else 0].append(sub)

    def __bool__(self) -> bool:
        return bool(self._paths)

    def collect(self, event: Event, out: list[Subscription], accepted: list[Subscription]) -> None:
        """Append to ``out`` the subscriptions whose indexed conjunct ``event`` may satisfy, and to
        ``accepted`` those it satisfies whose filter is that conjunct alone (matches, not evaluated)."""
        data = event.parsed_data()
        for path, (table, everyone) in self._paths.items():
            value = value_at(data, path)
            key = None if value is MISSING else value_key(value)
            if key is None:
                out.extend(everyone)
                continue
            filed = table.get(key)
            if filed is not None:
                out.extend(filed[0])
                accepted.extend(filed[1])
