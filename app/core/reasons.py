"""Reject stages and the pipeline's reason codes, in one place.

A Rejection names the stage that refused a record and one or more reason codes. The
source parsers' own codes (`malformed_json`, `bad_price`, `corrupt_lzma`, ...) are listed in
their modules next to the rules that raise them.
"""

# Stages: where a record was refused.
STAGE_SOURCE = "source"  # a source could not read what the provider sent
STAGE_PARSE = "parse"  # the agent could not read a raw record
STAGE_VALIDATE = "validate"  # a tick broke a validation rule
STAGE_PROCESS = "process"  # an unexpected error while processing one record
STAGE_CONTEXT = "context"  # the context agent could not read a provider answer
STAGE_CANDLE = "candle"  # a valid tick came too late for a candle that is already final

# Parse stage.
MALFORMED_BATCH = "malformed_batch"
UNKNOWN_FORMAT = "unknown_format"
NOT_A_TICK = "not_a_tick"
SYMBOL_KEY_MISMATCH = "symbol_key_mismatch"
UNKNOWN_SOURCE = "unknown_source"  # not a configured broker, collector or importer
INTERNAL_ERROR = "internal_error"

# Context stage.
UNENCODABLE = "unencodable"  # an observation that cannot become a MarketContext

# Validate stage, in the order the rules are checked.
NON_POSITIVE_PRICE = "non_positive_price"
CROSSED_QUOTE = "crossed_quote"
SPREAD_TOO_WIDE = "spread_too_wide"
FUTURE_DATED = "future_dated"
DUPLICATE = "duplicate"
OUT_OF_ORDER = "out_of_order"
TOO_FREQUENT = "too_frequent"
STALE = "stale"
PRICE_JUMP = "price_jump"
UNKNOWN_INSTRUMENT = "unknown_instrument"

# Candle stage: the tick is in market-data-stream; only its candle window was final.
LATE_FOR_CANDLE = "late_for_candle"
