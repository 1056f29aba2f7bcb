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

BAR_PARTIAL = 0
"""``BAR.kind``: the current minute's bar after a tick (published on every tick)."""
BAR_CLOSED = 1
"""``BAR.kind``: a minute's final bar, published when the instrument's first tick of a later minute arrives."""
BAR_WARMUP = 2
"""``BAR.kind``: a closed bar from the venue's one-minute candles, published at start before any live bar."""

BAR = record_dtype(
    ("minute_ms", "<i8"),  # start of the bar's minute on exchange time: floor(ts / 60000) * 60000
    ("open", "<f8"),  # first mid of the minute (warm-up: the candle's open)
    ("high", "<f8"),  # highest mid
    ("low", "<f8"),  # lowest mid
    ("close", "<f8"),  # latest mid (warm-up: the candle's close)
    ("sum", "<f8"),  # sum of the minute's mids, in arrival order (the exact state a restart resumes from)
    ("mean", "<f8"),  # sum / count; warm-up: the seed's proxy (high + low) / 2
    ("bid_px", "<f8"),  # best bid of the tick behind this record (0 for warm-up bars)
    ("ask_px", "<f8"),  # best ask of that tick (0 for warm-up bars)
    ("count", "<u4"),  # mids in the minute so far (warm-up: 1)
    ("kind", "<u1"),  # BAR_PARTIAL, BAR_CLOSED or BAR_WARMUP
)
"""One-minute bar of mids: a partial update on every tick and a closed bar when the minute rolls (128 bytes).
``ts_event_ms`` is the event time of the tick behind the record (warm-up: the end of the candle's minute)."""

SIG_ENTER_LONG = 1
"""``SIGNAL.action``: enter LONG_SPREAD (buy leg A, sell leg B)."""
SIG_ENTER_SHORT = 2
"""``SIGNAL.action``: enter SHORT_SPREAD (sell leg A, buy leg B)."""
SIG_EXIT = 3
"""``SIGNAL.action``: close the position (back to flat)."""
SIG_FLAG_MEASURE = 1
"""``SIGNAL.flags``: a measurement signal (``bench latency --orders-per-s``), not a trading decision."""

SIGNAL = record_dtype(
    ("pair", "<u2"),  # index of the pair in the stats stage's ``pairs``
    ("instrument_b", "<u2"),  # leg B's instrument (the header's ``instrument`` is leg A)
    ("action", "<i1"),  # SIG_ENTER_LONG, SIG_ENTER_SHORT or SIG_EXIT
    ("side_a", "<i1"),  # leg A's order side: 1 buy, -1 sell
    ("side_b", "<i1"),  # leg B's order side: 1 buy, -1 sell
    ("mode", "<u1"),  # window of the stats: 0 "120closed_aligned", 1 "119+partial_aligned", 2 none (measurement)
    ("beta", "<f8"),  # hedge ratio: OLS slope of ln(A) on ln(B) over the window
    ("z", "<f8"),  # z-score of the latest spread
    ("spread", "<f8"),  # ln(A) - beta * ln(B) of the latest minute
    ("mu", "<f8"),  # mean of the window's spreads
    ("sigma", "<f8"),  # sample standard deviation (n - 1) of the window's spreads
    ("bid_a", "<f8"),  # leg A's best bid at the decision
    ("ask_a", "<f8"),  # leg A's best ask at the decision
    ("bid_b", "<f8"),  # leg B's best bid at the decision
    ("ask_b", "<f8"),  # leg B's best ask at the decision
    ("qty_a", "<f8"),  # leg A's quantity (base units, > 0; the side gives the direction)
    ("qty_b", "<f8"),  # leg B's quantity: dollar-neutral with the hedge ratio (beta x leg A's notional)
    ("pnl_log", "<f8"),  # SIG_EXIT: the trade's paper PnL in log-spread space (0 on entries)
)
"""A pairs-trade decision for the executor (152 bytes); ``ts_event_ms`` is the event time of the tick that caused
it, ``src_seq`` the bar record's ``seq``."""

# ``ORDER.event``: what happened to the order.
EV_SENT = 1
"""The request was written to the venue's socket (``t_sent_ns``)."""
EV_ACK = 2
"""The venue accepted the order (``t_ack_ns``)."""
EV_FILL = 3
"""An execution: ``last_px`` / ``last_qty`` / ``fee``."""
EV_DONE = 4
"""Terminal at the venue: filled, canceled or expired (``status``)."""
EV_REJECT = 5
"""The venue refused the order (``reason``)."""
# 6 is unused: a signal refused locally (rules, risk) creates no order; the journal and status count it.
EV_UNKNOWN = 7
"""The place's outcome is unknown (timeout, lost connection): the executor asks the venue."""
EV_RECONCILED = 8
"""After a restart: the order's state as the venue reports it."""

