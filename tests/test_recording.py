"""Recorder, readers, venue detection and merge (feeds/recording.py) on the real recorded traffic.

Expected values come from parses written here with plain string operations and ``Decimal`` (not the module's
regular expressions), so the reader is checked against an independent reading of the same files.
"""

from __future__ import annotations

import gzip
import itertools
import json
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import SHARED

from feeds.recording import NS_PER_DAY, RETRY_S, Frame, Recorder, detect_venue, merge, read_frames

REC = SHARED / "data" / "recorded"
DAY = REC / "binance_2024-08-08"
pytestmark = pytest.mark.skipif(not REC.is_dir(), reason=f"recorded data not found in {REC}")

VENUES = {
    "KUCOIN.ws.1.0": "kucoin",
    "KUCOIN.http.0.0": "kucoin",
    "BINANCE_FUTURES.ws.1.0": "binance_usdm",
    "BINANCE_FUTURES.http.0.0": "binance_usdm",
    "binance_2024-08-08/spot_btcusdt_20240808.gz": "binance",
    "binance_2024-08-08/spot_ethusdt_20240808.gz": "binance",
    "binance_2024-08-08/usdm_btcusdt_20240808.gz": "binance_usdm",
    "binance_2024-08-08/usdm_ethusdt_20240808.gz": "binance_usdm",
}
GZ = sorted(DAY.glob("*.gz"))
MIDNIGHT = 1_723_161_600 * 10**9  # 2024-08-09 00:00 UTC: the 2024-08-08 files end a fraction of a second before


# -- independent readers of the source formats ------------------------------------------------------------------------


def cryptofeed_expected(path: Path) -> list[Frame]:
    """cryptofeed's lines by string splitting; times through Decimal."""
    out, url = [], ""
    for line in path.read_bytes().decode().split("\n"):
        if not line:
            continue
        if " <-> " in line:
            url, t = line.split(" <-> ")
            out.append(Frame(int(Decimal(t) * 10**9), "connect", url, b""))
        elif line.startswith(("http://", "https://")):
            u, rest = line.split(" -> ", 1)
            t, body = rest.split(": ", 1)
            out.append(Frame(int(Decimal(t) * 10**9), "rest", u, body.encode()))
        elif line.startswith(("ws://", "wss://")):
            u, rest = line.split(" <- ", 1)
            t, msg = rest.split(": ", 1)
            out.append(Frame(int(Decimal(t) * 10**9), "sent", u, msg.encode()))
        else:
            t, msg = line.split(": ", 1)
            out.append(Frame(int(Decimal(t) * 10**9), "ws", url, msg.encode()))
    return out


def hftbacktest_lines(path: Path) -> list[tuple[int, bytes]]:
    with gzip.open(path) as f:
        return [(int(a), b.rstrip(b"\n")) for a, b in (line.split(b" ", 1) for line in f)]


def record(rec: Recorder, frames: list[Frame]) -> list[Frame]:
    """Feed ``frames`` to ``rec``; what reading them back must give (ws frames carry the latest connect URL)."""
    out, url = [], ""
    for f in frames:
        if f.kind == "ws":
            rec.ws(f.t_ns, f.data)
            f = f._replace(url=url)
        elif f.kind == "connect":
            rec.connect(f.t_ns, f.url)
            url = f.url
        elif f.kind == "rest":
            rec.rest(f.t_ns, f.url, f.data)
        else:
            rec.sent(f.t_ns, f.url, f.data)
        out.append(f)
    return out


def read_all(paths: list[Path], errors: list[str] | None = None) -> list[Frame]:
    return [f for p in paths for f in read_frames(p, errors)]


def header(path: Path) -> list[bytes]:
    """The file's leading '#' lines (stops at the first frame line)."""
    with gzip.open(path) as f:
        return [line.rstrip(b"\n") for line in itertools.takewhile(lambda x: x.startswith(b"#"), f)]


