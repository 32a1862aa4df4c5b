import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkflowKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKFLOW_KIND_UNSPECIFIED: _ClassVar[WorkflowKind]
    WORKFLOW_KIND_HEARTBEAT: _ClassVar[WorkflowKind]
    WORKFLOW_KIND_CONTAINER: _ClassVar[WorkflowKind]
    WORKFLOW_KIND_RAY: _ClassVar[WorkflowKind]

class WorkflowBuildStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKFLOW_BUILD_STATUS_UNSPECIFIED: _ClassVar[WorkflowBuildStatus]
    WORKFLOW_BUILD_STATUS_QUEUED: _ClassVar[WorkflowBuildStatus]
    WORKFLOW_BUILD_STATUS_STARTED: _ClassVar[WorkflowBuildStatus]
    WORKFLOW_BUILD_STATUS_COMPLETED: _ClassVar[WorkflowBuildStatus]
    WORKFLOW_BUILD_STATUS_FAILED: _ClassVar[WorkflowBuildStatus]
    WORKFLOW_BUILD_STATUS_CANCELED: _ClassVar[WorkflowBuildStatus]
WORKFLOW_KIND_UNSPECIFIED: WorkflowKind
WORKFLOW_KIND_HEARTBEAT: WorkflowKind
WORKFLOW_KIND_CONTAINER: WorkflowKind
WORKFLOW_KIND_RAY: WorkflowKind
WORKFLOW_BUILD_STATUS_UNSPECIFIED: WorkflowBuildStatus
WORKFLOW_BUILD_STATUS_QUEUED: WorkflowBuildStatus
WORKFLOW_BUILD_STATUS_STARTED: WorkflowBuildStatus
WORKFLOW_BUILD_STATUS_COMPLETED: WorkflowBuildStatus
WORKFLOW_BUILD_STATUS_FAILED: WorkflowBuildStatus
WORKFLOW_BUILD_STATUS_CANCELED: WorkflowBuildStatus

class CreateWorkflowRequest(_message.Message):
    __slots__ = ("name", "payload", "kind", "interval", "max_consecutive_job_failures_allowed", "log_retention_enabled", "log_retention_ttl", "idempotency_key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_CONSECUTIVE_JOB_FAILURES_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    LOG_RETENTION_ENABLED_FIELD_NUMBER: _ClassVar[int]
    LOG_RETENTION_TTL_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    payload: str
    kind: WorkflowKind
    interval: int
    max_consecutive_job_failures_allowed: int
    log_retention_enabled: bool
    log_retention_ttl: str
    idempotency_key: str
    def __init__(self, name: _Optional[str] = ..., payload: _Optional[str] = ..., kind: _Optional[_Union[WorkflowKind, str]] = ..., interval: _Optional[int] = ..., max_consecutive_job_failures_allowed: _Optional[int] = ..., log_retention_enabled: _Optional[bool] = ..., log_retention_ttl: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CreateWorkflowResponse(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class UpdateWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "name", "payload", "interval", "max_consecutive_job_failures_allowed", "idempotency_key")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_CONSECUTIVE_JOB_FAILURES_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    name: str
    payload: str
    interval: int
    max_consecutive_job_failures_allowed: int
    idempotency_key: str
    def __init__(self, workflow_id: _Optional[str] = ..., name: _Optional[str] = ..., payload: _Optional[str] = ..., interval: _Optional[int] = ..., max_consecutive_job_failures_allowed: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class UpdateWorkflowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("id", "name", "payload", "kind", "build_status", "interval", "consecutive_job_failures_count", "max_consecutive_job_failures_allowed", "created_at", "updated_at", "terminated_at", "log_retention", "log_retention_ttl", "generation")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BUILD_STATUS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_JOB_FAILURES_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONSECUTIVE_JOB_FAILURES_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_AT_FIELD_NUMBER: _ClassVar[int]
    LOG_RETENTION_FIELD_NUMBER: _ClassVar[int]
    LOG_RETENTION_TTL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    payload: str
    kind: WorkflowKind
    build_status: WorkflowBuildStatus
    interval: int
    consecutive_job_failures_count: int
    max_consecutive_job_failures_allowed: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    terminated_at: _timestamp_pb2.Timestamp
    log_retention: bool
    log_retention_ttl: str
    generation: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., payload: _Optional[str] = ..., kind: _Optional[_Union[WorkflowKind, str]] = ..., build_status: _Optional[_Union[WorkflowBuildStatus, str]] = ..., interval: _Optional[int] = ..., consecutive_job_failures_count: _Optional[int] = ..., max_consecutive_job_failures_allowed: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., terminated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., log_retention: _Optional[bool] = ..., log_retention_ttl: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("cursor", "query", "kind", "build_status", "terminated", "interval_min", "interval_max")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BUILD_STATUS_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MIN_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MAX_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    query: str
    kind: WorkflowKind
    build_status: WorkflowBuildStatus
    terminated: bool
    interval_min: int
    interval_max: int
    def __init__(self, cursor: _Optional[str] = ..., query: _Optional[str] = ..., kind: _Optional[_Union[WorkflowKind, str]] = ..., build_status: _Optional[_Union[WorkflowBuildStatus, str]] = ..., terminated: _Optional[bool] = ..., interval_min: _Optional[int] = ..., interval_max: _Optional[int] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("workflows", "cursor")
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[Workflow]
    cursor: str
    def __init__(self, workflows: _Optional[_Iterable[_Union[Workflow, _Mapping]]] = ..., cursor: _Optional[str] = ...) -> None: ...

class TerminateWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class TerminateWorkflowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class DeleteWorkflowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
