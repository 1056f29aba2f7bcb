"""Recording what a live feed receives, and reading recordings back (ours, cryptofeed's, hftbacktest's).

Our format: gzip text, one frame a line, times in ns since the epoch (receive wall clock)::

    #lowlat-recording v1 venue=<venue>      first line of every file
    #connect <url>                          the last connection's URL, repeated at the top of every rotated file
    <t_ns> <frame>                          a received websocket frame, verbatim (the hftbacktest shape)
    <t_ns> @ws <frame>                      a received frame that contains CR or LF or starts with '@' (escaped)
    <t_ns> @connect <url>                   a connection was opened
    <t_ns> @rest <url> <body>               a REST response
    <t_ns> @sent <url> <data>               a message we sent

Escaping: every field after an ``@`` tag, and the ``#`` lines' values, have ``\\`` written as ``\\\\``, LF as
``\\n`` and CR as ``\\r``; URLs and the venue also have spaces written as ``\\s``. A verbatim frame line is not
escaped at all, so a venue's single-line JSON is stored byte for byte and ``zcat | cut -d' ' -f2-`` gives it back.

Damaged files: a reader replaying a recording cut short by a crash, or with a few bad lines, wants the rest of
it, so ``read_frames`` never stops at a malformed line: it skips it and describes it (``path:line: reason``) in
the optional ``errors`` list, or, without a list, warns once per file (``RuntimeWarning``) with the count. A last
line without its newline counts as cut off; a gzip stream without its end (a recorder that did not close) is
read up to where it stops; corrupt gzip data ends the file with an error (zlib may first decode some garbage, whose
lines are skipped if they do not parse). An unknown format raises ``ValueError``: nothing of it could be read.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import os
import re
import threading
import time
import warnings
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import BinaryIO, NamedTuple
from urllib.parse import urlsplit

import orjson

NS_PER_DAY = 86_400 * 10**9
HEADER = b"#lowlat-recording v1 venue="
SYNC_S = 1.0
"""The writer pushes compressed data to the OS at least this often: a crash loses at most about this much."""
RETRY_S = 1.0
"""After a failed open or write, the writer drops frames for this long before trying a new file."""
IDLE_S = 0.002
"""The writer's sleep when its queue is empty (the callers never signal it: appending is all they do)."""
BATCH = 64
"""Frames formatted per compress call: the writer releases the GIL in zlib at least this often."""
SCAN_FRAMES = 200
"""Frames ``detect_venue`` looks at."""

_WS, _REST, _CONNECT, _SENT, _FLUSH, _CLOSE = range(6)


class Frame(NamedTuple):
    """One recorded event."""

    t_ns: int
    """Receive wall-clock time, ns since the epoch."""
    kind: str
    """"ws" (received frame), "rest" (response body), "connect" (connection opened) or "sent" (message we sent)."""
    url: str
    """Connection URL (ws, connect, sent), request URL (rest); "" when unknown."""
    data: bytes
    """The frame, body or message as received or sent (b"" for connect)."""


# -- escaping ----------------------------------------------------------------------------------------------------------

_UNESC = {b"\\": b"\\", b"n": b"\n", b"r": b"\r", b"s": b" "}
_ESC_RE = re.compile(rb"\\(.?)", re.DOTALL)


def _esc(b: bytes, spaces: bool = False) -> bytes:
    b = b.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return b.replace(b" ", b"\\s") if spaces else b


def _unesc_one(m: re.Match[bytes]) -> bytes:
    try:
        return _UNESC[m[1]]
    except KeyError:
        raise ValueError(f"bad escape {m[0]!r}") from None


def _unesc(b: bytes) -> bytes:
    return _ESC_RE.sub(_unesc_one, b) if b"\\" in b else b


def _bytes(x: bytes | str) -> bytes:
    return x.encode() if isinstance(x, str) else bytes(x)


def _line(t: int, code: int, url: str, data: bytes | str) -> bytes:
    """One line of our format."""
    d = data if type(data) is bytes else _bytes(data)
    if code == _WS:
        if b"\n" in d or b"\r" in d or d[:1] == b"@":
            return b"%d @ws %b\n" % (t, _esc(d))
        return b"%d %b\n" % (t, d)
    u = _esc(_bytes(url), True)
    if code == _CONNECT:
        return b"%d @connect %b\n" % (t, u)
    return b"%d %b %b %b\n" % (t, b"@rest" if code == _REST else b"@sent", u, _esc(d))


