"""Atomic loads/stores and fences for numba code, emitted as LLVM instructions.

numba has no memory-model primitives of its own, and neither does Python. The ring's publish protocol needs:

- an atomic store of a cursor (so the compiler cannot split, merge or sink it), ordered after the slot writes by
  a release fence;
- an atomic load of the other side's cursor (so LLVM cannot hoist it out of a spin loop), followed by an acquire
  fence before the slot is read;
- a sequentially consistent fence for the doorbell (store "asleep" then load the cursor must not be reordered,
  which x86 otherwise allows for a store followed by a load).

LLVM orders fences only against atomic accesses, hence atomic loads/stores with ``monotonic`` ordering around
explicit fences: the pattern that held under stress in shared/reference/IPC_BASELINE.md. Written by hand because
no library exposes these to numba.
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _element_ptr(context, builder, arrty, arr, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [idx], wraparound=False)


@intrinsic
def atomic_load(typingctx, arr, idx):
    """Atomically load ``arr[idx]`` (monotonic ordering); ``arr`` is a C-contiguous 1-d integer array."""
    if not (isinstance(arr, types.Array) and isinstance(arr.dtype, types.Integer) and arr.ndim == 1):
        return None
    sig = arr.dtype(arr, types.intp)

    def codegen(context, builder, signature, args):
        ptr = _element_ptr(context, builder, signature.args[0], args[0], args[1])
        width = arr.dtype.bitwidth // 8
        return builder.load_atomic(ptr, "monotonic", width)

    return sig, codegen


@intrinsic
def atomic_store(typingctx, arr, idx, val):
    """Atomically store ``val`` into ``arr[idx]`` (monotonic ordering)."""
    if not (isinstance(arr, types.Array) and isinstance(arr.dtype, types.Integer) and arr.ndim == 1):
        return None
    sig = types.void(arr, types.intp, arr.dtype)

    def codegen(context, builder, signature, args):
        ptr = _element_ptr(context, builder, signature.args[0], args[0], args[1])
        value = context.cast(builder, args[2], signature.args[2], arr.dtype)
        builder.store_atomic(value, ptr, "monotonic", arr.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return sig, codegen


def _fence(ordering: str):
    @intrinsic
    def fence(typingctx):
        def codegen(context, builder, signature, args):
            builder.fence(ordering)
            return context.get_dummy_value()

        return types.void(), codegen

    return fence


fence_acquire = _fence("acquire")
fence_release = _fence("release")
fence_seq_cst = _fence("seq_cst")

__all__ = ["atomic_load", "atomic_store", "fence_acquire", "fence_release", "fence_seq_cst"]