# -- round trip -------------------------------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    real = read_all([REC / "KUCOIN.ws.1.0", REC / "KUCOIN.http.0.0"])
    assert {f.kind for f in real} == {"connect", "sent", "ws", "rest"}
    t = real[-1].t_ns
    odd = [  # frames the verbatim line format cannot hold as they are
        Frame(t + 1, "ws", "", b'{"a":\n"b"}'),
        Frame(t + 2, "ws", "", '{"s":"BTC–USDT","n":"日本 ü €"}'.encode()),
        Frame(t + 3, "ws", "", b"@looks-like-a-tag x"),
        Frame(t + 4, "ws", "", b""),
        Frame(t + 5, "ws", "", b"back\\slash\\n not a newline\r\n"),
        Frame(t + 6, "ws", "", b" leading space, \\"),
        Frame(t + 7, "sent", "wss://host/a path?x=1\n2", b'{"op": "ping"}\n'),
        Frame(t + 8, "rest", "", "{\n  \"ü\": 1\n}\n".encode()),
        Frame(t + 9, "connect", "wss://other.example/ws", b""),
        Frame(t + 10, "ws", "", b"{}"),
    ]
    rec = Recorder(tmp_path / "kc", "kucoin")
    expected = record(rec, real + odd)
    rec.ws(t + 11, "str frame: ünïcode")  # str is recorded as UTF-8
    expected.append(Frame(t + 11, "ws", "wss://other.example/ws", "str frame: ünïcode".encode()))
    assert rec.flush(60)
    assert rec.files == [tmp_path / "kc.20210425.0.rec.gz"]
    assert (rec.written, rec.dropped, rec.error) == (len(expected), 0, None)
    errors: list[str] = []
    assert list(read_frames(rec.files[0], errors)) == expected  # still open: read up to the last flush
    assert errors == []
    rec.close()
    rec.close()  # idempotent
    assert list(read_frames(rec.files[0], errors)) == expected
    assert errors == []
    assert header(rec.files[0]) == [b"#lowlat-recording v1 venue=kucoin"]
    plain = tmp_path / "plain.rec"  # the same lines, not compressed
    plain.write_bytes(gzip.decompress(rec.files[0].read_bytes()))
    assert list(read_frames(plain)) == expected
    assert detect_venue(rec.files[0]) == "kucoin"
    rec.ws(t + 12, b"{}")  # after close: counted, not raised
    assert rec.dropped == 1


def test_verbatim_lines(tmp_path: Path) -> None:
    """Single-line frames are stored byte for byte, in the hftbacktest shape."""
    lines = hftbacktest_lines(DAY / "usdm_btcusdt_20240808.gz")[:500]
    with Recorder(tmp_path / "u", "binance_usdm") as rec:
        for t, data in lines:
            rec.ws(t, data)
    with gzip.open(rec.files[0]) as f:
        assert f.read().split(b"\n")[1:-1] == [b"%d %b" % line for line in lines]


# -- rotation ---------------------------------------------------------------------------------------------------------


def test_rotation_by_size(tmp_path: Path) -> None:
    url = "wss://fstream.binance.com/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker/btcusdt@trade"
    frames = [Frame(1_723_161_255_000_000_000, "connect", url, b"")]
    frames += [Frame(t, "ws", "", d) for t, d in hftbacktest_lines(DAY / "usdm_btcusdt_20240808.gz")[:20_000]]
    max_bytes = 64 << 10
    rec = Recorder(tmp_path / "usdm", "binance_usdm", max_bytes=max_bytes, rotate_daily=False)
    expected = record(rec, frames)
    rec.close()
    files = rec.files
    assert len(files) >= 5
    assert files == [tmp_path / f"usdm.20240808.{n}.rec.gz" for n in range(len(files))]
    assert all(p.stat().st_size >= max_bytes for p in files[:-1])
    for n, p in enumerate(files):
        assert header(p) == [b"#lowlat-recording v1 venue=binance_usdm"] + ([b"#connect " + url.encode()] if n else [])
        assert all(f.url == url for f in read_frames(p))  # every file tells its connection
    errors: list[str] = []
    assert read_all(files, errors) == expected
    assert errors == []
    assert (rec.written, rec.dropped) == (len(frames), 0)


def test_rotation_by_utc_day(tmp_path: Path) -> None:
    shift = 60 * 10**9  # a minute later, the recording's last minute crosses midnight
    frames = [Frame(t + shift, "ws", "", d) for t, d in hftbacktest_lines(DAY / "spot_btcusdt_20240808.gz")]
    rec = Recorder(tmp_path / "spot", "binance")
    expected = record(rec, frames)
    rec.close()
    assert rec.files == [tmp_path / "spot.20240808.0.rec.gz", tmp_path / "spot.20240809.1.rec.gz"]
    before, after = (list(read_frames(p)) for p in rec.files)
    assert before and after
    assert all(f.t_ns < MIDNIGHT for f in before)
    assert all(f.t_ns >= MIDNIGHT for f in after)
    assert before + after == expected
    assert MIDNIGHT % NS_PER_DAY == 0


