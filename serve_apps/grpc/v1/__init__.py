"""Protos of the public gRPC API and the modules ``grpc_tools.protoc`` generated from them
(``make protos`` rewrites them; a unit test fails when they are stale).  Do not edit ``*_pb2*``."""
