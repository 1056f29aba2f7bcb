"""CLOCK_MONOTONIC in nanoseconds, callable from numba.

``time.perf_counter_ns()`` reads the same clock on Linux; this twin exists because numba cannot call it. One
clock for every process, so latencies between stages can be read off the records. Written as an LLVM
intrinsic calling libc's ``clock_gettime`` (a vDSO call, about 20 ns) rather than through ctypes, because numba
refuses to cache functions that hold ctypes pointers, and a stage must not recompile on every restart.
"""

from __future__ import annotations

import ctypes

from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_CLOCK_MONOTONIC = 1
# make the symbol resolvable by numba's JIT linker in every process (also when loading from the cache)
llvm.add_symbol("clock_gettime", ctypes.cast(ctypes.CDLL(None).clock_gettime, ctypes.c_void_p).value)


@intrinsic
def monotonic_ns(typingctx):
    """Monotonic clock, ns (int64)."""

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        ts_t = ir.LiteralStructType([i64, i64])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, ts_t.as_pointer()]),
                                            "clock_gettime")
        ts = cgutils.alloca_once(builder, ts_t)
        builder.call(fn, [ir.Constant(i32, _CLOCK_MONOTONIC), ts])
        sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)

    return types.int64(), codegen
