"""The one place where errors become gRPC status codes, and where requests are counted.

Every unary RPC of the inference service passes through ``ServingInterceptor``: a
``RequestError`` becomes its status and a ``rtvi_inference_errors_total`` reason;
anything else becomes INTERNAL (the server keeps serving). ModelInfer is also counted
by status, timed and tracked in flight, per model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from rtvi.serving import metrics
from rtvi.serving.errors import RequestError

log = logging.getLogger("rtvi.serve")

SERVICE_PREFIX = "/inference.GRPCInferenceService/"
INFER_METHOD = SERVICE_PREFIX + "ModelInfer"


def _model_of(request) -> str:
    return getattr(request, "model_name", "") or getattr(request, "name", "")


class ServingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metric_label: Callable[[str], str]) -> None:
        """``metric_label`` maps a requested model name to a bounded label."""
        self._label = metric_label

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(SERVICE_PREFIX) or handler.unary_unary is None:
            return handler
        behavior = self._wrap_infer(handler.unary_unary) if method == INFER_METHOD else self._wrap(handler.unary_unary)
        return grpc.unary_unary_rpc_method_handler(
            behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

    async def _abort(self, context, model: str, code: str, reason: str, message: str) -> None:
        metrics.ERRORS.labels(model, reason).inc()
        await context.abort(grpc.StatusCode[code], message)

    def _wrap(self, behavior):
        async def handle(request, context):
            try:
                return await behavior(request, context)
            except RequestError as exc:
                await self._abort(context, self._label(_model_of(request)), exc.code, exc.reason, exc.message)

        return handle

    def _wrap_infer(self, behavior):
        async def handle(request, context):
            model = self._label(_model_of(request))
            started = time.perf_counter()
            metrics.IN_FLIGHT.labels(model).inc()
            try:
                response = await behavior(request, context)
            except RequestError as exc:
                metrics.REQUESTS.labels(model, exc.code).inc()
                await self._abort(context, model, exc.code, exc.reason, exc.message)
            except asyncio.CancelledError:
                metrics.REQUESTS.labels(model, "CANCELLED").inc()
                raise
            except Exception as exc:  # a model failure must not take the server down
                log.exception("model %s: inference failed", model)
                metrics.REQUESTS.labels(model, "INTERNAL").inc()
                await self._abort(context, model, "INTERNAL", "internal", f"inference failed: {exc}")
            finally:
                metrics.IN_FLIGHT.labels(model).dec()
            metrics.REQUESTS.labels(model, "OK").inc()
            metrics.REQUEST_SECONDS.labels(model).observe(time.perf_counter() - started)
            return response

        return handle
