"""The composition root of ``fanout run``: the dispatcher app, its group members, the worker supervisor
and garbage-collector tuning."""
