from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class IdPk(_message.Message):
    __slots__ = ("id", "pk")
    ID_FIELD_NUMBER: _ClassVar[int]
    PK_FIELD_NUMBER: _ClassVar[int]
    id: str
    pk: bytes
    def __init__(self, id: _Optional[str] = ..., pk: _Optional[bytes] = ...) -> None: ...
