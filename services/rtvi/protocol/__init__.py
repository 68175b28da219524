"""The Open Inference Protocol v2: generated gRPC stubs and tensor encoding.

The stubs in ``_generated`` come from ``protos/grpc_service.proto``; regenerate them
with ``python -m rtvi.protocol.codegen`` (a test fails when they drift).
"""