def test_existing_files_are_not_overwritten(tmp_path: Path) -> None:
    first = tmp_path / "r.20240808.0.rec.gz"
    first.write_bytes(b"someone else's")
    with Recorder(tmp_path / "r", "binance") as rec:
        rec.ws(MIDNIGHT - 1, b"{}")
    assert rec.files == [tmp_path / "r.20240808.1.rec.gz"]
    assert first.read_bytes() == b"someone else's"


def test_writer_pinning(tmp_path: Path) -> None:
    """``cpus`` pins the writer thread; a CPU that does not exist is reported, and recording goes on."""
    reports: list[str] = []
    frames = [Frame(t, "ws", "", d) for t, d in hftbacktest_lines(DAY / "spot_ethusdt_20240808.gz")[:100]]
    with Recorder(tmp_path / "a", "binance", cpus={0}, report=lambda kind, text: reports.append(text)) as rec:
        record(rec, frames)
    with Recorder(tmp_path / "b", "binance", cpus={4095}, report=lambda kind, text: reports.append(text)) as bad:
        record(bad, frames)
    assert list(read_frames(rec.files[0])) == list(read_frames(bad.files[0])) == frames
    assert len(reports) == 1 and "cannot pin the writer" in reports[0]
    assert bad.error is None and bad.dropped == 0


# -- disk failures ----------------------------------------------------------------------------------------------------


def usdm_frames(n: int) -> list[tuple[int, bytes]]:
    return hftbacktest_lines(DAY / "usdm_btcusdt_20240808.gz")[:n]


def test_unwritable_prefix_drops_and_reports_once(tmp_path: Path) -> None:
    """A prefix under a regular file cannot be created, even by root."""
    (tmp_path / "a_file").write_text("not a directory")
    reports: list[tuple[str, str]] = []
    rec = Recorder(tmp_path / "a_file" / "rec", "binance_usdm", report=lambda kind, text: reports.append((kind, text)))
    frames = usdm_frames(5_000)
    for t, d in frames:
        rec.ws(t, d)
    assert rec.flush(60)
    rec.close()
    assert (rec.written, rec.dropped, rec.files) == (0, len(frames), [])
    assert len(reports) == 1 and reports[0][0] == "recording"
    assert "a_file" in reports[0][1] and rec.error is not None


READ_ONLY_CHILD = """
import itertools, json, os, sys
from pathlib import Path
from feeds.recording import Recorder, read_frames
frames = list(itertools.islice(read_frames(sys.argv[2]), 1000))
if os.geteuid() == 0:  # root ignores directory permissions: become nobody
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    except OSError:
        sys.exit(77)
reports = []
with Recorder(Path(sys.argv[1]) / "rec", "binance_usdm", report=lambda kind, text: reports.append(text)) as rec:
    for f in frames:
        rec.ws(f.t_ns, f.data)
print(json.dumps([rec.written, rec.dropped, [str(p) for p in rec.files], reports]))
"""


def test_read_only_directory() -> None:
    """Run as a user the directory's permissions bind (a child that drops root, if need be)."""
    top = Path(tempfile.mkdtemp(prefix="lowlat-ro-"))
    try:
        top.chmod(0o755)
        (top / "ro").mkdir(mode=0o555)
        (top / "ro").chmod(0o555)
        child = subprocess.run([sys.executable, "-c", READ_ONLY_CHILD, str(top / "ro"), str(GZ[2])],
                               cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)
    finally:
        (top / "ro").chmod(0o755)
        shutil.rmtree(top)
    if child.returncode == 77:
        pytest.skip("running as root without the right to become another user: a read-only directory cannot stop root")
    assert child.returncode == 0, child.stderr
    written, dropped, files, reports = json.loads(child.stdout)
    assert (written, dropped, files) == (0, 1_000, [])
    assert len(reports) == 1 and "Permission denied" in reports[0]


def test_directory_removed_under_it(tmp_path: Path) -> None:
    d = tmp_path / "rec"
    reports: list[tuple[str, str]] = []
    rec = Recorder(d / "usdm", "binance_usdm", report=lambda kind, text: reports.append((kind, text)))
    frames = [Frame(t, "ws", "", data) for t, data in usdm_frames(180)]
    record(rec, frames[:100])
    assert rec.flush(60)
    assert (rec.written, rec.dropped) == (100, 0)
    shutil.rmtree(d)  # the open file lives on, unlinked: what it holds is lost
    record(rec, frames[100:150])
    assert rec.flush(60)
    assert (rec.written, rec.dropped) == (0, 150)
    assert len(reports) == 1 and "removed" in reports[0][1]
    record(rec, frames[150:])  # a new file, in the directory made again
    rec.close()
    assert rec.files == [d / "usdm.20240808.0.rec.gz", d / "usdm.20240808.1.rec.gz"]
    assert list(read_frames(rec.files[1])) == frames[150:]
    assert (rec.written, rec.dropped) == (30, 150)
    assert len(reports) == 1