# -- recording ---------------------------------------------------------------------------------------------------------


class Recorder:
    """Records a feed's traffic to rotating gzip files ``<prefix>.<YYYYMMDD>.<n>.rec.gz`` without slowing it.

    ``ws``, ``rest``, ``connect`` and ``sent`` only append to a queue (thread-safe, O(1), no I/O or compression);
    a daemon thread formats, compresses and writes. A file is named after the UTC day of its first frame; ``n``
    counts the files this recorder made (an existing file is never overwritten). A new file starts when the
    compressed size reaches ``max_bytes`` or, with ``rotate_daily``, when a frame's UTC day is later than the
    file's (a late frame from the day before stays in the new day's file). A failed disk never raises into the
    caller: frames that could not be written are counted in ``dropped``, the first error goes to
    ``report(kind, text)`` and ``error``, and the writer tries a new file after ``RETRY_S``. ``written`` counts
    frames pushed to the OS; after ``flush()``, ``written + dropped`` is every frame queued. ``cpus``: pin the
    writer thread there (Linux), away from the feed's CPU.
    """

    def __init__(self, prefix: str | Path, venue: str, max_bytes: int = 256 << 20, rotate_daily: bool = True,
                 level: int = 1, report: Callable[[str, str], object] | None = None,
                 cpus: Iterable[int] | None = None) -> None:
        self.prefix = str(prefix)
        self.venue = venue
        self.max_bytes = max_bytes
        self.rotate_daily = rotate_daily
        self.level = level
        self.report = report
        self.written = 0
        self.dropped = 0
        self.error: str | None = None
        self._cpus = set(cpus) if cpus is not None else None
        self._q: deque[tuple] = deque()
        self._append = self._q.append
        self._lock = threading.Lock()
        self._closed = False
        # writer-thread state
        self._files: list[Path] = []
        self._f: BinaryIO | None = None
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._next_day = 0  # the first ns of the day after the current file's (rotate_daily)
        self._size = 0
        self._seq = 0
        self._url = b""
        self._unsynced = 0  # frames compressed into the current file since the last sync
        self._file_synced = 0  # frames of the current file pushed to the OS
        self._synced_at = time.monotonic()
        self._retry_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"recorder-{venue}", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- the caller's side (any thread) ------------------------------------------------------------------------------

    def ws(self, t_ns: int, data: bytes | str) -> None:
        """A received websocket frame (pass immutable bytes or str: it is formatted later)."""
        self._append((t_ns, _WS, "", data))

    def rest(self, t_ns: int, url: str, body: bytes | str) -> None:
        """A REST response body."""
        self._append((t_ns, _REST, url, body))

    def connect(self, t_ns: int, url: str) -> None:
        """A connection opened: the following ws frames came from ``url``."""
        self._append((t_ns, _CONNECT, url, b""))

    def sent(self, t_ns: int, url: str, data: bytes | str) -> None:
        """A message sent on the connection ``url``."""
        self._append((t_ns, _SENT, url, data))

    @property
    def files(self) -> list[Path]:
        """The files written so far, oldest first."""
        return list(self._files)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every frame queued before this call is on disk (handed to the OS) or dropped.

        False if ``timeout`` (s) passed first."""
        with self._lock:
            if self._closed:
                return True
            if not self._thread.is_alive():
                return False
            done = threading.Event()
            self._q.append((0, _FLUSH, "", done))
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Write what is queued, finish the file and stop the writer; later frames count as dropped. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._append = self._late
            self._q.append((0, _CLOSE, "", None))
        self._thread.join(timeout)
        atexit.unregister(self.close)
        if not self._thread.is_alive():  # what raced past the close
            self.dropped += sum(1 for item in self._q if item[1] < _FLUSH)
            self._q.clear()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _late(self, item: tuple) -> None:
        self.dropped += 1

    # -- the writer thread ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        if self._cpus:
            try:
                os.sched_setaffinity(0, self._cpus)  # 0: this thread
            except (OSError, ValueError) as e:
                self._report(f"{self.prefix}: cannot pin the writer to CPUs {sorted(self._cpus)}: {e}")
        q, lines, line_of = self._q, [], _line
        while True:
            if not q:
                self._write(lines)
                if self._unsynced and time.monotonic() - self._synced_at >= SYNC_S:
                    self._sync()
                time.sleep(IDLE_S)
                continue
            t, code, url, data = q.popleft()
            if code >= _FLUSH:
                self._write(lines)
                if code == _CLOSE:
                    self._close_file()
                    return
                self._sync()
                data.set()
                continue
            try:
                line = line_of(t, code, url, data)
            except Exception as e:  # a caller passed something that is not bytes or str
                self.dropped += 1
                self._fail(e)
                continue
            if t >= self._next_day or self._size >= self.max_bytes or self._f is None:
                self._write(lines)
                self._open(t)
            if code == _CONNECT:
                self._url = _bytes(url)
            if self._f is None:
                self.dropped += 1
                continue
            lines.append(line)
            if len(lines) >= BATCH:
                self._write(lines)

    def _write(self, lines: list[bytes]) -> None:
        """Compress ``lines`` into the current file (and empty the list)."""
        if not lines:
            return
        n, data = len(lines), b"".join(lines)
        lines.clear()
        if self._f is None:
            self.dropped += n
            return
        try:
            out = self._z.compress(data)
            if out:
                self._f.write(out)
                self._size += len(out)
        except OSError as e:
            self._abandon(e, n + self._unsynced)
            return
        self._unsynced += n
        if time.monotonic() - self._synced_at >= SYNC_S:
            self._sync()

    def _sync(self) -> None:
        """Push everything compressed so far to the OS (a reader sees it); notice a file removed under us."""
        self._synced_at = time.monotonic()
        if self._f is None:
            return
        try:
            self._f.write(self._z.flush(zlib.Z_SYNC_FLUSH))
            self._f.flush()
            removed = os.fstat(self._f.fileno()).st_nlink == 0
        except OSError as e:
            self._abandon(e, self._unsynced)
            return
        if removed:  # what went into it is gone: count it dropped, and start a new file at once
            self.written -= self._file_synced
            self._abandon(FileNotFoundError(f"{self._files[-1]} was removed while recording"),
                          self._file_synced + self._unsynced, retry=False)
            return
        self.written += self._unsynced
        self._file_synced += self._unsynced
        self._unsynced = 0

    def _open(self, t: int) -> None:
        """Finish the current file and start one for the frame at ``t``."""
        self._close_file()
        if time.monotonic() < self._retry_at:
            return
        day = t // NS_PER_DAY
        stamp = time.strftime("%Y%m%d", time.gmtime(day * 86_400))
        try:
            Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
            while True:
                path = Path(f"{self.prefix}.{stamp}.{self._seq}.rec.gz")
                self._seq += 1
                try:
                    self._f = open(path, "xb")
                    break
                except FileExistsError:
                    continue
        except OSError as e:
            self._retry_at = time.monotonic() + RETRY_S
            self._fail(e)
            return
        self._files.append(path)
        self._z = zlib.compressobj(self.level, zlib.DEFLATED, 31)
        self._next_day = (day + 1) * NS_PER_DAY if self.rotate_daily else 1 << 80
        self._size, self._unsynced, self._file_synced = 0, 0, 0
        header = HEADER + _esc(self.venue.encode(), True) + b"\n"
        if self._url:
            header += b"#connect " + _esc(self._url, True) + b"\n"
        try:
            out = self._z.compress(header)
            self._f.write(out)
            self._size += len(out)
        except OSError as e:
            self._abandon(e, 0)

    def _close_file(self) -> None:
        """Sync and finish the current gzip stream (its end marker and checksum)."""
        self._sync()
        if self._f is None:
            return
        try:
            self._f.write(self._z.flush())
            self._f.close()
        except OSError as e:  # the frames were synced: the file just lacks its end, which readers tolerate
            self._fail(e)
            self._close_quietly()
        self._f = None

    def _abandon(self, err: OSError, lost: int, retry: bool = True) -> None:
        """Give up the current file after a failure: ``lost`` frames never reached the disk."""
        self.dropped += lost
        self._unsynced = self._file_synced = 0
        self._close_quietly()
        self._f = None
        if retry:
            self._retry_at = time.monotonic() + RETRY_S
        self._fail(err)

    def _close_quietly(self) -> None:
        try:
            if self._f is not None:
                self._f.close()
        except OSError:
            pass

    def _fail(self, err: BaseException) -> None:
        """Remember the error; report the first one."""
        first = self.error is None
        self.error = f"{self.prefix}: {type(err).__name__}: {err}"
        if first:
            self._report(f"{self.error} (frames are dropped and counted until a file can be written)")

    def _report(self, text: str) -> None:
        if self.report is not None:
            try:
                self.report("recording", text)
            except Exception:  # the callback's trouble must not stop the writer
                pass


# -- reading -----------------------------------------------------------------------------------------------------------

_NS_LINE = re.compile(rb"\d+ ")
_CF_RECV = re.compile(rb"(\d+(?:\.\d*)?): ")
_CF_URL = re.compile(rb"(\S+) (<->|<-|->) (\d+(?:\.\d*)?)(: |$)")
_CF_KIND = {b"<->": "connect", b"<-": "sent", b"->": "rest"}


def _seconds_ns(s: bytes) -> int:
    """Decimal seconds (``1626992741.3105128``) to ns, exactly; digits past the ns are rounded half up."""
    whole, _, frac = s.partition(b".")
    ns = int(whole) * 10**9 + int(frac[:9].ljust(9, b"0"))
    return ns + 1 if frac[9:10] >= b"5" else ns


def _chunks(path: Path) -> Iterator[bytes]:
    """The file's bytes, gunzipped if it is gzip (several members allowed; a missing end is not an error)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        z = zlib.decompressobj(31)
        while raw := f.read(1 << 13):  # small reads: a corrupt gzip block loses little of what precedes it
            if not gz:
                yield raw
                continue
            while raw:
                yield z.decompress(raw)
                raw, raw_left = b"", z.unused_data
                if z.eof:  # a member ended; another may follow
                    z, raw = zlib.decompressobj(31), raw_left


