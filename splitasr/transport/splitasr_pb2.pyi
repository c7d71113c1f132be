from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TranscribeRequest(_message.Message):
    __slots__ = ("model", "point", "codec", "payload", "request_id", "sent_unix_ns", "beam")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    BEAM_FIELD_NUMBER: _ClassVar[int]
    model: str
    point: str
    codec: str
    payload: bytes
    request_id: int
    sent_unix_ns: int
    beam: int
    def __init__(self, model: _Optional[str] = ..., point: _Optional[str] = ..., codec: _Optional[str] = ..., payload: _Optional[bytes] = ..., request_id: _Optional[int] = ..., sent_unix_ns: _Optional[int] = ..., beam: _Optional[int] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("model", "point", "codec", "request_id", "beam", "seq", "payload", "sent_unix_ns", "last", "floor")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BEAM_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    FLOOR_FIELD_NUMBER: _ClassVar[int]
    model: str
    point: str
    codec: str
    request_id: int
    beam: int
    seq: int
    payload: bytes
    sent_unix_ns: int
    last: bool
    floor: float
    def __init__(self, model: _Optional[str] = ..., point: _Optional[str] = ..., codec: _Optional[str] = ..., request_id: _Optional[int] = ..., beam: _Optional[int] = ..., seq: _Optional[int] = ..., payload: _Optional[bytes] = ..., sent_unix_ns: _Optional[int] = ..., last: _Optional[bool] = ..., floor: _Optional[float] = ...) -> None: ...

class ServerTimings(_message.Message):
    __slots__ = ("queue_ms", "decode_ms", "tail_ms", "text_ms", "total_ms", "batch_size")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    TAIL_MS_FIELD_NUMBER: _ClassVar[int]
    TEXT_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    decode_ms: float
    tail_ms: float
    text_ms: float
    total_ms: float
    batch_size: int
    def __init__(self, queue_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., tail_ms: _Optional[float] = ..., text_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class ServerLoad(_message.Message):
    __slots__ = ("queue_depth", "mean_service_ms", "open_streams")
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MEAN_SERVICE_MS_FIELD_NUMBER: _ClassVar[int]
    OPEN_STREAMS_FIELD_NUMBER: _ClassVar[int]
    queue_depth: int
    mean_service_ms: float
    open_streams: int
    def __init__(self, queue_depth: _Optional[int] = ..., mean_service_ms: _Optional[float] = ..., open_streams: _Optional[int] = ...) -> None: ...

class TranscribeReply(_message.Message):
    __slots__ = ("request_id", "text", "timings", "load", "received_unix_ns")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    text: str
    timings: ServerTimings
    load: ServerLoad
    received_unix_ns: int
    def __init__(self, request_id: _Optional[int] = ..., text: _Optional[str] = ..., timings: _Optional[_Union[ServerTimings, _Mapping]] = ..., load: _Optional[_Union[ServerLoad, _Mapping]] = ..., received_unix_ns: _Optional[int] = ...) -> None: ...
