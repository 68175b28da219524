"""Fuzzing, bounded in time: hostile bytes get a clear error, never a crash or a hang.

- the v2 tensor decoding (``rtvi.protocol.tensors``): every input either decodes or
  raises TensorError, which the server turns into INVALID_ARGUMENT;
- the frame header parsing (``rtvi.streaming.frames``): any record, whatever its headers
  and key, gets an identity and a JSON prediction record (a poison record must not stop
  the consumer);
- a live server: random ModelInferRequests against a real `rtvi serve`, each answered
  with a status other than INTERNAL/UNKNOWN, and the server stays SERVING.

Each property runs a fixed number of examples with a per-example deadline (5 s: a hang
fails, a loaded machine's pause does not), so the whole
module takes seconds, not minutes (FUZZ_EXAMPLES raises the count for a longer run).
"""

from __future__ import annotations

import json
import os
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FAST = settings(max_examples=EXAMPLES, deadline=5000, suppress_health_check=[HealthCheck.too_slow], database=None)

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES", "BF16", "STRING", ""]
dims = st.one_of(st.integers(-3, 6), st.integers(-(2**63), 2**63 - 1))
shapes = st.lists(dims, max_size=5)


def bytes_elements(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


raw_contents = st.one_of(
    st.none(),
    st.binary(max_size=256),
    st.lists(st.binary(max_size=16), max_size=6).map(bytes_elements),  # well-formed BYTES
)
contents = st.builds(
    SimpleNamespace,
    bool_contents=st.lists(st.booleans(), max_size=6),
    int_contents=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6),
    int64_contents=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6),
    uint_contents=st.lists(st.integers(0, 2**32 - 1), max_size=6),
    uint64_contents=st.lists(st.integers(0, 2**64 - 1), max_size=6),
    fp32_contents=st.lists(st.floats(width=32), max_size=6),
    fp64_contents=st.lists(st.floats(), max_size=6),
    bytes_contents=st.lists(st.binary(max_size=16), max_size=6),
)
# Duck-typed like InferInputTensor (the protobuf stubs stay out of this process, which
# holds tritonclient's), with the value ranges protobuf's field types allow.
tensors_in = st.builds(SimpleNamespace, name=st.sampled_from(["images", "pixels", "x"]),
                       datatype=st.sampled_from(DATATYPES), shape=shapes, contents=contents)


@FAST
@given(tensor=tensors_in, raw=raw_contents)
def test_tensor_decoding_decodes_or_says_why(tensor, raw):
    from rtvi.protocol.tensors import TensorError, input_values

    try:
        values = input_values(tensor, raw)
    except TensorError as exc:
        assert str(exc)
        return
    count = int(np.prod(tensor.shape)) if tensor.shape else 1
    assert len(values) == count if isinstance(values, list) else values.size == count


@FAST
@given(raw=st.binary(max_size=512))
def test_bytes_decoding_decodes_or_says_why(raw):
    from rtvi.protocol.tensors import TensorError, decode_bytes, encode_bytes

    try:
        items = decode_bytes(raw)
    except TensorError as exc:
        assert "BYTES" in str(exc)
        return
    assert encode_bytes(items) == raw


header_names = st.sampled_from(["rtvi-stream", "rtvi-frame", "rtvi-capture-ns", "content-type", "rtvi-width",
                                "rtvi-height", "other"])
header_values = st.one_of(
    st.none(), st.binary(max_size=40),
    st.integers().map(lambda n: str(n).encode()),
    st.integers(0, 4000).map(lambda n: b"9" * n),  # long digit strings: huge or over Python's int-parse limit
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@FAST
@given(headers=st.one_of(st.none(), st.lists(st.tuples(header_names, header_values), max_size=10)),
       key=st.one_of(st.none(), st.binary(max_size=40)))
def test_any_record_gets_an_identity_and_a_json_prediction(headers, key):
    from rtvi.streaming.frames import FrameInfo, prediction_record

    info = FrameInfo.from_record(headers, key)
    assert isinstance(info.stream, str) and isinstance(info.frame, int)
    info.age_ms()
    for record in (prediction_record(info, model="m", top=[], source=(0, 1)),
                   prediction_record(info, model="m", error="INVALID_ARGUMENT: x")):
        json.loads(record)


# --- live ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    from conftest import InferenceServer

    srv = InferenceServer(tmp_path_factory.mktemp("serve-fuzz"), "--max-batch-size", "4", "--instances", "1",
                          "--max-message-mb", "1")
    try:
        srv.wait_serving()
        yield srv
    finally:
        assert srv.proc.terminate() == 0, srv.proc.output


def _jpeg() -> bytes:
    from conftest import jpeg_bytes

    return jpeg_bytes(64, 48)


image_bytes = st.one_of(st.binary(max_size=64), st.just(b"\xff\xd8"), st.builds(_jpeg),
                        st.builds(lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 8 + b"IHDR" + struct.pack(">II", 10**5, 10**5)))


@st.composite
def infer_requests(draw):
    """Half well-formed image requests with hostile images, half anything at all."""
    from tritonclient.grpc import service_pb2 as pb

    if draw(st.booleans()):
        images = draw(st.lists(image_bytes, min_size=1, max_size=4))
        request = pb.ModelInferRequest(model_name="resnet18")
        tensor = request.inputs.add(name="images", datatype="BYTES", shape=[len(images)])
        if draw(st.booleans()):
            request.raw_input_contents.append(bytes_elements(images))
        else:
            tensor.contents.bytes_contents.extend(images)
        return request
    request = pb.ModelInferRequest(model_name=draw(st.sampled_from(["resnet18", "resnet18", "", "nope"])),
                                   id=draw(st.text(max_size=8)))
    raw: list[bytes] = []
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(name=draw(st.sampled_from(["images", "pixels", "x", ""])),
                                    datatype=draw(st.sampled_from(DATATYPES)),
                                    shape=draw(st.lists(st.integers(-2, 5) | st.integers(-(2**63), 2**63 - 1), max_size=4)))
        choice = draw(st.integers(0, 3))
        if choice == 0:
            tensor.contents.bytes_contents.extend(draw(st.lists(image_bytes, max_size=4)))
        elif choice == 1:
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=8)))
        elif choice == 2:
            raw.append(draw(st.lists(image_bytes, max_size=4).map(bytes_elements)))
        else:
            raw.append(draw(st.binary(max_size=2048)))
    if draw(st.booleans()):
        request.raw_input_contents.extend(raw)
    for _ in range(draw(st.integers(0, 2))):
        request.outputs.add(name=draw(st.sampled_from(["logits", "x"])))
    return request


def test_live_server_answers_every_random_request_with_a_status(live_server):
    import grpc
    from grpc_health.v1 import health_pb2
    from tritonclient.grpc import service_pb2_grpc

    from conftest import health_status

    channel = grpc.insecure_channel(live_server.address)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    codes: dict[str, int] = {}

    @settings(max_examples=max(EXAMPLES // 3, 50), deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=infer_requests())
    def send(request):
        try:
            stub.ModelInfer(request, timeout=30)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
            assert code not in ("INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED"), f"{code}: {exc.details()}\n{request}"
            assert exc.details(), "an error without a message"
        codes[code] = codes.get(code, 0) + 1

    try:
        send()
    finally:
        channel.close()
    print(f"\nlive fuzz: {sum(codes.values())} requests answered: {codes}")
    assert health_status(live_server.address) == health_pb2.HealthCheckResponse.SERVING
