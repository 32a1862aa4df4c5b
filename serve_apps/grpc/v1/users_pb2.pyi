import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NotificationPreference(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTIFICATION_PREFERENCE_UNSPECIFIED: _ClassVar[NotificationPreference]
    NOTIFICATION_PREFERENCE_ALERTS: _ClassVar[NotificationPreference]
    NOTIFICATION_PREFERENCE_ALL: _ClassVar[NotificationPreference]
    NOTIFICATION_PREFERENCE_NONE: _ClassVar[NotificationPreference]
NOTIFICATION_PREFERENCE_UNSPECIFIED: NotificationPreference
NOTIFICATION_PREFERENCE_ALERTS: NotificationPreference
NOTIFICATION_PREFERENCE_ALL: NotificationPreference
NOTIFICATION_PREFERENCE_NONE: NotificationPreference

class GetUserRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class User(_message.Message):
    __slots__ = ("email", "notification_preference", "created_at", "updated_at")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    email: str
    notification_preference: NotificationPreference
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, email: _Optional[str] = ..., notification_preference: _Optional[_Union[NotificationPreference, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpdateUserRequest(_message.Message):
    __slots__ = ("notification_preference",)
    NOTIFICATION_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    notification_preference: NotificationPreference
    def __init__(self, notification_preference: _Optional[_Union[NotificationPreference, str]] = ...) -> None: ...

class UpdateUserResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
