import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_PENDING: _ClassVar[JobStatus]
    JOB_STATUS_QUEUED: _ClassVar[JobStatus]
    JOB_STATUS_RUNNING: _ClassVar[JobStatus]
    JOB_STATUS_COMPLETED: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_CANCELED: _ClassVar[JobStatus]

class JobTrigger(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_TRIGGER_UNSPECIFIED: _ClassVar[JobTrigger]
    JOB_TRIGGER_AUTOMATIC: _ClassVar[JobTrigger]
    JOB_TRIGGER_MANUAL: _ClassVar[JobTrigger]

class FailureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_KIND_UNSPECIFIED: _ClassVar[FailureKind]
    FAILURE_KIND_USER: _ClassVar[FailureKind]
    FAILURE_KIND_SYSTEM: _ClassVar[FailureKind]

class LogStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_STREAM_UNSPECIFIED: _ClassVar[LogStream]
    LOG_STREAM_STDOUT: _ClassVar[LogStream]
    LOG_STREAM_STDERR: _ClassVar[LogStream]

class LogFileFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_FILE_FORMAT_UNSPECIFIED: _ClassVar[LogFileFormat]
    LOG_FILE_FORMAT_TXT: _ClassVar[LogFileFormat]
    LOG_FILE_FORMAT_JSON: _ClassVar[LogFileFormat]
    LOG_FILE_FORMAT_JSONL: _ClassVar[LogFileFormat]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_PENDING: JobStatus
JOB_STATUS_QUEUED: JobStatus
JOB_STATUS_RUNNING: JobStatus
JOB_STATUS_COMPLETED: JobStatus
JOB_STATUS_FAILED: JobStatus
JOB_STATUS_CANCELED: JobStatus
JOB_TRIGGER_UNSPECIFIED: JobTrigger
JOB_TRIGGER_AUTOMATIC: JobTrigger
JOB_TRIGGER_MANUAL: JobTrigger
FAILURE_KIND_UNSPECIFIED: FailureKind
FAILURE_KIND_USER: FailureKind
FAILURE_KIND_SYSTEM: FailureKind
LOG_STREAM_UNSPECIFIED: LogStream
LOG_STREAM_STDOUT: LogStream
LOG_STREAM_STDERR: LogStream
LOG_FILE_FORMAT_UNSPECIFIED: LogFileFormat
LOG_FILE_FORMAT_TXT: LogFileFormat
LOG_FILE_FORMAT_JSON: LogFileFormat
LOG_FILE_FORMAT_JSONL: LogFileFormat

class ScheduleJobRequest(_message.Message):
    __slots__ = ("workflow_id", "idempotency_key")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    idempotency_key: str
    def __init__(self, workflow_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ScheduleJobResponse(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("workflow_id", "job_id")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    job_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "workflow_id", "status", "trigger", "scheduled_at", "started_at", "completed_at", "created_at", "updated_at", "attempts", "failure_kind", "last_error_code", "last_error_message")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_KIND_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    workflow_id: str
    status: JobStatus
    trigger: JobTrigger
    scheduled_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    attempts: int
    failure_kind: FailureKind
    last_error_code: str
    last_error_message: str
    def __init__(self, id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., trigger: _Optional[_Union[JobTrigger, str]] = ..., scheduled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ..., failure_kind: _Optional[_Union[FailureKind, str]] = ..., last_error_code: _Optional[str] = ..., last_error_message: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("workflow_id", "cursor", "status", "trigger")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    cursor: str
    status: JobStatus
    trigger: JobTrigger
    def __init__(self, workflow_id: _Optional[str] = ..., cursor: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., trigger: _Optional[_Union[JobTrigger, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "cursor")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    cursor: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListJobLogsRequest(_message.Message):
    __slots__ = ("workflow_id", "job_id", "cursor")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    job_id: str
    cursor: str
    def __init__(self, workflow_id: _Optional[str] = ..., job_id: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class SearchJobLogsRequest(_message.Message):
    __slots__ = ("workflow_id", "job_id", "q", "stream", "cursor")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    Q_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    job_id: str
    q: str
    stream: LogStream
    cursor: str
    def __init__(self, workflow_id: _Optional[str] = ..., job_id: _Optional[str] = ..., q: _Optional[str] = ..., stream: _Optional[_Union[LogStream, str]] = ..., cursor: _Optional[str] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("timestamp", "message", "sequence_num", "stream", "event_id")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUM_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    message: str
    sequence_num: int
    stream: LogStream
    event_id: str
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., sequence_num: _Optional[int] = ..., stream: _Optional[_Union[LogStream, str]] = ..., event_id: _Optional[str] = ...) -> None: ...

class JobLogs(_message.Message):
    __slots__ = ("id", "workflow_id", "logs", "cursor", "highlight_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    HIGHLIGHT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    workflow_id: str
    logs: _containers.RepeatedCompositeFieldContainer[LogLine]
    cursor: str
    highlight_token: str
    def __init__(self, id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., logs: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ..., cursor: _Optional[str] = ..., highlight_token: _Optional[str] = ...) -> None: ...

class StreamJobLogsRequest(_message.Message):
    __slots__ = ("workflow_id", "job_id")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    job_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class JobLogEvent(_message.Message):
    __slots__ = ("connected", "line", "end")
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    connected: StreamConnected
    line: LogLine
    end: StreamEnded
    def __init__(self, connected: _Optional[_Union[StreamConnected, _Mapping]] = ..., line: _Optional[_Union[LogLine, _Mapping]] = ..., end: _Optional[_Union[StreamEnded, _Mapping]] = ...) -> None: ...

class StreamConnected(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamEnded(_message.Message):
    __slots__ = ("job_status",)
    JOB_STATUS_FIELD_NUMBER: _ClassVar[int]
    job_status: JobStatus
    def __init__(self, job_status: _Optional[_Union[JobStatus, str]] = ...) -> None: ...

class DownloadJobLogsRequest(_message.Message):
    __slots__ = ("workflow_id", "job_id", "format", "q", "stream")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    Q_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    job_id: str
    format: LogFileFormat
    q: str
    stream: LogStream
    def __init__(self, workflow_id: _Optional[str] = ..., job_id: _Optional[str] = ..., format: _Optional[_Union[LogFileFormat, str]] = ..., q: _Optional[str] = ..., stream: _Optional[_Union[LogStream, str]] = ...) -> None: ...

class LogFileChunk(_message.Message):
    __slots__ = ("data", "filename", "content_type")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    filename: str
    content_type: str
    def __init__(self, data: _Optional[bytes] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...
