"""Fused fast path for ticker frames: raw frame bytes -> validated BBO record in the ring, in one compiled call.

Hand-written scanners: no library parses JSON straight into our ring layout. msgspec (and orjson) build Python
objects first, which on its own costs more than this whole path; they still parse every frame the scanners do not
take. A fused function scans one KuCoin ``trade.ticker`` frame (``kucoin_ticker``) or one Binance ``bookTicker``
frame (``binance_book_ticker``: combined ``{"stream", "data"}`` or raw, spot or USD-M), keys in any order and
whitespace anywhere JSON allows it; looks the symbol up in a hash table built once in Python; converts the decimal
strings to float64 exactly as ``float(str)`` does (correctly rounded, see ``_decimal``); checks what the general
path checks (price and size > 0, bid < ask, sequence above the symbol's last one, no pending FLAG_RESYNC); and
publishes the BBO record through ``feeds.emit.put_bbo`` (``pipeline.ring`` claim / publish), updating the symbol's
last sequence. It returns the record's venue event time in ms (0: receive time, FLAG_LOCAL_TIME) when it published,
or a negative status: the caller then runs the general parser, which counts, refuses and reports as it always did.

The scanners take only what they fully understand: strings of printable ASCII without escapes, numbers without
sign or exponent, no nested values besides the payload object, no duplicate keys of interest, and a closed set of
envelope keys. Anything else is "not handled" (``NOT_HANDLED``), never a guess, so the fast path publishes exactly
the records the general path would, and nothing it would refuse. Decimals: an integer mantissa M <= 2**53 and a
power of ten 10**k with |k| <= 22 are both exact doubles, so M * 10**k or M / 10**k is one correctly rounded IEEE
operation (Clinger's fast path); longer mantissas and larger exponents are not handled (``tests/test_fast_path.py``
checks the result bit for bit against ``float(str)`` and msgspec). Digits are read 8 bytes at a time.

Layout templates: a venue sends every ticker with the same keys in the same order, so when the key-by-key scan
(``_object``) takes a ticker of ours, it also records the frame's layout: the literal bytes between its values
(structure, keys, whitespace) and each value's kind. A later frame whose bytes between values equal those literals
(compared 8 bytes at a time) is the same path through the key-by-key scan, so only its values are parsed, by the
same functions; any other frame goes through the key-by-key scan. A few templates per parser (``TEMPLATES``).

The call from Python costs as much as the scan, so it is cut down too. The fused functions take addresses, not
arrays (unboxing an array argument costs more than the whole scan): ``FastTicker`` keeps every array it hands out
alive (the ring's mapping, the symbol tables, the per-symbol state, scratch) and passes one address, ``ctx``, from
which the function rebuilds its views. Python calls them through ``fastcall``: a METH_FASTCALL builtin generated
here in LLVM IR (public C API only) around a numba ``cfunc``, instead of numba's own argument-boxing wrapper.
Inside, helpers take raw pointers and the small ones are inlined: numba compiles each function on its own, and a
call with array arguments (reference counts, no inlining) costs more than most helpers.
"""

from __future__ import annotations

import ctypes
from array import array
from collections.abc import Iterable, Mapping

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from feeds.emit import W_FRAMES, W_LAT_TS, W_LAT_WALL, W_RECORDS, W_SKEWED, W_SRC_SEQ, W_T_MONO, W_T_WALL, put_bbo
from pipeline.records import BBO, FLAG_LOCAL_TIME
from pipeline.ring import HEADER_BYTES, PUSH_OK, Ring, entry_point

# -- statuses (negative: run the general parser) -------------------------------------------------------------------

NOT_HANDLED = -1
"""Not a frame this scanner takes (another message, layout, value form or key); the general parser decides."""
UNKNOWN_SYMBOL = -2
BLOCKED = -3
"""The symbol's next record must carry FLAG_RESYNC, or a resumed replay skips this frame's records."""
OUT_OF_ORDER = -4
BAD_VALUE = -5
RING_FULL = -6

# -- pointers ------------------------------------------------------------------------------------------------------

_BBO_T = numba.from_dtype(BBO)


@intrinsic
def _ptr(typingctx, buf):
    """The data pointer of a bytes object or an array. Helpers take pointers, not arrays: an array passed from one
    compiled function to another costs reference count calls each way, and keeps the callee from being inlined."""
    if not isinstance(buf, types.Buffer):
        return None
    sig = types.CPointer(buf.dtype)(buf)

    def codegen(context, builder, signature, args):
        return context.make_array(signature.args[0])(context, builder, args[0]).data

    return sig, codegen


def _pointer_to(ty):
    """An intrinsic turning an int64 address into a ``CPointer(ty)`` (for ``numba.carray``)."""

    def impl(typingctx, addr):
        sig = types.CPointer(ty)(types.int64)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return sig, codegen

    return impl


_i64p = intrinsic(_pointer_to(types.int64))
_u64p = intrinsic(_pointer_to(types.uint64))
_f64p = intrinsic(_pointer_to(types.float64))
_u8p = intrinsic(_pointer_to(types.uint8))
_bbop = intrinsic(_pointer_to(_BBO_T))


@intrinsic
def _load8(typingctx, p, i):
    """The 8 bytes at ``p + i`` as a little-endian uint64 (unaligned load; the caller keeps it in bounds)."""
    if not isinstance(p, types.CPointer) or p.dtype != types.uint8:
        return None
    sig = types.uint64(p, types.int64)

    def codegen(context, builder, signature, args):
        addr = builder.gep(args[0], [args[1]])
        return builder.load(builder.bitcast(addr, ir.IntType(64).as_pointer()), align=1)

    return sig, codegen


@intrinsic
def _ctz(typingctx, x):
    """Count of trailing zero bits of a uint64 (64 for 0)."""
    if x != types.uint64:
        return None
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


# ctx words (int64): where everything lives
(C_SEG, C_CAP, C_WORDS, C_SEQS, C_INSTS, C_BLOCKED, C_TAB, C_TABN, C_TAB2, C_TAB2N, C_USDM, C_AFTER, C_FV, C_IV,
 C_REC, C_TPL, C_TLIT, C_TNEXT, C_WORDS_EMIT) = range(19)