def _lines(path: Path, bad: Callable[[int, str], None]) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its newline); a last line without its newline is reported as cut off."""
    n, tail = 0, b""
    try:
        for chunk in _chunks(path):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for line in lines:
                n += 1
                yield n, line
    except zlib.error as e:
        bad(n + 1, f"corrupt gzip data ({e}): the rest of the file is skipped")
        return
    if tail:
        bad(n + 1, "last line has no newline (recording cut off?): skipped")


def _ns_frames(lines: Iterable[tuple[int, bytes]], bad: Callable[[int, str], None],
               meta: dict[str, str]) -> Iterator[Frame]:
    """Frames of our format or hftbacktest's (``LOCAL_NS RAW_JSON``)."""
    url = ""
    for n, line in lines:
        if not line:
            continue
        try:
            if line[:1] == b"#":
                if line.startswith(b"#connect "):
                    url = _unesc(line[9:]).decode()
                elif line.startswith(HEADER):
                    meta["venue"] = _unesc(line[len(HEADER):]).decode()
                elif line.startswith(b"#lowlat-recording"):
                    raise ValueError("unsupported version of the format")
                continue
            t, sp, rest = line.partition(b" ")
            if not sp or not t.isdigit():
                raise ValueError("not '<t_ns> <frame>'")
            if rest[:1] != b"@":
                frame = Frame(int(t), "ws", url, rest)
            else:
                tag, _, fields = rest.partition(b" ")
                if tag == b"@ws":
                    frame = Frame(int(t), "ws", url, _unesc(fields))
                elif tag == b"@connect":
                    url = _unesc(fields).decode()
                    frame = Frame(int(t), "connect", url, b"")
                elif tag in (b"@rest", b"@sent"):
                    u, sp, body = fields.partition(b" ")
                    if not sp:
                        raise ValueError(f"{tag.decode()} without a body")
                    frame = Frame(int(t), tag[1:].decode(), _unesc(u).decode(), _unesc(body))
                else:
                    raise ValueError(f"unknown tag {tag[:20]!r}")
        except ValueError as e:
            bad(n, str(e))
            continue
        yield frame


