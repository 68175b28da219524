"""The v2 GRPCInferenceService: protobuf <-> transport-free types, nothing else.

Errors are raised as typed ``RequestError``s; ``interceptors.py`` maps them to status.
"""

from __future__ import annotations

from rtvi import __version__
from rtvi.protocol import tensors
from rtvi.protocol._generated import grpc_service_pb2 as pb
from rtvi.protocol._generated import grpc_service_pb2_grpc as pb_grpc
from rtvi.protocol.types import InferRequest, InferResponse, RequestedOutput, Tensor, TensorSpec
from rtvi.serving.dataplane import DataPlane
from rtvi.serving.errors import InvalidInput
from rtvi.serving.repository import ServedModel
from rtvi.serving.tasks.classification import CLASSIFICATION_PARAMETER

EXTENSIONS = ["classification", "model_configuration"]
# Triton's ModelConfig data types for the datatypes our tensors use.
_CONFIG_TYPES = {"BYTES": pb.TYPE_STRING, "FP32": pb.TYPE_FP32}
_INSTANCE_KIND = {"cpu": pb.ModelInstanceGroup.KIND_CPU, "cuda": pb.ModelInstanceGroup.KIND_GPU}


def to_request(message: pb.ModelInferRequest) -> InferRequest:
    inputs = []
    for i, tensor in enumerate(message.inputs):
        raw = message.raw_input_contents[i] if i < len(message.raw_input_contents) else None
        try:
            data = tensors.input_values(tensor, raw)
        except tensors.TensorError as exc:
            raise InvalidInput(str(exc)) from None
        inputs.append(Tensor(tensor.name, tensor.datatype, tuple(tensor.shape), data))
    outputs = [
        RequestedOutput(
            output.name,
            output.parameters[CLASSIFICATION_PARAMETER].int64_param if CLASSIFICATION_PARAMETER in output.parameters else 0,
        )
        for output in message.outputs
    ]
    return InferRequest(message.model_name, inputs, outputs, message.model_version, message.id, message.ByteSize())


def to_message(response: InferResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version, id=response.id)
    for output in response.outputs:
        message.outputs.add(name=output.name, datatype=output.datatype, shape=list(output.shape))
        if output.datatype == "BYTES":
            message.raw_output_contents.append(tensors.encode_bytes(output.data))
        else:
            message.raw_output_contents.append(tensors.raw_contents(output.data, output.datatype))
    return message


def _metadata_tensor(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))


def _config(model: ServedModel) -> pb.ModelConfig:
    assert model.task is not None and model.engine is not None and model.plan is not None
    inputs = [
        pb.ModelInput(name=spec.name, data_type=_CONFIG_TYPES[spec.datatype], dims=list(spec.shape[1:]) or [1],
                      optional=True, format=pb.ModelInput.FORMAT_NCHW if len(spec.shape) == 4 else pb.ModelInput.FORMAT_NONE)
        for spec in model.task.inputs
    ]
    outputs = [pb.ModelOutput(name=spec.name, data_type=_CONFIG_TYPES[spec.datatype], dims=list(spec.shape[1:]))
               for spec in model.task.outputs]
    return pb.ModelConfig(
        name=model.name, platform=model.engine.platform, backend=model.plan.engine,
        max_batch_size=model.max_batch_size, input=inputs, output=outputs,
        instance_group=[pb.ModelInstanceGroup(name=model.name, count=model.plan.instances,
                                              kind=_INSTANCE_KIND[model.plan.device])],
        parameters={key: pb.ModelParameter(string_value=value) for key, value in model.parameters.items()},
    )


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.dataplane.repository.get(request.name, request.version).ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="rtvi", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        model = self.dataplane.ready_model(request.name, request.version)
        assert model.task is not None and model.engine is not None
        return pb.ModelMetadataResponse(
            name=model.name, versions=["1"], platform=model.engine.platform,
            inputs=[_metadata_tensor(spec) for spec in model.task.inputs],
            outputs=[_metadata_tensor(spec) for spec in model.task.outputs],
        )

    async def ModelConfig(self, request, context):
        return pb.ModelConfigResponse(config=_config(self.dataplane.ready_model(request.name, request.version)))

    async def ModelInfer(self, request, context):
        return to_message(await self.dataplane.infer(to_request(request)))