CTX_WORDS = 24
SYM_MAX = 32
"""Longest symbol the tables hold (bytes); longer ones take the general path."""
_TAB_COLS = 6  # length, 4 packed words, state index
TEMPLATES = 4
"""Layouts remembered per parser (the oldest is replaced)."""
_MAXV = 24  # values per template
_TPL_COLS = 4 + 3 * _MAXV  # values, seen bits, payload seen bits, then (literal length, kind, slot) per value, last
_LIT = 512  # literal bytes per template
_LIT_COLS = _LIT + 8  # padding: 8-byte loads past a literal's end stay inside the row

# -- bytes -----------------------------------------------------------------------------------------------------

_QUOTE, _BSLASH, _LBRACE, _RBRACE, _COLON, _COMMA, _DOT, _MINUS, _ZERO, _AT = 34, 92, 123, 125, 58, 44, 46, 45, 48, 64

_POW10 = np.array([10.0 ** k for k in range(23)])
"""10**0 .. 10**22: every one an exact double."""
_MANT_MAX = 1 << 53
_SIG_MAX = 18
"""Digits a mantissa holds without overflow (10**18 < 2**63)."""
_UINT_DIGITS = 18
"""Longest integer taken (10**18 - 1 < 2**63 - 1: fits the records' fields without a check)."""

_J = dict(nogil=True, cache=True)
_JI = dict(nogil=True, cache=True, inline="always")
"""Helpers on the template path: inlined (numba does not inline one compiled function into another by itself, and
a call costs more than most of them)."""
_ENTRY = dict(nogil=False, cache=True)
"""The fused functions' numba entry points (the ``fastcall`` fallback): called from Python for well under a
microsecond, where releasing and taking back the GIL would cost 55 ns more (measured). The FASTCALL wrapper keeps
the GIL too."""


@numba.njit(**_JI)
def _skip_ws(p, i, n):
    while i < n:
        c = p[i]
        if c != 32 and c != 10 and c != 13 and c != 9:
            break
        i += 1
    return i


_ONES = np.uint64(0x0101010101010101)
_HIGH = np.uint64(0x8080808080808080)


@numba.njit(**_JI)
def _has_zero(v):
    """Some byte of ``v`` is zero (exact)."""
    return (v - _ONES) & ~v & _HIGH


@numba.njit(**_JI)
def _string_end(p, i, n):
    """``p[i]`` opens a string: index of its closing quote; -1 for an escape, a control or a non-ASCII byte. Skips
    8 plain bytes at a time (none is a quote, a backslash, below 0x20 or from 0x7f on)."""
    if i >= n or p[i] != _QUOTE:
        return -1
    i += 1
    while i + 8 <= n:
        w = _load8(p, i)
        special = (_has_zero(w ^ (_ONES * np.uint64(_QUOTE))) | _has_zero(w ^ (_ONES * np.uint64(_BSLASH)))
                   | _has_zero(w ^ (_ONES * np.uint64(127))) | ((w - _ONES * np.uint64(32)) & ~w & _HIGH) | (w & _HIGH))
        if special != np.uint64(0):
            break
        i += 8
    while i < n:
        c = p[i]
        if c == _QUOTE:
            return i
        if c < 32 or c > 126 or c == _BSLASH:
            return -1
        i += 1
    return -1


@numba.njit(**_JI)
def _low_bytes(w, k):
    """The low ``k`` (0..8) bytes of ``w``."""
    if k >= 8:
        return w
    return w & ((np.uint64(1) << np.uint64(8 * k)) - np.uint64(1))


@numba.njit(**_JI)
def _word(p, s, e, n):
    """Up to 8 bytes of ``p[s:e]`` (``e <= n``) as a little-endian integer; printable ASCII: never negative."""
    k = min(e - s, 8)
    if k <= 0:
        return np.int64(0)
    if s + 8 <= n:
        return np.int64(_low_bytes(_load8(p, s), k))
    w = np.int64(0)
    for j in range(k):
        w |= np.int64(p[s + j]) << (8 * j)
    return w


@numba.njit(**_JI)
def _eq(a, ai, b, bi, k, n):
    """``a[ai:ai+k] == b[bi:bi+k]``, where ``ai + k <= n`` (the length of ``a``) and ``b`` has 8 bytes to spare."""
    j = 0
    while j + 8 <= k:
        if _load8(a, ai + j) != _load8(b, bi + j):
            return False
        j += 8
    if j == k:
        return True
    if ai + j + 8 <= n:
        return _low_bytes(_load8(a, ai + j) ^ _load8(b, bi + j), k - j) == np.uint64(0)
    while j < k:
        if a[ai + j] != b[bi + j]:
            return False
        j += 1
    return True


@numba.njit(**_JI)
def _same(p, s, e, lit, k):
    """``p[s:e]`` equals the ``k`` bytes at ``lit``."""
    if e - s != k:
        return False
    for j in range(k):
        if p[s + j] != lit[j]:
            return False
    return True


_D0 = np.uint64(0x3030303030303030)  # "0" in every byte
_HI = np.uint64(0xF0F0F0F0F0F0F0F0)
_D6 = np.uint64(0x0606060606060606)
_POW10I = np.array([10 ** k for k in range(9)], dtype=np.int64)