def _cryptofeed_frames(lines: Iterable[tuple[int, bytes]], bad: Callable[[int, str], None],
                       meta: dict[str, str]) -> Iterator[Frame]:
    """Frames of cryptofeed's raw-data files (times: decimal seconds)."""
    url = ""
    for n, line in lines:
        if not line or line.startswith(b"configuration: "):
            continue
        if m := _CF_RECV.match(line):
            yield Frame(_seconds_ns(m[1]), "ws", url, line[m.end():])
        elif (m := _CF_URL.match(line)) and (m[2] == b"<->") == (m[4] == b""):
            kind = _CF_KIND[m[2]]
            try:
                u = m[1].decode()
            except UnicodeDecodeError as e:
                bad(n, str(e))
                continue
            if kind == "connect":
                url = u
            yield Frame(_seconds_ns(m[3]), kind, u, line[m.end():])
        else:
            bad(n, "not a cryptofeed line ('T: frame', 'URL <-> T', 'URL <- T: msg', 'URL -> T: body')")


def _frames(path: str | Path, errors: list[str] | None, meta: dict[str, str]) -> Iterator[Frame]:
    path = Path(path)
    found: list[str] = [] if errors is None else errors

    def bad(n: int, reason: str) -> None:
        found.append(f"{path}:{n}: {reason}")

    lines = _lines(path, bad)
    head = next(((n, line) for n, line in lines if line), None)
    if head is not None:
        first = head[1]
        if first.startswith(b"#lowlat-recording") or _NS_LINE.match(first):
            parse = _ns_frames
        elif _CF_RECV.match(first) or _CF_URL.match(first) or first.startswith(b"configuration: "):
            parse = _cryptofeed_frames
        else:
            raise ValueError(f"{path}: not a recording this reader knows (first line {first[:60]!r})")
        yield from parse(itertools.chain([head], lines), bad, meta)
    if errors is None and found:
        warnings.warn(f"{len(found)} malformed line(s) skipped; first: {found[0]}", RuntimeWarning, stacklevel=2)


