"""Record types: fixed-size numpy structured dtypes shared by every stage.

Every record starts with the common header of DESIGN.md (48 bytes), so each hop's latency and the end-to-end
latency can be read off the records themselves. Sizes are multiples of 8 bytes; the ring copies records as
64-bit words and stamps ``seq`` (word 0) on publish.
"""

from __future__ import annotations

import hashlib

import numpy as np

HEADER_FIELDS: list[tuple[str, str]] = [
    ("seq", "<u8"),  # position in its ring, set on publish
    ("src_seq", "<u8"),  # seq of the input record this one was derived from (sources: their own count)
    ("t_origin_ns", "<i8"),  # monotonic ns at which the market-data frame behind this record reached the feed
    ("t_pub_ns", "<i8"),  # monotonic ns at which this record was published
    ("ts_event_ms", "<i8"),  # the exchange's event time, ms since the Unix epoch
    ("src_ring", "<u2"),  # which of the stage's input rings the source record came from
    ("instrument", "<u2"),  # index into the configured instrument table
    ("flags", "<u4"),  # per-type bit flags (0 unless a record type documents them)
]
"""The common header: 48 bytes, the same first fields in every record type."""


def record_dtype(*fields: tuple) -> np.dtype:
    """A record dtype: the common header followed by ``fields``, padded to a multiple of 8 bytes."""
    dt = np.dtype(HEADER_FIELDS + list(fields))
    pad = -dt.itemsize % 8
    if pad:
        dt = np.dtype(HEADER_FIELDS + list(fields) + [("_pad", "u1", (pad,))])  # numba cannot type void fields
    return dt


BBO = record_dtype(
    ("bid_px", "<f8"),  # best bid price
    ("bid_qty", "<f8"),  # size at the best bid
    ("ask_px", "<f8"),  # best ask price
    ("ask_qty", "<f8"),  # size at the best ask
    ("venue_seq", "<u8"),  # the exchange's sequence or update id (0 when the venue sends none)
)
"""Best bid/ask tick (96 bytes)."""

COUNT = record_dtype(
    ("count", "<u8"),  # running count of records seen for this instrument
    ("mid", "<f8"),  # mid price of the record that was counted
)
"""Output of the running-count pass-through stage (64 bytes)."""

PING = record_dtype(
    ("checksum", "<u8"),  # a function of seq and payload, checked by the consumer
    ("payload", "<u8"),  # arbitrary data
)
"""Benchmark and stress-test record (64 bytes)."""

TRADE = record_dtype(
    ("price", "<f8"),  # trade price
    ("qty", "<f8"),  # trade size, base asset
    ("trade_id", "<u8"),  # the exchange's trade id (Binance aggregate id for aggTrade; 0 when none)
    ("side", "<i1"),  # taker side: 1 buy, -1 sell, 0 unknown
)
"""One public trade (80 bytes)."""

BOOK_LEVELS = 10
"""Levels per side in a BOOK record."""

BOOK = record_dtype(
    ("venue_seq", "<u8"),  # the book's sequence / last update id after the change
    ("n_bids", "<u2"),  # how many bid levels are filled (the rest are 0)
    ("n_asks", "<u2"),  # how many ask levels are filled
    ("_gap", "<u4"),  # unused, keeps the levels 8-byte aligned
    ("bid_px", "<f8", (BOOK_LEVELS,)),  # bid prices, best first
    ("bid_qty", "<f8", (BOOK_LEVELS,)),  # sizes at those bids
    ("ask_px", "<f8", (BOOK_LEVELS,)),  # ask prices, best first
    ("ask_qty", "<f8", (BOOK_LEVELS,)),  # sizes at those asks
)
"""Top of a locally synchronized order book, after each applied change (384 bytes)."""

# Flags of market-data records (``flags`` header field).
FLAG_LOCAL_TIME = 1
"""``ts_event_ms`` is the receive time: the venue sent no event time (Binance spot bookTicker)."""
FLAG_FROM_BOOK = 2
"""A BBO derived from the local order book rather than the venue's ticker stream."""
FLAG_RESYNC = 4
"""First record after a (re)connect or book resync: records before it may be missing."""

RECORD_TYPES: dict[str, np.dtype] = {"bbo": BBO, "trade": TRADE, "book": BOOK, "count": COUNT, "ping": PING}
"""Record types by the name a config uses."""


def dtype_hash(dt: np.dtype) -> int:
    """A 63-bit hash of the dtype's full description (names, formats, offsets, itemsize)."""
    desc = repr((dt.descr, dt.itemsize)).encode()
    return int.from_bytes(hashlib.blake2b(desc, digest_size=8).digest(), "little") >> 1
