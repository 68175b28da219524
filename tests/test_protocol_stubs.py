"""The committed gRPC stubs are exactly what protoc makes of protos/grpc_service.proto."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

GENERATED = REPO / "services" / "rtvi" / "protocol" / "_generated"


def test_generated_stubs_match_the_proto(tmp_path: Path):
    subprocess.run(
        [sys.executable, "-m", "rtvi.protocol.codegen", "--out", str(tmp_path)], check=True, cwd=REPO
    )
    fresh = tmp_path / "rtvi" / "protocol" / "_generated"
    committed = {p.name: p.read_text() for p in GENERATED.iterdir() if p.is_file()}
    regenerated = {p.name: p.read_text() for p in fresh.iterdir() if p.is_file()}
    assert sorted(committed) == sorted(regenerated)
    stale = [name for name in committed if committed[name] != regenerated[name]]
    assert not stale, f"{stale} drifted from protos/grpc_service.proto: run `python -m rtvi.protocol.codegen`"


def test_wire_names_match_the_v2_specification():
    """Service path and field numbers are what v2 clients (tritonclient) send."""
    # Our stubs load in a child process: tritonclient registers the same proto package.
    code = (
        "import json; from rtvi.protocol._generated import grpc_service_pb2 as pb;"
        "s = pb.DESCRIPTOR.services_by_name['GRPCInferenceService'];"
        "print(json.dumps({'service': s.full_name, 'methods': [m.name for m in s.methods],"
        "'fields': {m: [[f.name, f.number] for f in pb.DESCRIPTOR.message_types_by_name[m].fields]"
        " for m in ('ModelInferRequest', 'ModelInferResponse', 'InferParameter', 'InferTensorContents')}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    ours = json.loads(out)
    import tritonclient.grpc.service_pb2 as triton_pb

    triton_service = triton_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours["service"] == triton_service.full_name == "inference.GRPCInferenceService"
    assert set(ours["methods"]) <= set(triton_service.methods_by_name)
    for message, fields in ours["fields"].items():
        theirs = [[f.name, f.number] for f in triton_pb.DESCRIPTOR.message_types_by_name[message].fields]
        assert sorted(fields) == sorted(theirs), message
