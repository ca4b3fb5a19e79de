from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MarketTick(_message.Message):
    __slots__ = ("symbol", "source", "bid_e9", "ask_e9", "bid_volume", "ask_volume", "event_time_ns", "receive_time_ns", "lineage", "best_bid_e9", "best_bid_source", "best_ask_e9", "best_ask_source")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BID_E9_FIELD_NUMBER: _ClassVar[int]
    ASK_E9_FIELD_NUMBER: _ClassVar[int]
    BID_VOLUME_FIELD_NUMBER: _ClassVar[int]
    ASK_VOLUME_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    BEST_BID_E9_FIELD_NUMBER: _ClassVar[int]
    BEST_BID_SOURCE_FIELD_NUMBER: _ClassVar[int]
    BEST_ASK_E9_FIELD_NUMBER: _ClassVar[int]
    BEST_ASK_SOURCE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    source: str
    bid_e9: int
    ask_e9: int
    bid_volume: float
    ask_volume: float
    event_time_ns: int
    receive_time_ns: int
    lineage: Lineage
    best_bid_e9: int
    best_bid_source: str
    best_ask_e9: int
    best_ask_source: str
    def __init__(self, symbol: _Optional[str] = ..., source: _Optional[str] = ..., bid_e9: _Optional[int] = ..., ask_e9: _Optional[int] = ..., bid_volume: _Optional[float] = ..., ask_volume: _Optional[float] = ..., event_time_ns: _Optional[int] = ..., receive_time_ns: _Optional[int] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., best_bid_e9: _Optional[int] = ..., best_bid_source: _Optional[str] = ..., best_ask_e9: _Optional[int] = ..., best_ask_source: _Optional[str] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("topic", "partition", "offset", "index")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    offset: int
    index: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class MarketDataStream(_message.Message):
    __slots__ = ("ticks", "source", "batch_time_ns")
    TICKS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BATCH_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    ticks: _containers.RepeatedCompositeFieldContainer[MarketTick]
    source: str
    batch_time_ns: int
    def __init__(self, ticks: _Optional[_Iterable[_Union[MarketTick, _Mapping]]] = ..., source: _Optional[str] = ..., batch_time_ns: _Optional[int] = ...) -> None: ...

class MarketContext(_message.Message):
    __slots__ = ("provider", "series", "value", "unit", "observation_time_ns", "attributes", "receive_time_ns", "category")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    provider: str
    series: str
    value: float
    unit: str
    observation_time_ns: int
    attributes: _containers.ScalarMap[str, str]
    receive_time_ns: int
    category: str
    def __init__(self, provider: _Optional[str] = ..., series: _Optional[str] = ..., value: _Optional[float] = ..., unit: _Optional[str] = ..., observation_time_ns: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ..., receive_time_ns: _Optional[int] = ..., category: _Optional[str] = ...) -> None: ...

class RawRecord(_message.Message):
    __slots__ = ("source", "format", "payload", "receive_time_ns", "tick", "symbol")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    source: str
    format: str
    payload: bytes
    receive_time_ns: int
    tick: MarketTick
    symbol: str
    def __init__(self, source: _Optional[str] = ..., format: _Optional[str] = ..., payload: _Optional[bytes] = ..., receive_time_ns: _Optional[int] = ..., tick: _Optional[_Union[MarketTick, _Mapping]] = ..., symbol: _Optional[str] = ...) -> None: ...

class RawBatch(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[RawRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[RawRecord, _Mapping]]] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("reasons", "detail", "record", "lineage", "stage")
    REASONS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    detail: str
    record: RawRecord
    lineage: Lineage
    stage: str
    def __init__(self, reasons: _Optional[_Iterable[str]] = ..., detail: _Optional[str] = ..., record: _Optional[_Union[RawRecord, _Mapping]] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., stage: _Optional[str] = ...) -> None: ...

class Candle(_message.Message):
    __slots__ = ("symbol", "source", "timeframe", "start_ns", "end_ns", "bid_open_e9", "bid_high_e9", "bid_low_e9", "bid_close_e9", "ask_open_e9", "ask_high_e9", "ask_low_e9", "ask_close_e9", "mid2_open_e9", "mid2_high_e9", "mid2_low_e9", "mid2_close_e9", "tick_count", "first_event_time_ns", "last_event_time_ns", "revision")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIMEFRAME_FIELD_NUMBER: _ClassVar[int]
    START_NS_FIELD_NUMBER: _ClassVar[int]
    END_NS_FIELD_NUMBER: _ClassVar[int]
    BID_OPEN_E9_FIELD_NUMBER: _ClassVar[int]
    BID_HIGH_E9_FIELD_NUMBER: _ClassVar[int]
    BID_LOW_E9_FIELD_NUMBER: _ClassVar[int]
    BID_CLOSE_E9_FIELD_NUMBER: _ClassVar[int]
    ASK_OPEN_E9_FIELD_NUMBER: _ClassVar[int]
    ASK_HIGH_E9_FIELD_NUMBER: _ClassVar[int]
    ASK_LOW_E9_FIELD_NUMBER: _ClassVar[int]
    ASK_CLOSE_E9_FIELD_NUMBER: _ClassVar[int]
    MID2_OPEN_E9_FIELD_NUMBER: _ClassVar[int]
    MID2_HIGH_E9_FIELD_NUMBER: _ClassVar[int]
    MID2_LOW_E9_FIELD_NUMBER: _ClassVar[int]
    MID2_CLOSE_E9_FIELD_NUMBER: _ClassVar[int]
    TICK_COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_EVENT_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    source: str
    timeframe: str
    start_ns: int
    end_ns: int
    bid_open_e9: int
    bid_high_e9: int
    bid_low_e9: int
    bid_close_e9: int
    ask_open_e9: int
    ask_high_e9: int
    ask_low_e9: int
    ask_close_e9: int
    mid2_open_e9: int
    mid2_high_e9: int
    mid2_low_e9: int
    mid2_close_e9: int
    tick_count: int
    first_event_time_ns: int
    last_event_time_ns: int
    revision: int
    def __init__(self, symbol: _Optional[str] = ..., source: _Optional[str] = ..., timeframe: _Optional[str] = ..., start_ns: _Optional[int] = ..., end_ns: _Optional[int] = ..., bid_open_e9: _Optional[int] = ..., bid_high_e9: _Optional[int] = ..., bid_low_e9: _Optional[int] = ..., bid_close_e9: _Optional[int] = ..., ask_open_e9: _Optional[int] = ..., ask_high_e9: _Optional[int] = ..., ask_low_e9: _Optional[int] = ..., ask_close_e9: _Optional[int] = ..., mid2_open_e9: _Optional[int] = ..., mid2_high_e9: _Optional[int] = ..., mid2_low_e9: _Optional[int] = ..., mid2_close_e9: _Optional[int] = ..., tick_count: _Optional[int] = ..., first_event_time_ns: _Optional[int] = ..., last_event_time_ns: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...
