"""The public gRPC API (SPEC §1): the users, workflows, jobs, notifications and analytics operations
a user may call, served by the ``GrpcGateway`` deployment of the ``chronoverse-grpc`` Serve
application through Serve's gRPC proxy (ADR 0005).

* ``v1/`` — the ``.proto`` files and the modules generated from them (:mod:`serve_apps.grpc.codegen`);
* :mod:`~serve_apps.grpc.errors` — domain errors → gRPC status codes (the one mapping);
* :mod:`~serve_apps.grpc.translate` — proto messages ↔ the services' pydantic models;
* :mod:`~serve_apps.grpc.servicer` — the RPC methods (plain class, no Ray);
* :mod:`~serve_apps.grpc.deployment` — its Serve shell and the application builder.

Kept import-free: Serve's proxy process imports the generated ``*_pb2_grpc`` modules below this
package, and should not pay for anything else.
"""
