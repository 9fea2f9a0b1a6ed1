"""Everything telemetry a dispatcher process needs, in one object the composition root wires in:
tracing (if configured), metrics, the instrumented sender and the probe/metrics server. What the
dispatcher holds and has done is read through the ``StatsSource`` port (``fanout.model.ports``)."""

from __future__ import annotations

from fanout.config import Settings
from fanout.model.ports import StatsSource
from fanout.pipeline.dispatch import Dispatcher
from fanout.pipeline.lanes import Send
from fanout.pipeline.settle import Settler
from fanout.telemetry.attempts import instrument_send
from fanout.telemetry.dispatcher_metrics import DispatcherMetrics
from fanout.telemetry.metrics import Metrics
from fanout.telemetry.probes import ProbeServer
from fanout.telemetry.spans import DispatcherTracer
from fanout.telemetry.tracing import Tracing, setup_tracing

SERVICE_NAME = "fanout-dispatcher"


class DispatcherTelemetry:
    """``tracing`` and ``metrics`` may be given (tests); otherwise they come from the settings and the
    OTEL_* environment, and are shut down (flushed) by ``stop``."""

    def __init__(
        self,
        source: StatsSource,
        settings: Settings,
        worker: int | None = None,
        tracing: Tracing | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        attributes = {"fanout.worker": str(worker)} if worker is not None else {}
        self._owned = (tracing is None, metrics is None)
        self.tracing = tracing or setup_tracing(
            settings.telemetry.trace_sample_ratio, SERVICE_NAME, attributes=attributes
        )
        self.metrics = metrics or Metrics(SERVICE_NAME, attributes=attributes)
        self.dispatcher_metrics = DispatcherMetrics(
            self.metrics, source, settings.telemetry.max_subscription_labels
        )
        port = settings.dispatcher.http_port
        self.server: ProbeServer | None = None
        if port:
            self.server = ProbeServer(
                source,
                self.metrics,
                settings.dispatcher.http_host,
                port + (worker or 0),
                settings.dispatcher.stall_timeout,
            )

    async def start(self) -> None:
        if self.server is not None:
            await self.server.start()

    def send(self, send: Send) -> Send:
        return instrument_send(send, self.dispatcher_metrics.attempts, self.tracing.tracer)

    def attach(self, dispatcher: Dispatcher, group_id: str) -> Dispatcher:
        if self.tracing.tracer is not None:
            dispatcher.tracer = DispatcherTracer(self.tracing.tracer, group_id)
        if dispatcher.retry_topics:
            dispatcher.on_retry_lag = self.dispatcher_metrics.on_retry_lag
        dispatcher.dropped_attributes = self.dispatcher_metrics.dropped_attributes
        dispatcher.filter_errors = self.dispatcher_metrics.filter_errors
        return dispatcher

    def attach_settler(self, settler: Settler, group_id: str) -> Settler:
        if self.tracing.tracer is not None:
            settler.tracer = DispatcherTracer(self.tracing.tracer, group_id)
        return settler

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        owns_tracing, owns_metrics = self._owned
        if owns_tracing:
            self.tracing.shutdown()
        if owns_metrics:
            self.metrics.shutdown()
