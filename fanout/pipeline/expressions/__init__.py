"""CEL expressions on subscriptions: ``filter_expr`` (which events) and ``transform`` (which body).

- ``compile`` (``fanout.model.expressions.compile``): once per distinct expression (cached), when a
  subscription is validated or a routing table is built; ``CompileError`` names the line and column.
- ``limits`` (``fanout.model.expressions.limits``): the static checks that bound an evaluation's cost.
- ``evaluate``: one event's ``Bindings``, filter evaluation, ``FilterErrors`` (counted per
  subscription, logged at most once a minute each).
- ``transform``: the transform's value as a JSON body, capped in size; ``TransformFailed``.

The library is cel-expr-python (the CEL project's wrapper of cel-cpp); ``scripts/bench_cel.py``
measures it against the alternatives.
"""

from fanout.model.expressions.compile import (
    MAX_EXPRESSION_LENGTH,
    CompileError,
    Kind,
    Program,
    compile_expression,
)
from fanout.pipeline.expressions.evaluate import Bindings, EvaluationError, FilterErrors, passes
from fanout.pipeline.expressions.transform import DEFAULT_MAX_BYTES, TransformFailed, render

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_EXPRESSION_LENGTH",
    "Bindings",
    "CompileError",
    "EvaluationError",
    "FilterErrors",
    "Kind",
    "Program",
    "TransformFailed",
    "compile_expression",
    "passes",
    "render",
]
