from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetUserAnalyticsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UserAnalytics(_message.Message):
    __slots__ = ("total_workflows", "total_jobs", "total_joblogs", "total_job_execution_duration")
    TOTAL_WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_JOBS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_JOBLOGS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_JOB_EXECUTION_DURATION_FIELD_NUMBER: _ClassVar[int]
    total_workflows: int
    total_jobs: int
    total_joblogs: int
    total_job_execution_duration: int
    def __init__(self, total_workflows: _Optional[int] = ..., total_jobs: _Optional[int] = ..., total_joblogs: _Optional[int] = ..., total_job_execution_duration: _Optional[int] = ...) -> None: ...

class GetWorkflowAnalyticsRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class WorkflowAnalytics(_message.Message):
    __slots__ = ("workflow_id", "total_job_execution_duration", "total_jobs", "total_joblogs")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_JOB_EXECUTION_DURATION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_JOBS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_JOBLOGS_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    total_job_execution_duration: int
    total_jobs: int
    total_joblogs: int
    def __init__(self, workflow_id: _Optional[str] = ..., total_job_execution_duration: _Optional[int] = ..., total_jobs: _Optional[int] = ..., total_joblogs: _Optional[int] = ...) -> None: ...