def test_write_failure_mid_file(tmp_path: Path) -> None:
    """The file-size limit (RLIMIT_FSIZE, which binds root too) makes a write fail part way, like a full disk."""
    limit = 256 << 10
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY and hard < limit:
        pytest.skip(f"the hard file-size limit ({hard} B) is below what this test needs")
    reports: list[tuple[str, str]] = []
    frames = [Frame(t, "ws", "", d) for t, d in usdm_frames(40_000)]
    rec = Recorder(tmp_path / "usdm", "binance_usdm", report=lambda kind, text: reports.append((kind, text)))
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        record(rec, frames)  # about 2 MB of gzip: cannot fit
        assert rec.flush(60)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert rec.dropped > 0
    assert rec.written + rec.dropped == len(frames)
    assert len(reports) == 1 and "File too large" in reports[0][1]
    errors: list[str] = []
    saved = read_all(rec.files, errors)  # the broken file reads up to where the disk stopped taking it
    assert len(saved) >= rec.written
    it = iter(frames)
    assert all(f in it for f in saved)  # in order, nothing made up
    time.sleep(RETRY_S + 0.2)  # the writer waits RETRY_S before trying a new file
    n_files = len(rec.files)
    more = [Frame(t + 10**9, "ws", "", d) for t, d in usdm_frames(100)]
    record(rec, more)
    rec.close()
    assert len(rec.files) == n_files + 1
    assert list(read_frames(rec.files[-1])) == more
    assert rec.written + rec.dropped == len(frames) + len(more)
    assert len(reports) == 1


# -- reading the real recordings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VENUES)
def test_real_recordings_read_completely(name: str) -> None:
    path = REC / name
    errors: list[str] = []
    frames = list(read_frames(path, errors))
    assert errors == []
    if path.suffix == ".gz":
        lines = hftbacktest_lines(path)
        expected = [Frame(t, "ws", "", d) for t, d in lines]
        n_ws = len(lines)
    else:
        expected = cryptofeed_expected(path)
        stamps = [line.split(": ", 1)[0] for line in path.read_text().split("\n") if line[:1].isdigit()]
        n_ws = len(stamps)
        # through a float most of these times would be off by some ns; the reader must parse them exactly
        assert not stamps or sum(round(float(s) * 1e9) != int(Decimal(s) * 10**9) for s in stamps) > 1000
    assert frames == expected
    assert sum(f.kind == "ws" for f in frames) == n_ws
    times = [f.t_ns for f in frames]
    assert times == sorted(times), "these recordings never go backwards in receive time"
    assert detect_venue(path) == VENUES[name]


def test_kucoin_counts() -> None:
    """The README's counts of the KuCoin recording."""
    frames = list(read_frames(REC / "KUCOIN.ws.1.0"))
    topics = [f.data.split(b'"subject":"', 1)[1].split(b'"', 1)[0] for f in frames if b'"subject":"' in f.data]
    assert topics.count(b"trade.ticker") == 830
    assert topics.count(b"trade.l2update") == 3853
    assert {f.url for f in frames} == {"wss://push-private.kucoin.com/endpoint?token=TOKEN"}


# -- malformed input --------------------------------------------------------------------------------------------------


def test_malformed_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    p = tmp_path / "damaged.rec"
    p.write_bytes(
        b"#lowlat-recording v1 venue=binance\n"
        b"1 {\"a\":1}\n"
        b"garbage without a time\n"
        b"2 @bogus x\n"
        b"3 @ws bad \\q escape\n"
        b"4 @rest https://x\n"
        b"\n"
        b"5 {\"b\":2}\n"
        b"6 {\"cut\":"
    )
    errors: list[str] = []
    assert list(read_frames(p, errors)) == [Frame(1, "ws", "", b'{"a":1}'), Frame(5, "ws", "", b'{"b":2}')]
    assert [e.split(": ", 1)[0] for e in errors] == [f"{p}:{n}" for n in (3, 4, 5, 6, 9)]
    with pytest.warns(RuntimeWarning, match=r"5 malformed line\(s\) skipped; first: .*damaged.rec:3"):
        assert len(list(read_frames(p))) == 2
    cf = tmp_path / "cf.ws"
    cf.write_bytes(b"wss://a <-> 1.5\n1.25: {}\nwss://a <-> 2: oops\n1.7: x\n")
    assert list(read_frames(cf, errors := [])) == [
        Frame(1_500_000_000, "connect", "wss://a", b""), Frame(1_250_000_000, "ws", "wss://a", b"{}"),
        Frame(1_700_000_000, "ws", "wss://a", b"x")]
    assert errors == [f"{cf}:3: not a cryptofeed line ('T: frame', 'URL <-> T', 'URL <- T: msg', 'URL -> T: body')"]
    other = tmp_path / "other.txt"
    other.write_text("hello world\n")
    with pytest.raises(ValueError, match="not a recording"):
        list(read_frames(other))


