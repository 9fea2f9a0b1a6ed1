"""CEL expressions as a subscription holds them: compiled and checked against the static limits when
the subscription is validated (``compile``, ``limits``). Evaluating them (filters) and rendering
transforms are the pipeline's (``fanout.pipeline.expressions``); the model only needs to know that an
expression is usable, so it imports nothing of fanout's other layers."""
