"""An asyncio Open Inference Protocol v2 client for image classification.

Used by the consumer and the benchmarks. ``dns:///host:port`` addresses balance
round-robin over every address the name resolves to (a headless Service's pods), and
follow that set as pods come and go (``protocol.balancing``). With ``tls`` the calls use
TLS (mutual TLS with a client certificate; ``protocol.tls``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc

from rtvi.protocol import tensors
from rtvi.protocol.balancing import FollowingChannel
from rtvi.protocol.errors import InferenceError
from rtvi.protocol.handshake import raise_if_misconfigured
from rtvi.protocol.tls import ClientTls, channel as open_channel
from rtvi.protocol.types import Classification, parse_classification
from rtvi.protocol._generated import grpc_service_pb2 as pb
from rtvi.protocol._generated import grpc_service_pb2_grpc as pb_grpc


def channel_options(max_message_bytes: int) -> list[tuple[str, object]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Re-resolve quickly when pods come and go behind a headless Service.
        ("grpc.dns_min_time_between_resolutions_ms", 5_000),
    ]


class InferenceClient:
    def __init__(self, url: str, model: str, max_message_bytes: int = 64 * 1024 * 1024,
                 tls: ClientTls | None = None) -> None:
        self.url = url
        self.model = model
        self._tls = tls
        self._channels = FollowingChannel(url, lambda: open_channel(url, channel_options(max_message_bytes), tls))
        self._stubs: tuple[grpc.aio.Channel, pb_grpc.GRPCInferenceServiceStub] | None = None

    @property
    def _stub(self) -> pb_grpc.GRPCInferenceServiceStub:
        """The stub on the channel to use now (a new one after the channel was replaced)."""
        channel = self._channels.channel()
        if self._stubs is None or self._stubs[0] is not channel:
            self._stubs = (channel, pb_grpc.GRPCInferenceServiceStub(channel))
        return self._stubs[1]

    async def close(self) -> None:
        await self._channels.close()

    async def ready(self, timeout: float = 5.0) -> bool:
        """Whether the model is ready; InferenceTlsError (exit 2) when the server is
        unavailable because TLS is misconfigured on either side, which no retry can mend."""
        try:
            response = await self._stub.ModelReady(pb.ModelReadyRequest(name=self.model), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                await raise_if_misconfigured(self.url, self._tls)
            return False
        return response.ready

    async def classify(
        self, images: Sequence[bytes], top_k: int = 5, timeout: float = 30.0, request_id: str = ""
    ) -> list[list[Classification]]:
        """Top-k classes for each encoded image, best first; raises InferenceError."""
        request = pb.ModelInferRequest(model_name=self.model, id=request_id)
        request.inputs.add(name="images", datatype="BYTES", shape=[len(images)])
        request.raw_input_contents.append(tensors.encode_bytes(images))
        output = request.outputs.add(name="logits")
        output.parameters["classification"].int64_param = top_k
        try:
            response = await self._stub.ModelInfer(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise InferenceError(exc.code().name, exc.details() or "") from None
        entries = tensors.decode_bytes(response.raw_output_contents[0])
        k = int(response.outputs[0].shape[1])
        return [[parse_classification(e) for e in entries[i : i + k]] for i in range(0, len(entries), k)]