def test_cut_gzip_reads_up_to_the_cut(tmp_path: Path) -> None:
    """A recorder killed mid-file leaves a gzip stream without its end, maybe cut inside a line."""
    frames = [Frame(t, "ws", "", d) for t, d in usdm_frames(5_000)]
    with Recorder(tmp_path / "u", "binance_usdm") as rec:
        record(rec, frames)
    data = rec.files[0].read_bytes()
    cut = tmp_path / "cut.rec.gz"
    cut.write_bytes(data[: len(data) // 2])
    errors: list[str] = []
    got = list(read_frames(cut, errors))
    assert 0 < len(got) < len(frames) and got == frames[: len(got)]
    assert len(errors) == 1 and "no newline" in errors[0]
    at = len(data) // 2  # flip bytes mid-stream: zlib may decode garbage for a while before it notices
    bad = tmp_path / "bad.rec.gz"
    bad.write_bytes(data[:at] + bytes(b ^ 0xFF for b in data[at : at + 100]) + data[at + 100 :])
    intact = zlib.decompressobj(31).decompress(data[: at - 100]).count(b"\n") - 1  # frames wholly before the flip
    got = list(read_frames(bad, errors := []))
    assert intact > 1000 and got[:intact] == frames[:intact]
    assert "corrupt gzip" in errors[-1]
    two = tmp_path / "two.rec.gz"  # concatenated gzip members read as one file
    two.write_bytes(data + data)
    assert list(read_frames(two)) == frames + frames
    assert zlib.decompress(data, 31).count(b"\n") == len(frames) + 1


# -- venue detection --------------------------------------------------------------------------------------------------


def test_detect_venue_fallbacks(tmp_path: Path) -> None:
    trades = [line for line in hftbacktest_lines(DAY / "spot_btcusdt_20240808.gz") if b"@trade" in line[1]][:50]
    assert trades
    body = b"".join(b"%d %b\n" % line for line in trades)  # spot trades alone do not tell spot from futures
    for name, venue in (("spot_btcusdt_x.gz", "binance"), ("usdm_btcusdt_x.gz", "binance_usdm"), ("x.gz", None)):
        (tmp_path / name).write_bytes(gzip.compress(body))
        assert detect_venue(tmp_path / name) == venue
    with Recorder(tmp_path / "hdr", "binance-usdm") as rec:  # the feed's venue name, in the header
        for t, d in trades:
            rec.ws(t, d)
    assert detect_venue(rec.files[0]) == "binance_usdm"
    (tmp_path / "spot.ws").write_text("wss://stream.binance.com:9443/ws <-> 1.0\n")
    assert detect_venue(tmp_path / "spot.ws") == "binance"
    (tmp_path / "empty").write_bytes(b"")
    assert detect_venue(tmp_path / "empty") is None
    (tmp_path / "junk").write_text("not a recording\n")
    assert detect_venue(tmp_path / "junk") is None


# -- merge ------------------------------------------------------------------------------------------------------------


def test_merge_real_files() -> None:
    assert len(GZ) == 4
    refs = [read_frames(p) for p in GZ]
    prev_t, prev_i, n = -1, -1, 0
    for i, frame in merge(GZ):
        assert frame == next(refs[i])  # every frame of its file, in file order
        assert frame.t_ns > prev_t or (frame.t_ns == prev_t and i >= prev_i)
        prev_t, prev_i, n = frame.t_ns, i, n + 1
    assert all(next(r, None) is None for r in refs)  # and none left over
    assert n == 41_249 + 33_618 + 93_954 + 74_655


def test_merge_is_stable(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"5 a1\n5 a2\n7 a3\n")
    b.write_bytes(b"4 b0\n5 b1\n6 b2\n")
    assert [(i, f.data) for i, f in merge([a, b])] == [
        (1, b"b0"), (0, b"a1"), (0, b"a2"), (1, b"b1"), (1, b"b2"), (0, b"a3")]
