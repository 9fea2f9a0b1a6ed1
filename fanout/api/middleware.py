"""The API's one middleware: every request, in this order, in one coroutine.

1. **Read deadline** (``fanout.api.connections``): the request's head is in; the rest of its read
   deadline goes to the body read, and a 408 closes the connection.
2. **Count** ``fanout_api_requests_total{operation,status}`` by OpenAPI operation and final status (in a
   plain dict read by the metrics reader when it collects; an SDK counter's ``add`` cost more than the
   rest of the request's middleware work).
3. **Problems** (``fanout.api.problems.error_response``): whatever the steps below or the handler raise
   is answered as problem+json.
4. **Authenticate** (``fanout.api.auth``): a credential with the operation's ``x-scope``, unless the
   document marks the operation public; the caller is ``request[PRINCIPAL]``.
5. **Validate** (``fanout.api.validation``): parameters and body against the OpenAPI document, into
   ``request[PARAMS]`` and ``request[BODY]``.

Routes the document does not describe (``/console/``, ``/metrics``) get steps 1-3 only. One coroutine
instead of five nested middlewares: each layer cost a call, a coroutine and a resumption per request.
"""

from __future__ import annotations

from collections import Counter

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from fanout.api.auth import AUTHENTICATOR, PRINCIPAL
from fanout.api.connections import READ_DEADLINE, GuardedHandler
from fanout.api.problems import Problem, error_response
from fanout.api.validation import BODY, PARAMS, operation_of


def api_middleware(meter: Meter) -> Middleware:
    counts: Counter[tuple[str, int]] = Counter()

    def observe(_options: CallbackOptions) -> list[Observation]:
        return [
            Observation(n, {"operation": name, "status": str(status)})
            for (name, status), n in list(counts.items())
        ]

    meter.create_observable_counter(
        "fanout.api.requests", callbacks=[observe], description="HTTP requests served by the API"
    )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = request.protocol
        guarded = protocol if isinstance(protocol, GuardedHandler) else None
        if guarded is not None:
            request[READ_DEADLINE] = guarded.request_started()
        op = operation_of(request)
        status = 500
        try:
            try:
                if op is not None:
                    if not op.public:
                        authenticator = request.app[AUTHENTICATOR]
                        credential = authenticator.credential(request)
                        principal = authenticator.api_key(credential) or await authenticator.token(credential)
                        if op.scope is not None and op.scope not in principal.scopes:
                            raise Problem(403, f"this needs the scope {op.scope}")
                        request[PRINCIPAL] = principal
                    request[PARAMS] = op.read_params(request)
                    request[BODY] = await op.read_body(request)
                response = await handler(request)
            except web.HTTPException as exc:
                status = exc.status
                response = error_response(request, exc)  # raises again below 400
            except Exception as exc:
                response = error_response(request, exc)
            status = response.status
        finally:
            counts[op.name if op is not None else "unknown", status] += 1
            if guarded is not None:
                guarded.request_finished()
        if status == 408:
            response.force_close()
        return response

    return middleware