# ``ORDER.status``: the order's state after the event.
OS_PENDING_NEW, OS_NEW, OS_PARTIALLY_FILLED, OS_FILLED, OS_CANCELED, OS_REJECTED, OS_EXPIRED = range(7)

# ``ORDER.purpose``: why the order exists.
PURPOSE_ENTRY, PURPOSE_EXIT, PURPOSE_REPAIR, PURPOSE_FLATTEN, PURPOSE_MEASURE = range(5)

ORDER = record_dtype(
    ("order_no", "<u8"),  # the executor's order number (journal), unique for the pipeline run
    ("signal_seq", "<u8"),  # ``seq`` of the SIGNAL this order executes (repairs: of the trade they repair)
    ("t_decision_ns", "<i8"),  # monotonic ns at which that signal was published (the decision)
    ("t_sent_ns", "<i8"),  # monotonic ns at which the request was written to the socket (0: not sent)
    ("t_ack_ns", "<i8"),  # monotonic ns at which the venue's ack was read (0: not yet)
    ("t_event_ns", "<i8"),  # monotonic ns at which this event was read
    ("price", "<f8"),  # the order's limit price (0 for market orders)
    ("qty", "<f8"),  # the order's quantity, base units
    ("last_px", "<f8"),  # EV_FILL: this execution's price
    ("last_qty", "<f8"),  # EV_FILL: this execution's quantity
    ("cum_qty", "<f8"),  # quantity filled so far
    ("fee", "<f8"),  # EV_FILL: this execution's fee in the quote asset
    ("position", "<f8"),  # the pair's position in this leg after the event (base units, signed)
    ("target", "<f8"),  # the pair's target position in this leg (base units, signed)
    ("mid", "<f8"),  # the leg's mid at the decision
    ("pair", "<u2"),  # the pair's index in the executor's pairs
    ("reason", "<u2"),  # EV_REJECT: index into the executor's reason table (status JSON ``reason_codes``)
    ("event", "<u1"),  # EV_*
    ("status", "<u1"),  # OS_*
    ("side", "<i1"),  # 1 buy, -1 sell
    ("leg", "<u1"),  # 0: leg A, 1: leg B
    ("purpose", "<u1"),  # PURPOSE_*
)
"""One order event of the executor (184 bytes): the header's ``t_origin_ns`` is the market-data frame behind the
decision, so frame -> decision -> sent -> ack can be read off each record; ``src_seq`` is the signal's ``seq``."""

def sent_and_acked(recs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ORDER records -> (EV_SENT records with both the frame's and the send's time, EV_ACK records with both the
    send's and the ack's time): the samples of frame -> sent (``t_sent_ns - t_origin_ns``) and sent -> ack
    (``t_ack_ns - t_sent_ns``)."""
    sent = recs[(recs["event"] == EV_SENT) & (recs["t_sent_ns"] > 0) & (recs["t_origin_ns"] > 0)]
    acked = recs[(recs["event"] == EV_ACK) & (recs["t_ack_ns"] > 0) & (recs["t_sent_ns"] > 0)]
    return sent, acked


# Flags of market-data records (``flags`` header field).
FLAG_LOCAL_TIME = 1
"""``ts_event_ms`` is the receive time: the venue sent no event time (Binance spot bookTicker)."""
FLAG_FROM_BOOK = 2
"""A BBO derived from the local order book rather than the venue's ticker stream."""
FLAG_RESYNC = 4
"""First record after a (re)connect or book resync: records before it may be missing."""

RECORD_TYPES: dict[str, np.dtype] = {"bbo": BBO, "trade": TRADE, "book": BOOK, "count": COUNT, "ping": PING,
                                     "bar": BAR, "signal": SIGNAL, "order": ORDER}
"""Record types by the name a config uses."""


def dtype_hash(dt: np.dtype) -> int:
    """A 63-bit hash of the dtype's full description (names, formats, offsets, itemsize)."""
    desc = repr((dt.descr, dt.itemsize)).encode()
    return int.from_bytes(hashlib.blake2b(desc, digest_size=8).digest(), "little") >> 1