@numba.njit(**_JI)
def _eight(v):
    """The number written by 8 digit values (0-9, the first in the lowest byte) of ``v``."""
    v = ((v & np.uint64(0x0F0F0F0F0F0F0F0F)) * np.uint64(2561)) >> np.uint64(8)
    v = ((v & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(6553601)) >> np.uint64(16)
    return np.int64(((v & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(42949672960001)) >> np.uint64(32))


@numba.njit(**_JI)
def _digits(p, i, n, m):
    """Decimal digits from ``p[i]`` appended to ``m``: (m, index of the first non-digit); overflows past 18.
    Eight bytes at a time: a byte is a digit when its high nibble is 3 before and after adding 6."""
    while i + 8 <= n:
        w = _load8(p, i)
        nondigit = ((w & _HI) ^ _D0) | (((w + _D6) & _HI) ^ _D0)  # carries only pass beyond a non-digit
        if nondigit == np.uint64(0):
            m = m * 100_000_000 + _eight(w - _D0)
            i += 8
            continue
        k = np.int64(_ctz(nondigit) >> np.uint64(3))  # digits before the first non-digit
        if k > 0:  # those k digits, moved up so that the bytes below read as leading zeros
            v = _low_bytes(w - _D0, k) << np.uint64(8 * (8 - k))  # no borrow reaches the k low bytes
            m = m * _POW10I[k] + _eight(v)
        return m, i + k
    while i < n:
        c = np.int64(p[i]) - _ZERO
        if c < 0 or c > 9:
            break
        m = m * 10 + c
        i += 1
    return m, i


@numba.njit(**_JI)
def _decimal(p, i, n):
    """A decimal ``(0|[1-9][0-9]*)(.[0-9]+)?`` at ``p[i]``: (value, index after it), correctly rounded; index -1
    when it is not one, or needs more than 53 bits of mantissa or a power of ten past 22."""
    if i >= n:
        return 0.0, -1
    start = i
    c = np.int64(p[i]) - _ZERO
    m = np.int64(0)
    if c == 0:
        i += 1
    elif 0 < c <= 9:
        m, i = _digits(p, i, n, m)
    else:
        return 0.0, -1
    nf = 0
    if i < n and p[i] == _DOT:
        m, j = _digits(p, i + 1, n, m)
        nf = j - i - 1
        if nf == 0:
            return 0.0, -1
        i = j
    if i - start - (nf > 0) > _SIG_MAX:  # m may have overflowed: count the digits with care
        return _decimal_long(p, start, n)
    if m == 0:
        return 0.0, i
    e = -nf
    while m > _MANT_MAX and m % 10 == 0:  # a long mantissa's trailing zeros
        m //= 10
        e += 1
    if m > _MANT_MAX:
        return 0.0, -1
    if e >= 0:  # trailing zeros stripped past the point
        return float(m) * _POW10[e], i
    return float(m) / _POW10[-e], i  # -18 <= e < 0


@numba.njit(**_J)
def _decimal_long(p, i, n):
    """``_decimal`` past 18 digits: leading zeros, and zeros past 18 significant digits, only move the power of
    ten; a non-zero digit past 18 significant ones is not handled."""
    m = np.int64(0)
    nd = 0  # digits in m from its first non-zero one
    e = 0  # the power of ten of m's last digit
    frac = False
    while i < n:
        c = np.int64(p[i]) - _ZERO
        if c == _DOT - _ZERO and not frac:
            frac = True
            i += 1
            continue
        if c < 0 or c > 9:
            break
        if nd < _SIG_MAX:
            m = m * 10 + c
            if frac:
                e -= 1
            if m != 0:
                nd += 1
        elif c != 0:
            return 0.0, -1
        elif not frac:
            e += 1
        i += 1
    if m == 0:
        return 0.0, i
    while m > _MANT_MAX and m % 10 == 0:
        m //= 10
        e += 1
    if m > _MANT_MAX or e < -22 or e > 22:
        return 0.0, -1
    if e >= 0:
        return float(m) * _POW10[e], i
    return float(m) / _POW10[-e], i


@numba.njit(**_JI)
def _uint(p, i, n):
    """An integer ``0|[1-9][0-9]*`` of at most 18 digits at ``p[i]``: (value, index after it); index -1 if not."""
    if i >= n:
        return np.int64(0), -1
    c = np.int64(p[i]) - _ZERO
    if c == 0:
        return np.int64(0), i + 1
    if c < 0 or c > 9:
        return np.int64(0), -1
    v, j = _digits(p, i, n, np.int64(0))
    if j - i > _UINT_DIGITS:
        return np.int64(0), -1
    return v, j


@numba.njit(**_JI)
def _decimal_value(p, i, n):
    """A decimal as a JSON string or a bare JSON number: (value, index after it, or -1)."""
    if i < n and p[i] == _QUOTE:
        v, j = _decimal(p, i + 1, n)
        if j < 0 or j >= n or p[j] != _QUOTE:
            return v, -1
        return v, j + 1
    return _decimal(p, i, n)


@numba.njit(**_JI)
def _uint_value(p, i, n):
    """An integer as a JSON string or a bare JSON number: (value, index after it, or -1)."""
    if i < n and p[i] == _QUOTE:
        v, j = _uint(p, i + 1, n)
        if j < 0 or j >= n or p[j] != _QUOTE:
            return v, -1
        return v, j + 1
    return _uint(p, i, n)


_TRUE, _FALSE, _NULL = (np.frombuffer(w, dtype=np.uint8) for w in (b"true", b"false", b"null"))


@numba.njit(**_JI)
def _skip_value(p, i, n):
    """Skip a value the scanners ignore: index after it, or -1 unless it is a plain string, a decimal of at most
    18 digits with an optional minus (no exponent), true, false or null."""
    if i >= n:
        return -1
    c = p[i]
    if c == _QUOTE:
        e = _string_end(p, i, n)
        return e + 1 if e >= 0 else -1
    if c == 116:
        return i + 4 if _same(p, i, min(i + 4, n), _ptr(_TRUE), 4) else -1
    if c == 102:
        return i + 5 if _same(p, i, min(i + 5, n), _ptr(_FALSE), 5) else -1
    if c == 110:
        return i + 4 if _same(p, i, min(i + 4, n), _ptr(_NULL), 4) else -1
    if c == _MINUS:
        i += 1
    start = i
    _, j = _uint(p, i, n)
    if j < 0:
        return -1
    if j < n and p[j] == _DOT:
        k = j + 1
        while k < n and 48 <= p[k] <= 57:
            k += 1
        if k == j + 1 or k - start > _UINT_DIGITS + 1:
            return -1
        j = k
    return j


# -- key specs: one row per key of interest ------------------------------------------------------------------------

K_DEC, K_UINT, K_STR, K_SKIP, K_OBJ, K_REJECT = 1, 2, 3, 4, 5, 6
"""Kinds: a decimal into fv[slot], an integer into iv[slot], a string's span into iv[slot:slot+2] (the characters
between the quotes), an ignored value, the payload object, a key whose presence sends the frame to the general
parser."""


def _spec(*rows: tuple[bytes, int, int]) -> np.ndarray:
    """Key spec rows (length, first 8 bytes, next 8 bytes, kind, slot); keys of at most 16 bytes."""
    out = np.zeros((len(rows), 5), dtype=np.int64)
    for r, (key, kind, slot) in enumerate(rows):
        assert len(key) <= 16 and len(rows) <= 62
        out[r] = (len(key), int.from_bytes(key[:8], "little"), int.from_bytes(key[8:16], "little"), kind, slot)
    return out


@numba.njit(**_J)
def _value(p, i, n, kind, slot, fv, iv):
    """Parse the value at ``p[i]`` as ``kind`` into its slot (``fv``, ``iv``: pointers): index after it, or -1."""
    if kind == K_DEC:
        v, j = _decimal_value(p, i, n)
        fv[slot] = v
        return j
    if kind == K_UINT:
        u, j = _uint_value(p, i, n)
        iv[slot] = u
        return j
    if kind == K_STR:
        e = _string_end(p, i, n)
        iv[slot] = i + 1
        iv[slot + 1] = e
        return e + 1 if e >= 0 else -1
    if kind == K_SKIP:
        return _skip_value(p, i, n)
    return -1


@numba.njit(**_J)
def _field(p, i, n, spec, nspec, ks, ke, fv, iv):
    """The value at ``p[i]`` of key ``p[ks:ke]``, by the ``nspec`` rows at ``spec`` (keys not in them:
    ``K_SKIP``): (index after the value or -1; the index of the payload object for ``K_OBJ``), the row's bit,
    kind and slot."""
    klen = ke - ks
    row = -1
    if klen <= 16:
        w0 = _word(p, ks, ke, n)
        w1 = _word(p, ks + 8, ke, n)
        for r in range(nspec):
            if spec[5 * r] == klen and spec[5 * r + 1] == w0 and spec[5 * r + 2] == w1:
                row = r
                break
    if row < 0:
        return _skip_value(p, i, n), np.int64(0), K_SKIP, 0
    kind = spec[5 * row + 3]
    slot = spec[5 * row + 4]
    bit = np.int64(1) << row
    if kind == K_OBJ:
        return i, bit, kind, slot
    return _value(p, i, n, kind, slot, fv, iv), bit, kind, slot


@numba.njit(**_J)
def _object(p, i, n, spec, nspec, inner, ninner, fv, iv, rec):
    """Key-by-key scan of the object at ``p[i]`` by the ``nspec`` key rows at ``spec``; the members of its payload
    object (a ``K_OBJ`` key) by the ``ninner`` rows at ``inner``, which has none. Each value's (start, end, kind,
    slot) goes to ``rec`` (the layout, ``_MAXV`` rows of 4). Returns (index after the object or -1, bits of the
    ``spec`` rows seen, bits of the ``inner`` rows seen, values)."""
    seen = np.int64(0)
    seen_in = np.int64(0)
    nrec = 0
    if i >= n or p[i] != _LBRACE:
        return -1, seen, seen_in, nrec
    i = _skip_ws(p, i + 1, n)
    if i < n and p[i] == _RBRACE:
        return i + 1, seen, seen_in, nrec
    depth = 0
    while True:
        ks = i + 1
        ke = _string_end(p, i, n)
        if ke < 0:
            return -1, seen, seen_in, nrec
        i = _skip_ws(p, ke + 1, n)
        if i >= n or p[i] != _COLON:
            return -1, seen, seen_in, nrec
        i = _skip_ws(p, i + 1, n)
        if depth == 0:
            j, bit, kind, slot = _field(p, i, n, spec, nspec, ks, ke, fv, iv)
        else:
            j, bit, kind, slot = _field(p, i, n, inner, ninner, ks, ke, fv, iv)
        if depth == 0:
            if seen & bit:  # a duplicate key of interest
                return -1, seen, seen_in, nrec
            seen |= bit
        else:
            if seen_in & bit:
                return -1, seen, seen_in, nrec
            seen_in |= bit
        if kind == K_OBJ:
            if depth != 0 or i >= n or p[i] != _LBRACE:
                return -1, seen, seen_in, nrec
            i = _skip_ws(p, i + 1, n)
            if i < n and p[i] == _RBRACE:
                j = i + 1  # an empty payload
            else:
                depth = 1
                continue
        elif j >= 0:
            if nrec < _MAXV:
                rec[4 * nrec] = i
                rec[4 * nrec + 1] = j
                rec[4 * nrec + 2] = kind
                rec[4 * nrec + 3] = slot
            nrec += 1
        if j < 0:
            return -1, seen, seen_in, nrec
        i = _skip_ws(p, j, n)
        while True:  # after a value: a comma, or the end of the payload and/or of the object
            if i >= n:
                return -1, seen, seen_in, nrec
            c = p[i]
            if c == _COMMA:
                i = _skip_ws(p, i + 1, n)
                break
            if c != _RBRACE:
                return -1, seen, seen_in, nrec
            if depth == 0:
                return i + 1, seen, seen_in, nrec
            depth = 0
            i = _skip_ws(p, i + 1, n)


# -- layout templates ----------------------------------------------------------------------------------------------


@numba.njit(**_J)
def _match(p, n, tpl, t, lit, fv, iv):
    """Frame ``p[:n]`` has the layout of template ``t`` (``tpl``: the rows, ``lit``: its literal bytes): its
    literals match and its values parse (into ``fv`` / ``iv``)."""
    row = t * _TPL_COLS
    nv = tpl[row]
    i = 0
    lo = 0
    for v in range(nv + 1):
        k = tpl[row + 3 + 3 * v]
        if i + k > n or not _eq(p, i, lit, lo, k, n):
            return False
        i += k
        lo += k
        if v == nv:
            return i == n
        i = _value(p, i, n, tpl[row + 4 + 3 * v], tpl[row + 5 + 3 * v], fv, iv)
        if i < 0:
            return False
    return False


@numba.njit(**_J)
def _learn(p, n, ctx, rec, nrec, seen, seen_in):
    """Remember the layout of frame ``p[:n]`` (its values' spans: ``nrec`` rows at ``rec``), replacing the oldest
    template."""
    if nrec > _MAXV:
        return
    total = n
    for v in range(nrec):
        total -= rec[4 * v + 1] - rec[4 * v]
    if total > _LIT:
        return
    t = ctx[C_TNEXT] % TEMPLATES
    tpl = _i64p(ctx[C_TPL] + 8 * t * _TPL_COLS)
    lit = _u8p(ctx[C_TLIT] + t * _LIT_COLS)
    tpl[0] = 0  # invalid while it is rewritten
    prev = 0
    lo = 0
    for v in range(nrec + 1):
        start = rec[4 * v] if v < nrec else n
        for j in range(prev, start):
            lit[lo] = p[j]
            lo += 1
        tpl[3 + 3 * v] = start - prev
        if v < nrec:
            tpl[4 + 3 * v] = rec[4 * v + 2]
            tpl[5 + 3 * v] = rec[4 * v + 3]
            prev = rec[4 * v + 1]
    tpl[1] = seen
    tpl[2] = seen_in
    tpl[0] = nrec
    ctx[C_TNEXT] += 1


@numba.njit(**_J)
def _scan(p, n, ctx, spec, nspec, inner, ninner, fv, iv, rec):
    """Scan frame ``p[:n]``, by a template or key by key: (taken, seen bits, payload seen bits, values recorded:
    -1 when a template took it)."""
    tpl = _i64p(ctx[C_TPL])
    for t in range(TEMPLATES):
        if tpl[t * _TPL_COLS] > 0 and _match(p, n, tpl, t, _u8p(ctx[C_TLIT] + t * _LIT_COLS), fv, iv):
            return True, tpl[t * _TPL_COLS + 1], tpl[t * _TPL_COLS + 2], -1
    end, seen, seen_in, nrec = _object(p, _skip_ws(p, 0, n), n, spec, nspec, inner, ninner, fv, iv, rec)
    return end >= 0 and _skip_ws(p, end, n) == n, seen, seen_in, nrec


# -- symbol tables: open addressing on the packed bytes ----------------------------------------------------------


@numba.njit(**_JI)
def _sym_hash(w0, w1, w2, w3, ln):
    h = np.uint64(ln) * np.uint64(0x9E3779B97F4A7C15)
    for w in (w0, w1, w2, w3):
        h = (h ^ np.uint64(w)) * np.uint64(0x100000001B3)
        h ^= h >> np.uint64(29)
    return h


@numba.njit(**_JI)
def _lookup(p, s, e, n, tab, size):
    """State index of the symbol ``p[s:e]`` in the table of ``size`` rows at ``tab``, or -1."""
    ln = e - s
    if ln <= 0 or ln > SYM_MAX:
        return -1
    w0 = _word(p, s, e, n)
    w1 = _word(p, s + 8, e, n)
    w2 = _word(p, s + 16, e, n)
    w3 = _word(p, s + 24, e, n)
    mask = size - 1
    k = np.int64(_sym_hash(w0, w1, w2, w3, ln) & np.uint64(mask))
    while True:
        r = _TAB_COLS * k
        if tab[r] == 0:
            return -1
        if tab[r] == ln and tab[r + 1] == w0 and tab[r + 2] == w1 and tab[r + 3] == w2 and tab[r + 4] == w3:
            return tab[r + 5]
        k = (k + 1) & mask


def _plain(key: bytes) -> bool:
    return 0 < len(key) <= SYM_MAX and all(32 <= c <= 126 and c not in (_QUOTE, _BSLASH) for c in key)


def symbol_table(keys: Mapping[bytes, int]) -> np.ndarray:
    """A lookup table (int64 rows: length, 4 packed words, state index) of ``keys``: symbol bytes -> state index.
    Keys the scanners cannot match (longer than ``SYM_MAX``, not plain printable ASCII) are left out."""
    keys = {k: v for k, v in keys.items() if _plain(k)}
    size = 4
    while size < 2 * len(keys) + 2:
        size *= 2
    tab = np.zeros((size, _TAB_COLS), dtype=np.int64)
    for key, state in keys.items():
        words = [int.from_bytes(key[o:o + 8], "little") for o in (0, 8, 16, 24)]
        k = int(_sym_hash(*words, len(key))) & (size - 1)
        while tab[k, 0]:
            k = (k + 1) & (size - 1)
        tab[k] = (len(key), *words, state)
    return tab


# -- the fused functions -------------------------------------------------------------------------------------------


@numba.njit(**_J)
def _publish(ctx, st, src_seq, t_mono, t_wall_ns, ts_ms, venue_seq, bid, bid_qty, ask, ask_qty):
    """Check and publish the BBO of state ``st`` as ``Emitter.frame`` + ``Emitter.bbo`` would, the emitter's
    ``words`` updated as they update them; returns the record's venue time (0 for receive time) or a negative
    status, with nothing written."""
    if _i64p(ctx[C_BLOCKED])[st]:
        return BLOCKED
    seqs = _i64p(ctx[C_SEQS])
    if venue_seq <= seqs[st]:
        return OUT_OF_ORDER
    if not (bid > 0.0 and bid < ask and bid_qty > 0.0 and ask_qty > 0.0):  # all finite: see _decimal
        return BAD_VALUE
    flags = 0
    ts = ts_ms
    t_wall_ms = t_wall_ns // 1_000_000
    if ts_ms <= 0:
        ts = t_wall_ms
        flags = FLAG_LOCAL_TIME
    seg = ctx[C_SEG]
    cap = ctx[C_CAP]
    hdr = numba.carray(_u64p(seg), (HEADER_BYTES // 8,))
    data = numba.carray(_u64p(seg + HEADER_BYTES), (cap, ctx[C_WORDS]))
    slots = numba.carray(_bbop(seg + HEADER_BYTES), (cap,))
    inst = _i64p(ctx[C_INSTS])[st]
    if put_bbo(hdr, data, slots, src_seq, t_mono, ts, inst, flags, bid, bid_qty, ask, ask_qty,
               venue_seq) != PUSH_OK:
        return RING_FULL
    seqs[st] = venue_seq
    w = _i64p(ctx[C_WORDS_EMIT])  # what Emitter.frame() and Emitter._stamp() keep, inlined
    w[W_SRC_SEQ] = src_seq
    w[W_FRAMES] += 1
    w[W_RECORDS] += 1
    w[W_T_MONO] = t_mono
    w[W_T_WALL] = t_wall_ns
    if ts_ms > 0:
        w[W_LAT_WALL] = t_wall_ns
        w[W_LAT_TS] = ts_ms
        if ts_ms > t_wall_ms:
            w[W_SKEWED] += 1
        return ts_ms
    return 0


_KU_TOP = _spec((b"type", K_STR, 0), (b"topic", K_STR, 2), (b"subject", K_STR, 4), (b"data", K_OBJ, 0),
                (b"id", K_REJECT, 0), (b"code", K_REJECT, 0))
_KU_DATA = _spec((b"sequence", K_UINT, 6), (b"bestBid", K_DEC, 0), (b"bestBidSize", K_DEC, 1),
                 (b"bestAsk", K_DEC, 2), (b"bestAskSize", K_DEC, 3), (b"time", K_UINT, 7))
_KU_NEED, _KU_NEED_DATA, _KU_TIME = 0b1011, 0b11111, 0b100000
_MESSAGE = np.frombuffer(b"message", dtype=np.uint8)
_TICKER_TOPIC = np.frombuffer(b"/market/ticker:", dtype=np.uint8)


@numba.njit(**_J)
def _kucoin(p, n, ctx_addr, t_mono, t_wall_ns):
    """A KuCoin ``trade.ticker`` frame (``n`` bytes at ``p``) -> its BBO record published (see the module
    docstring). ``ctx_addr``: ``FastTicker.addr``; ``t_mono``: the frame's monotonic receive time (ns);
    ``t_wall_ns``: its wall-clock receive time (ns). The frame's number is the emitter's next ``src_seq``."""
    ctx = _i64p(ctx_addr)
    src_seq = _i64p(ctx[C_WORDS_EMIT])[W_SRC_SEQ] + 1
    if src_seq <= ctx[C_AFTER]:
        return BLOCKED
    fv = _f64p(ctx[C_FV])
    iv = _i64p(ctx[C_IV])
    rec = _i64p(ctx[C_REC])
    ok, seen, seen_in, nrec = _scan(p, n, ctx, _ptr(_KU_TOP), _KU_TOP.shape[0], _ptr(_KU_DATA),
                                    _KU_DATA.shape[0], fv, iv, rec)
    if not ok or seen & _KU_NEED != _KU_NEED or seen_in & _KU_NEED_DATA != _KU_NEED_DATA:
        return NOT_HANDLED
    if not _same(p, iv[0], iv[1], _ptr(_MESSAGE), _MESSAGE.shape[0]):
        return NOT_HANDLED
    s, e = iv[2], iv[3]
    k = _TICKER_TOPIC.shape[0]
    if e - s <= k or not _same(p, s, s + k, _ptr(_TICKER_TOPIC), k):
        return NOT_HANDLED
    st = _lookup(p, s + k, e, n, _i64p(ctx[C_TAB]), ctx[C_TABN])
    if st < 0:
        return UNKNOWN_SYMBOL
    if nrec >= 0:
        _learn(p, n, ctx, rec, nrec, seen, seen_in)
    return _publish(ctx, st, src_seq, t_mono, t_wall_ns, iv[7] if seen_in & _KU_TIME else 0, iv[6],
                    fv[0], fv[1], fv[2], fv[3])


_BN_TOP = _spec((b"stream", K_STR, 0), (b"data", K_OBJ, 0), (b"e", K_STR, 2), (b"s", K_STR, 4),
                (b"u", K_UINT, 6), (b"E", K_UINT, 7), (b"b", K_DEC, 0), (b"B", K_DEC, 1), (b"a", K_DEC, 2),
                (b"A", K_DEC, 3), (b"id", K_REJECT, 0), (b"result", K_REJECT, 0), (b"code", K_REJECT, 0),
                (b"msg", K_REJECT, 0), (b"error", K_REJECT, 0))
_BN_DATA = _spec((b"u", K_UINT, 6), (b"E", K_UINT, 7), (b"b", K_DEC, 0), (b"B", K_DEC, 1), (b"a", K_DEC, 2),
                 (b"A", K_DEC, 3))
_BN_STREAM, _BN_PAYLOAD, _BN_E, _BN_S, _BN_TOP_FIELDS, _BN_TOP_TIME = 1, 2, 4, 8, 0b1111010000, 0b100000
_BN_DATA_FIELDS, _BN_DATA_TIME = 0b111101, 0b10
_BOOK_TICKER = np.frombuffer(b"bookTicker", dtype=np.uint8)


@numba.njit(**_J)
def _binance(p, n, ctx_addr, t_mono, t_wall_ns):
    """A Binance ``bookTicker`` frame (``n`` bytes at ``p``; combined-stream or raw) -> its BBO record published
    (see ``_kucoin``). USD-M (``ctx[C_USDM]``) takes the event time ``E``; spot has none (receive time)."""
    ctx = _i64p(ctx_addr)
    src_seq = _i64p(ctx[C_WORDS_EMIT])[W_SRC_SEQ] + 1
    if src_seq <= ctx[C_AFTER]:
        return BLOCKED
    fv = _f64p(ctx[C_FV])
    iv = _i64p(ctx[C_IV])
    rec = _i64p(ctx[C_REC])
    ok, seen, seen_in, nrec = _scan(p, n, ctx, _ptr(_BN_TOP), _BN_TOP.shape[0], _ptr(_BN_DATA),
                                    _BN_DATA.shape[0], fv, iv, rec)
    if not ok:
        return NOT_HANDLED
    if seen & _BN_STREAM:  # combined stream: "<symbol lower case>@bookTicker" and the event in "data"
        if not seen & _BN_PAYLOAD or seen & _BN_TOP_FIELDS:
            return NOT_HANDLED
        fields, time_bit = seen_in & _BN_DATA_FIELDS == _BN_DATA_FIELDS, seen_in & _BN_DATA_TIME
        s, e = iv[0], iv[1]
        at = s
        while at < e and p[at] != _AT:
            at += 1
        if not _same(p, at + 1, e, _ptr(_BOOK_TICKER), _BOOK_TICKER.shape[0]):
            return NOT_HANDLED
        tab, size = _i64p(ctx[C_TAB2]), ctx[C_TAB2N]
        e = at
    else:  # a raw event: dispatched on "s" (and "e", which spot bookTicker lacks)
        if seen & _BN_PAYLOAD or not seen & _BN_S:
            return NOT_HANDLED
        if seen & _BN_E and not _same(p, iv[2], iv[3], _ptr(_BOOK_TICKER), _BOOK_TICKER.shape[0]):
            return NOT_HANDLED
        fields, time_bit = seen & _BN_TOP_FIELDS == _BN_TOP_FIELDS, seen & _BN_TOP_TIME
        s, e = iv[4], iv[5]
        tab, size = _i64p(ctx[C_TAB]), ctx[C_TABN]
    usdm = ctx[C_USDM] != 0
    if not fields or (usdm and not time_bit):
        return NOT_HANDLED
    st = _lookup(p, s, e, n, tab, size)
    if st < 0:
        return UNKNOWN_SYMBOL
    if nrec >= 0:
        _learn(p, n, ctx, rec, nrec, seen, seen_in)
    return _publish(ctx, st, src_seq, t_mono, t_wall_ns, iv[7] if usdm else 0, iv[6], fv[0], fv[1], fv[2], fv[3])


@numba.njit(**_ENTRY)
def kucoin_ticker(buf, ctx_addr, t_mono, t_wall_ns):
    """``_kucoin`` of a bytes object: what Python calls (through ``FastTicker.fn``)."""
    return _kucoin(_ptr(buf), len(buf), ctx_addr, t_mono, t_wall_ns)


@numba.njit(**_ENTRY)
def binance_book_ticker(buf, ctx_addr, t_mono, t_wall_ns):
    """``_binance`` of a bytes object: what Python calls (through ``FastTicker.fn``)."""
    return _binance(_ptr(buf), len(buf), ctx_addr, t_mono, t_wall_ns)


# -- a cheaper call from Python ------------------------------------------------------------------------------------


def _kucoin_c(p, n, ctx_addr, t_mono, t_wall_ns):
    return _kucoin(p, n, ctx_addr, t_mono, t_wall_ns)


def _binance_c(p, n, ctx_addr, t_mono, t_wall_ns):
    return _binance(p, n, ctx_addr, t_mono, t_wall_ns)


_C_TWINS = {kucoin_ticker: _kucoin_c, binance_book_ticker: _binance_c}
_C_SIG = types.int64(types.CPointer(types.uint8), types.int64, types.int64, types.int64, types.int64)
_N_INTS = len(_C_SIG.args) - 2
"""Int arguments after the frame: ctx_addr, t_mono, t_wall_ns."""
_METH_FASTCALL = 0x0080
_fastcalls: dict = {}


class _MethodDef(ctypes.Structure):
    _fields_ = (("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p), ("ml_flags", ctypes.c_int),
                ("ml_doc", ctypes.c_char_p))


def _build_fastcall(fn):
    """A builtin function ``f(frame, ctx_addr, t_mono, t_wall_ns)`` calling the C twin of fused function
    ``fn`` (a numba ``cfunc``) through a METH_FASTCALL wrapper written here in LLVM IR: the frame's bytes are taken
    with ``PyBytes_AsString`` / ``PyBytes_Size`` and the ints with ``PyLong_AsLong``, where numba's own wrapper
    builds an argument tuple, takes the bytes through the buffer protocol into a heap-allocated meminfo and reads
    each int through ``PyLong_AsLongLong`` (a byte-array conversion for ints past 2**30): 0.25 µs a call less here
    (measured). Anything but a bytes object, or a bad int, gives ``NOT_HANDLED`` (never an exception)."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target

    c = numba.cfunc(_C_SIG, cache=True)(_C_TWINS[fn])
    api = ctypes.pythonapi

    def addr(name: str) -> int:
        return ctypes.cast(getattr(api, name), ctypes.c_void_p).value

    i64 = ir.IntType(64)
    obj = ir.IntType(8).as_pointer()
    module = ir.Module(name=f"lowlat_fastcall_{fn.__name__}")
    wrapper = ir.Function(module, ir.FunctionType(obj, [obj, obj.as_pointer(), i64]), name=module.name)
    _, args, nargs = wrapper.args
    b = ir.IRBuilder(wrapper.append_basic_block("entry"))

    def call(name_or_addr, ret, argtys, *vals):
        a = addr(name_or_addr) if isinstance(name_or_addr, str) else name_or_addr
        fp = b.inttoptr(ir.Constant(i64, a), ir.FunctionType(ret, argtys).as_pointer())
        return b.call(fp, vals)

    not_handled = wrapper.append_basic_block("not_handled")
    go = wrapper.append_basic_block("go")
    b.cbranch(b.icmp_signed("==", nargs, ir.Constant(i64, 1 + _N_INTS)), go, not_handled)
    b.position_at_end(go)
    frame = b.load(args)
    typ = b.load(b.bitcast(b.gep(frame, [ir.Constant(i64, 8)]), obj.as_pointer()))  # ob_type
    bytes_type = ctypes.addressof(ctypes.c_char.in_dll(api, "PyBytes_Type"))
    is_bytes = wrapper.append_basic_block("is_bytes")
    b.cbranch(b.icmp_unsigned("==", b.ptrtoint(typ, i64), ir.Constant(i64, bytes_type)), is_bytes, not_handled)
    b.position_at_end(is_bytes)
    data = call("PyBytes_AsString", obj, [obj], frame)
    size = call("PyBytes_Size", i64, [obj], frame)
    ints = [call("PyLong_AsLong", i64, [obj], b.load(b.gep(args, [ir.Constant(i64, k)])))
            for k in range(1, 1 + _N_INTS)]
    minus = ir.Constant(i64, -1)
    suspect = b.icmp_signed("==", ints[0], minus)
    for v in ints[1:]:
        suspect = b.or_(suspect, b.icmp_signed("==", v, minus))
    check, run = wrapper.append_basic_block("check"), wrapper.append_basic_block("run")
    b.cbranch(suspect, check, run)
    b.position_at_end(check)  # -1 is a value, or an error
    failed = wrapper.append_basic_block("failed")
    err = call("PyErr_Occurred", obj, [])
    b.cbranch(b.icmp_unsigned("!=", b.ptrtoint(err, i64), ir.Constant(i64, 0)), failed, run)
    b.position_at_end(failed)
    call("PyErr_Clear", ir.VoidType(), [])
    b.branch(not_handled)
    b.position_at_end(run)
    status = call(c.address, i64, [obj, i64] + [i64] * _N_INTS, data, size, *ints)
    b.ret(call("PyLong_FromLong", obj, [i64], status))
    b.position_at_end(not_handled)
    b.ret(call("PyLong_FromLong", obj, [i64], ir.Constant(i64, NOT_HANDLED)))

    with global_compiler_lock:
        library = cpu_target.target_context.codegen().create_library(module.name)
        library.add_ir_module(module)
        library.finalize()
    method = _MethodDef(fn.__name__.encode(), library.get_pointer_to_function(wrapper.name), _METH_FASTCALL, None)
    new = api.PyCFunction_NewEx
    new.restype, new.argtypes = ctypes.py_object, (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
    f = new(ctypes.addressof(method), None, None)
    _fastcalls[fn] = (f, method, library, c)  # the method table and the code live as long as the process
    return f


def numba_call(fn):
    """Fused function ``fn`` through numba's compiled entry point, for bytes only (numba would misread a strided
    buffer): the fallback of ``fastcall``, the same statuses."""
    ep = entry_point(fn, b"", 0, 0, 0)

    def call(frame, ctx_addr: int, t_mono: int, t_wall_ns: int) -> int:
        return ep(frame, ctx_addr, t_mono, t_wall_ns) if type(frame) is bytes else NOT_HANDLED

    return call


def fastcall(fn):
    """The cheapest callable of fused function ``fn``: ``f(frame, ctx_addr, t_mono, t_wall_ns)`` ->
    status, ``NOT_HANDLED`` for anything but a bytes frame and ints. The FASTCALL wrapper, or ``numba_call`` where
    the wrapper cannot be built."""
    entry = _fastcalls.get(fn)
    if entry is None:
        try:
            return _build_fastcall(fn)
        except Exception:  # e.g. a Python whose C API the wrapper does not fit
            _fastcalls[fn] = entry = (numba_call(fn),)
    return entry[0]


# -- binding -------------------------------------------------------------------------------------------------------


class FastTicker:
    """A fused scanner bound to one parser's symbols and one bbo ring; keeps alive everything ``ctx`` points to.

    ``states[k]`` is the instrument id of state k; ``tables`` one or two mappings symbol bytes -> state (KuCoin:
    the topic's symbol; Binance: ``s`` of raw events, then the lower-case stream prefix). ``seqs[k]`` is state k's
    last venue sequence (-1: none yet), shared with the general parser. ``after``: frames up to this number are not
    taken (a resumed replay skips their records). ``words``: the emitter's ``words`` (``feeds.emit.W_*``: frame
    number, counters, receive times), updated in place on every frame taken."""

    def __init__(self, fn, ring: Ring, states: Iterable[int], tables: list[Mapping[bytes, int]], words: array,
                 usdm: bool = False, after: int = 0) -> None:
        self.ring = ring
        self.words = words  # held, as everything ctx points to
        self.seg = ring.seg  # held: the mapping stays while we point into it
        insts = list(states)
        self.insts = np.array(insts, dtype=np.int64).reshape(-1)
        self.seqs = np.full(max(1, len(insts)), -1, dtype=np.int64)
        self.blocked = np.zeros(max(1, len(insts)), dtype=np.int64)
        self.tabs = [symbol_table(t) for t in tables]
        if len(self.tabs) < 2:
            self.tabs.append(self.tabs[0])
        self.fv = np.zeros(8, dtype=np.float64)
        self.iv = np.zeros(16, dtype=np.int64)
        self.rec = np.zeros((_MAXV, 4), dtype=np.int64)
        self.tpl = np.zeros((TEMPLATES, _TPL_COLS), dtype=np.int64)
        self.tlit = np.zeros((TEMPLATES, _LIT_COLS), dtype=np.uint8)
        self.ctx = c = np.zeros(CTX_WORDS, dtype=np.int64)
        c[C_SEG], c[C_CAP], c[C_WORDS] = self.seg.ctypes.data, ring.capacity, ring.data.shape[1]
        c[C_SEQS], c[C_INSTS], c[C_BLOCKED] = self.seqs.ctypes.data, self.insts.ctypes.data, self.blocked.ctypes.data
        c[C_TAB], c[C_TABN] = self.tabs[0].ctypes.data, self.tabs[0].shape[0]
        c[C_TAB2], c[C_TAB2N] = self.tabs[1].ctypes.data, self.tabs[1].shape[0]
        c[C_USDM], c[C_AFTER] = int(usdm), after
        c[C_FV], c[C_IV], c[C_REC] = self.fv.ctypes.data, self.iv.ctypes.data, self.rec.ctypes.data
        c[C_TPL], c[C_TLIT] = self.tpl.ctypes.data, self.tlit.ctypes.data
        c[C_WORDS_EMIT] = words.buffer_info()[0]
        self.addr = int(c.ctypes.data)
        """What the fused function takes as ``ctx_addr``."""
        self.fn = fastcall(fn)
        """The fused function: ``fn(frame bytes, addr, t_mono_ns, t_wall_ns)`` -> status."""
        self.resync: frozenset[int] = frozenset()
        """The emitter's pending FLAG_RESYNC instruments as of the last ``block``."""

    def block(self, resync: set[int]) -> None:
        """Keep the instruments in ``resync`` (the emitter's pending FLAG_RESYNC) off the fast path."""
        if resync == self.resync:
            return
        self.resync = frozenset(resync)
        for k, inst in enumerate(self.insts.tolist()):
            self.blocked[k] = inst in self.resync


@numba.njit(**_J)
def _decimal_bytes(buf):
    return _decimal_value(_ptr(buf), 0, len(buf))


def parse_decimal(text: bytes) -> float | None:
    """The fast path's reading of a decimal (tests): the float, or None where it leaves it to the general
    parser."""
    quoted = b'"' + text + b'"'
    v, end = _decimal_bytes(quoted)
    return v if end == len(quoted) else None
