"""The executor's journal: an append-only file of JSON lines, one per intent, order, ack, fill, terminal state,
reject and risk change, in the order they happened.

An order's line is written and fsync'ed before the order is sent, so after a crash at any instant the journal
names every order that may have reached the venue; the lines after it (ack, fills, done) are written as they
arrive and fsync'ed before the next order leaves. A torn last line (a crash mid-write) is dropped on open.
Replaying the lines rebuilds the executor's orders and positions; the venue is then asked for the orders whose
outcome the journal does not hold. The journal never contains credentials.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson


class Journal:
    """``<run_dir>/<stage>.journal``: append with ``write``; ``sync`` makes everything written durable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        """Lines read back on open (what the previous processes wrote)."""
        self.torn = 0
        """Bytes of a torn last line dropped on open."""
        if path.exists():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            self.torn = len(data) - end
            for line in data[:end].splitlines():
                if line:
                    self.entries.append(orjson.loads(line))
            if self.torn:
                with open(path, "r+b") as f:
                    f.truncate(end)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.dirty = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.entries)

    def write(self, entry: dict[str, Any], sync: bool = False) -> None:
        """Append one line; ``sync``: fsync before returning (orders, before they are sent)."""
        os.write(self.fd, orjson.dumps(entry) + b"\n")
        self.dirty = True
        if sync:
            self.sync()

    def write_many(self, entries: list[dict[str, Any]]) -> None:
        """Append several lines with one ``write`` (an order's intent and legs: one system call, not three)."""
        if entries:
            os.write(self.fd, b"".join(orjson.dumps(e) + b"\n" for e in entries))
            self.dirty = True

    def sync(self) -> None:
        """fdatasync if anything was written since the last sync."""
        if self.dirty:
            os.fdatasync(self.fd)
            self.dirty = False

    def close(self) -> None:
        if self.fd >= 0:
            self.sync()
            os.close(self.fd)
            self.fd = -1
