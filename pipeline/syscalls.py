"""libc calls as numba intrinsics: CLOCK_MONOTONIC, futex wait / wake / waitv and sched_yield, callable inside
compiled loops.

Written by hand because numba has no binding for them, and calling them through ctypes from Python costs a
round trip out of compiled code plus about a microsecond of ctypes argument building per call, on exactly the
path that decides wake-up latency. The functions are declared in LLVM IR and resolved against libc at link time
(``llvm.add_symbol``, done at import so numba's on-disk cache can be loaded in any process).
"""

from __future__ import annotations

import ctypes
import platform

from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

CLOCK_MONOTONIC = 1
SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine(), -1)
SYS_FUTEX_WAITV = {"x86_64": 449, "aarch64": 449}.get(platform.machine(), -1)
FUTEX2_SIZE_U32 = 2
FUTEX_WAIT, FUTEX_WAKE = 0, 1  # shared (not FUTEX_PRIVATE): the word lives in a segment other processes map

_libc = ctypes.CDLL(None)
for _name in ("syscall", "sched_yield", "clock_gettime"):
    llvm.add_symbol(_name, ctypes.cast(getattr(_libc, _name), ctypes.c_void_p).value)

_i32, _i64 = ir.IntType(32), ir.IntType(64)


def _syscall_fn(builder):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(_i64, [_i64], var_arg=True), "syscall")


@intrinsic
def monotonic_ns(typingctx):
    """Monotonic clock, ns (int64): a vDSO call, about 20 ns."""

    def codegen(context, builder, signature, args):
        ts_t = ir.LiteralStructType([_i64, _i64])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_i32, [_i32, ts_t.as_pointer()]),
                                            "clock_gettime")
        ts = cgutils.alloca_once(builder, ts_t)
        builder.call(fn, [ir.Constant(_i32, CLOCK_MONOTONIC), ts])
        sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(sec, ir.Constant(_i64, 1_000_000_000)), nsec)

    return types.int64(), codegen


def _timespec(builder, ns):
    """A ``struct timespec`` on the stack holding ``ns`` nanoseconds; returns its address as an i64."""
    ts = cgutils.alloca_once(builder, ir.LiteralStructType([_i64, _i64]))
    billion = ir.Constant(_i64, 1_000_000_000)
    builder.store(builder.sdiv(ns, billion), cgutils.gep_inbounds(builder, ts, 0, 0))
    builder.store(builder.srem(ns, billion), cgutils.gep_inbounds(builder, ts, 0, 1))
    return builder.ptrtoint(ts, _i64)


@intrinsic
def futex_wait(typingctx, addr, expected, timeout_ns):
    """Sleep while the 32-bit word at address ``addr`` equals ``expected``, at most ``timeout_ns``."""
    sig = types.int64(types.uintp, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        addr_v, expected_v, timeout_v = (context.cast(builder, a, t, u) for a, t, u in
                                         zip(args, signature.args, sig.args, strict=True))
        return builder.call(_syscall_fn(builder), [
            ir.Constant(_i64, SYS_FUTEX), addr_v, ir.Constant(_i64, FUTEX_WAIT),
            builder.trunc(expected_v, _i32), _timespec(builder, timeout_v)])

    return sig, codegen


@intrinsic
def futex_wake(typingctx, addr):
    """Wake every process sleeping on the 32-bit word at address ``addr``."""
    sig = types.int64(types.uintp)

    def codegen(context, builder, signature, args):
        addr_v = context.cast(builder, args[0], signature.args[0], types.uintp)
        return builder.call(_syscall_fn(builder), [
            ir.Constant(_i64, SYS_FUTEX), addr_v, ir.Constant(_i64, FUTEX_WAKE), ir.Constant(_i32, 2**31 - 1)])

    return sig, codegen


@intrinsic
def futex_waitv(typingctx, waiters, n, deadline_ns):
    """Sleep until one of ``n`` futex words changes or the monotonic clock passes ``deadline_ns`` (Linux 5.16+):
    ``waiters`` is the address of ``n`` ``struct futex_waitv`` (24 bytes: expected value, word address, flags).
    Returns the index of the word that woke, or -1 (errno: timeout, a word no longer as expected, ENOSYS)."""
    sig = types.int64(types.uintp, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        addr_v, n_v, deadline_v = (context.cast(builder, a, t, u) for a, t, u in
                                   zip(args, signature.args, sig.args, strict=True))
        return builder.call(_syscall_fn(builder), [
            ir.Constant(_i64, SYS_FUTEX_WAITV), addr_v, n_v, ir.Constant(_i64, 0), _timespec(builder, deadline_v),
            ir.Constant(_i64, CLOCK_MONOTONIC)])

    return sig, codegen


@intrinsic
def sched_yield(typingctx):
    """Give the CPU to another runnable thread, if any."""

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_i32, []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen
