"""Observability: structured logs (``logs``), OpenTelemetry traces (``tracing``, ``spans``), metrics exposed
in Prometheus format and over OTLP (``metrics``, ``dispatcher_metrics``), and the dispatcher's probe and
metrics HTTP server (``probes``).

The data path stays cheap: counters are plain integers read by observable instruments at collection
time, histograms use pre-built attribute sets, and with tracing off no span code runs at all (the
decision is made once, at start, not per call).
"""
