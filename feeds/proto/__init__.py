"""MEXC spot v3 websocket ``.proto`` definitions (EXCHANGES.md §4.2), compiled on first use.

The ``.proto`` files beside this module are the source; no generated code is kept in the repository. ``load()``
runs ``grpc_tools.protoc`` once per distinct set of ``.proto`` texts (and protobuf / grpcio-tools versions) into
a cache directory, ``$LOWLAT_PROTO_CACHE`` or ``<user cache>/lowlat/proto/<hash>`` (``$XDG_CACHE_HOME`` or
``~/.cache``; this package's ``__pycache__/proto`` when that is not writable), then imports the generated
``*_pb2`` modules. Concurrent first uses are safe: each compiles into a private directory and renames it into
place. Any failure raises ``ProtoError`` with a one-line message.

The generated modules import each other by their bare names (the published files have no package), so they live
in ``sys.modules`` as ``PushDataV3ApiWrapper_pb2`` and so on.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

PROTO_DIR = Path(__file__).resolve().parent
"""Where the ``.proto`` sources are."""

WRAPPER = "PushDataV3ApiWrapper"


class ProtoError(RuntimeError):
    """The ``.proto`` files could not be compiled or their generated modules imported (one line)."""


class Messages:
    """The generated message classes this project uses (protobuf ``Message`` subclasses)."""

    def __init__(self, modules: dict[str, Any]) -> None:
        self.modules = modules
        """Generated modules by ``.proto`` stem."""
        w = modules[WRAPPER]
        self.PushDataV3ApiWrapper: Any = w.PushDataV3ApiWrapper
        self.PublicAggreBookTickerV3Api: Any = modules["PublicAggreBookTickerV3Api"].PublicAggreBookTickerV3Api
        self.PublicAggreDealsV3Api: Any = modules["PublicAggreDealsV3Api"].PublicAggreDealsV3Api
        self.PublicAggreDealsV3ApiItem: Any = modules["PublicAggreDealsV3Api"].PublicAggreDealsV3ApiItem
        self.PublicAggreDepthsV3Api: Any = modules["PublicAggreDepthsV3Api"].PublicAggreDepthsV3Api
        self.PublicAggreDepthV3ApiItem: Any = modules["PublicAggreDepthsV3Api"].PublicAggreDepthV3ApiItem
        self.PublicLimitDepthsV3Api: Any = modules["PublicLimitDepthsV3Api"].PublicLimitDepthsV3Api
        self.PublicLimitDepthV3ApiItem: Any = modules["PublicLimitDepthsV3Api"].PublicLimitDepthV3ApiItem
        self.PublicBookTickerV3Api: Any = modules["PublicBookTickerV3Api"].PublicBookTickerV3Api
        self.PublicBookTickerBatchV3Api: Any = modules["PublicBookTickerBatchV3Api"].PublicBookTickerBatchV3Api


def sources(proto_dir: Path = PROTO_DIR) -> list[Path]:
    """The ``.proto`` files, sorted by name."""
    return sorted(proto_dir.glob("*.proto"))


def _versions() -> str:
    from google.protobuf import __version__ as pb_version

    try:
        tools = metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:  # compiling will say so
        tools = "?"
    return f"protobuf {pb_version}, grpcio-tools {tools}"


def cache_key(proto_dir: Path = PROTO_DIR) -> str:
    """Hash of the ``.proto`` texts and the protobuf / grpcio-tools versions (generated code is version bound)."""
    h = hashlib.sha256(_versions().encode())
    for p in sources(proto_dir):
        h.update(b"\0" + p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:20]


def cache_root() -> Path:
    """``$LOWLAT_PROTO_CACHE``, else ``<$XDG_CACHE_HOME or ~/.cache>/lowlat/proto``."""
    env = os.environ.get("LOWLAT_PROTO_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lowlat" / "proto"


def _complete(d: Path, names: list[str]) -> bool:
    return all((d / f"{n}_pb2.py").is_file() for n in names)


def compile_protos(proto_dir: Path = PROTO_DIR, cache: Path | None = None) -> Path:
    """The directory holding the modules generated from ``proto_dir``'s ``.proto`` files, compiling them first
    when not cached. ``cache``: the cache root (default ``cache_root()``, then this package's
    ``__pycache__/proto`` when that is not writable). ProtoError (one line) when anything fails."""
    files = sources(proto_dir)
    if not any(p.stem == WRAPPER for p in files):
        raise ProtoError(f"MEXC protobuf: {proto_dir}/{WRAPPER}.proto is missing")
    names = [p.stem for p in files]
    key = cache_key(proto_dir)
    roots = [cache] if cache is not None else [cache_root(), PROTO_DIR / "__pycache__" / "proto"]
    for root in roots:
        if _complete(root / key, names):
            return root / key
    if importlib.util.find_spec("grpc_tools") is None:
        raise ProtoError("MEXC protobuf: grpcio-tools is not installed (pip install grpcio-tools); it compiles "
                         f"{proto_dir}/*.proto")
    root = _writable(roots)
    final = root / key
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={tmp}",
               *(p.name for p in files)]
        try:
            r = subprocess.run(cmd, cwd=proto_dir, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ProtoError(f"MEXC protobuf: cannot run grpc_tools.protoc: {e}") from None
        if r.returncode != 0 or not _complete(tmp, names):
            lines = [x.strip() for x in (r.stderr + r.stdout).splitlines() if x.strip()]
            why = lines[0] if lines else f"exit code {r.returncode}, no output"
            raise ProtoError(f"MEXC protobuf: grpc_tools.protoc failed on {proto_dir}: {why}")
        try:
            os.rename(tmp, final)
        except OSError:
            if not _complete(final, names):  # not a lost race with another process: a real problem
                raise ProtoError(f"MEXC protobuf: cannot move the compiled modules to {final}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _writable(roots: list[Path]) -> Path:
    for root in roots:
        try:
            root.mkdir(parents=True, exist_ok=True)
            if os.access(root, os.W_OK | os.X_OK):
                return root
        except OSError:
            continue
    raise ProtoError(f"MEXC protobuf: no writable cache directory ({' nor '.join(map(str, roots))})")


@cache
def load() -> Messages:
    """Compile (when not cached) and import the generated modules; the message classes. ProtoError on failure."""
    d = compile_protos()
    names = [p.stem for p in sources()]
    sys.path.insert(0, str(d))
    try:
        importlib.invalidate_caches()
        modules = {n: importlib.import_module(f"{n}_pb2") for n in names}
        return Messages(modules)
    except Exception as e:  # e.g. a protobuf runtime older than the generated code: one line
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ProtoError(f"MEXC protobuf: cannot import the modules generated in {d}: {text}") from None
    finally:
        try:
            sys.path.remove(str(d))
        except ValueError:
            pass