def read_frames(path: str | Path, errors: list[str] | None = None) -> Iterator[Frame]:
    """The frames of a recording in file order: ours, cryptofeed's text files or hftbacktest's ``LOCAL_NS RAW_JSON``
    lines, gzip or plain (the format is told from the first line). Malformed lines are skipped and described in
    ``errors`` (``path:line: reason``), or warned about once per file without a list. ws frames carry the URL of
    the latest connect (hftbacktest files: "")."""
    return _frames(path, errors, {})


# -- venue detection ---------------------------------------------------------------------------------------------------


def _venue_of_url(url: str) -> str | None:
    host = urlsplit(url).hostname or ""
    if host == "kucoin.com" or host.endswith(".kucoin.com"):
        return "kucoin"
    if host == "mexc.com" or host.endswith(".mexc.com"):
        return "mexc"
    if host.endswith(".binance.com"):
        if host.startswith(("fstream", "fapi")):
            return "binance_usdm"
        if host.startswith(("stream.", "api")):
            return "binance"
    return None


def _venue_of_frame(data: bytes) -> str | None:
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict):
        return None
    if str(msg.get("topic", "")).startswith(("/market/", "/spotMarket/")):
        return "kucoin"
    stream, d = str(msg.get("stream", "")), msg.get("data", msg)
    if not isinstance(d, dict):
        return None
    if "@depth@0ms" in stream or "pu" in d or (d.get("e") == "bookTicker" and "T" in d):
        return "binance_usdm"
    if "e" not in d and {"u", "s", "b", "B", "a", "A"} <= d.keys():
        return "binance"
    return None


def detect_venue(path: str | Path) -> str | None:
    """"kucoin", "binance" (spot), "binance_usdm" or "mexc" from a recording's header, URLs or first frames, else from
    an hftbacktest file name (``spot_``, ``usdm_``); None when none of them tells."""
    meta: dict[str, str] = {}
    try:
        with closing(_frames(path, [], meta)) as frames:
            for frame in itertools.islice(frames, SCAN_FRAMES):
                if "venue" in meta:
                    break
                venue = (_venue_of_url(frame.url) if frame.url else None) or (
                    _venue_of_frame(frame.data) if frame.kind == "ws" else None)
                if venue:
                    return venue
    except (ValueError, OSError):
        pass
    if "venue" in meta:
        return meta["venue"].lower().replace("-", "_")
    name = Path(path).name
    return "binance" if name.startswith("spot_") else "binance_usdm" if name.startswith("usdm_") else None


# -- merging -----------------------------------------------------------------------------------------------------------


def _indexed(i: int, frames: Iterator[Frame]) -> Iterator[tuple[int, Frame]]:
    for frame in frames:
        yield i, frame


def merge(paths: Iterable[str | Path], errors: list[str] | None = None) -> Iterator[tuple[int, Frame]]:
    """(file index, frame) of all recordings by receive time, lazily. Stable: equal times keep each file's order,
    then the lower file index first. Each file is taken to be in time order, as recordings are."""
    streams = [_indexed(i, read_frames(p, errors)) for i, p in enumerate(paths)]
    return heapq.merge(*streams, key=lambda item: item[1].t_ns)
