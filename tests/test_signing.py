"""Request signing against the venues' published vectors (shared/reference/test_vectors.json `signing`), the
documented example requests rebuilt byte for byte from their parameters, a self-computed KuCoin full-request
vector, and credentials that never leak their secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
from decimal import Decimal

import pytest
import urllib3
from conftest import SHARED

from execution.signing import (
    SIMULATOR,
    Credentials,
    binance_query,
    binance_sign,
    binance_sign_parts,
    binance_signed_query,
    kucoin_headers,
    kucoin_sign,
    render,
    wsapi_payload,
    wsapi_signed_params,
)

VECTORS = json.loads((SHARED / "reference" / "test_vectors.json").read_text())
SIGNING = {v["id"]: v for v in VECTORS["signing"]}
HEX_VECTORS = [v for v in VECTORS["signing"] if v["algorithm"] == "HMAC-SHA256-hex"]


@pytest.mark.parametrize("vec", HEX_VECTORS, ids=[v["id"] for v in HEX_VECTORS])
def test_hex_vectors(vec: dict) -> None:
    """Every hex vector (Binance REST / WS-API / USD-M, MEXC: same algorithm), payload exactly as published
    (the USD-M doc-typo vector keeps its stray space after ``timestamp=``)."""
    sig = binance_sign(vec["secret"], vec["payload"])
    assert sig == vec["expected_signature"]
    assert sig == sig.lower() and len(sig) == 64


def test_doc_typo_vector_needs_the_stray_space() -> None:
    vec = SIGNING["binance_usdm_rest_hmac_mixed_doc_typo"]
    assert "timestamp= 1591702613943" in vec["payload"]
    assert binance_sign(vec["secret"], vec["payload"].replace("= ", "=")) != vec["expected_signature"]


def test_kucoin_sdk_primitive() -> None:
    vec = SIGNING["kucoin_sdk_hmac_primitive"]
    assert kucoin_sign(vec["secret"], vec["payload"]) == vec["expected_signature"]


# ------------------------------------------------------------------------------------------ Binance REST payloads

ORDER = [("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
         ("quantity", Decimal("1")), ("price", Decimal("0.1")), ("recvWindow", 5000), ("timestamp", 1499827319559)]


def test_rest_payload_from_params() -> None:
    vec = SIGNING["binance_spot_rest_hmac_ascii"]
    assert binance_query(ORDER) == vec["payload"]
    assert binance_query(dict(ORDER)) == vec["payload"]  # a dict keeps its insertion order
    assert binance_signed_query(ORDER, vec["secret"]) == f"{vec['payload']}&signature={vec['expected_signature']}"


def test_rest_non_ascii_is_percent_encoded_before_signing() -> None:
    vec = SIGNING["binance_spot_rest_hmac_non_ascii"]
    params = [("symbol", "１２３４５６"), *ORDER[1:]]
    assert binance_query(params) == vec["payload"]
    assert binance_signed_query(params, vec["secret"]).endswith("&signature=" + vec["expected_signature"])


def test_rest_mixed_query_and_body() -> None:
    vec = SIGNING["binance_spot_rest_hmac_mixed_query_and_body"]
    query, body = binance_query(ORDER[:4]), binance_query(ORDER[4:])
    assert (query, body) == (vec["query_string"], vec["request_body"])
    assert binance_sign_parts(vec["secret"], query, body) == vec["expected_signature"]


def test_usdm_rest_payload_from_params() -> None:
    vec = SIGNING["binance_usdm_rest_hmac_query"]
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": 1, "price": 9000,
              "timeInForce": "GTC", "recvWindow": 5000, "timestamp": 1591702613943}
    assert binance_signed_query(params, vec["secret"]) == f"{vec['payload']}&signature={vec['expected_signature']}"


def test_render_values() -> None:
    assert [render(v) for v in (True, False, 7, Decimal("0.00001000"), Decimal("1E+2"), "x")] == \
        ["true", "false", "7", "0.00001000", "100", "x"]
    assert binance_query({"reduceOnly": True, "q": "a b&c=d/é"}) == "reduceOnly=true&q=a%20b%26c%3Dd%2F%C3%A9"
    with pytest.raises(TypeError):
        render(0.1)
    with pytest.raises(ValueError):
        render(Decimal("NaN"))


class _Capture:
    """A loopback HTTP server that records the raw bytes of one request and answers ``{}``."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.raw = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(5)
            while b"\r\n\r\n" not in self.raw:
                self.raw += conn.recv(65536)
            head, _, body = self.raw.partition(b"\r\n\r\n")
            sizes = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")]
            length = sizes[0] if sizes else 0
            while len(body) < length:
                body += conn.recv(65536)
            self.raw = head + b"\r\n\r\n" + body
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        self.sock.close()

    def lines(self) -> tuple[list[bytes], bytes]:
        self.thread.join(5)
        head, _, body = self.raw.partition(b"\r\n\r\n")
        return head.split(b"\r\n"), body


def test_documented_rest_request_on_the_wire() -> None:
    """The rest-api.md example: ``POST /api/v3/order?<payload>&signature=<sig>`` with ``X-MBX-APIKEY``, as the
    bytes urllib3 actually writes to a loopback socket."""
    vec = SIGNING["binance_spot_rest_hmac_ascii"]
    http = vec["http"]
    cap = _Capture()
    url = f"http://127.0.0.1:{cap.port}{http['path']}?{binance_signed_query(ORDER, vec['secret'])}"
    resp = urllib3.PoolManager().request(http["method"], url, headers=http["header"], retries=False)
    assert resp.status == 200
    lines, _ = cap.lines()
    expected = f"POST /api/v3/order?{vec['payload']}&signature={vec['expected_signature']} HTTP/1.1".encode()
    assert lines[0] == expected
    assert f"X-MBX-APIKEY: {vec['api_key']}".encode() in lines[1:]


def test_documented_rest_request_in_the_body() -> None:
    """The same order with every parameter in the form body (signature last)."""
    vec = SIGNING["binance_spot_rest_hmac_ascii"]
    cap = _Capture()
    body = binance_signed_query(ORDER, vec["secret"])
    urllib3.PoolManager().request("POST", f"http://127.0.0.1:{cap.port}/api/v3/order", body=body.encode(),
                                  headers={**vec["http"]["header"],
                                           "Content-Type": "application/x-www-form-urlencoded"}, retries=False)
    lines, sent = cap.lines()
    assert lines[0] == b"POST /api/v3/order HTTP/1.1"
    assert sent == f"{vec['payload']}&signature={vec['expected_signature']}".encode()


# ------------------------------------------------------------------------------------------ Binance WebSocket API


def test_wsapi_order_place_example() -> None:
    """web-socket-api.md ``order.place`` request: params -> signed params (payload and signature exact)."""
    vec = SIGNING["binance_spot_wsapi_order_place_example"]
    params = {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
              "price": "23416.10000000", "quantity": "0.00847000", "timestamp": 1660801715431}
    signed = wsapi_signed_params(params, vec["api_key"], vec["secret"])
    assert wsapi_payload(signed) == vec["payload"]
    assert signed["signature"] == vec["expected_signature"]
    assert signed == {**params, "apiKey": vec["api_key"], "signature": vec["expected_signature"]}
    assert list(signed)[-1] == "signature" and signed["timestamp"] == 1660801715431  # JSON ints stay ints
    request = json.dumps({"id": "56374a46-3061-486b-a311-99ee972eb648", "method": "order.place", "params": signed},
                         separators=(",", ":"), ensure_ascii=False)
    assert f'"signature":"{vec["expected_signature"]}"' in request
    assert "signature" not in params  # the input is not modified


@pytest.mark.parametrize("vid", ["binance_spot_wsapi_hmac_ascii", "binance_spot_wsapi_hmac_non_ascii",
                                 "binance_spot_wsapi_session_logon_example"])
def test_wsapi_vectors_from_params(vid: str) -> None:
    vec = SIGNING[vid]
    # the vector's payload is raw k=v pairs: rebuild the params (numbers as ints) in a shuffled order
    pairs = [kv.split("=", 1) for kv in vec["payload"].split("&")]
    params = {k: int(v) if k in ("timestamp", "recvWindow") else v for k, v in reversed(pairs) if k != "apiKey"}
    params["signature"] = "stale"  # an old signature is replaced, never signed
    signed = wsapi_signed_params(params, vec["api_key"], vec["secret"])
    assert wsapi_payload(signed) == vec["payload"]
    assert signed["signature"] == vec["expected_signature"]


def test_wsapi_bools_lowercase() -> None:
    signed = wsapi_signed_params({"reduceOnly": True, "timestamp": 1}, "k", "s")
    assert wsapi_payload(signed) == "apiKey=k&reduceOnly=true&timestamp=1"
    assert signed["reduceOnly"] is True


# ------------------------------------------------------------------------------------------ KuCoin


def _independent_kucoin(secret: str, passphrase: str, text: str) -> tuple[str, str]:
    sign = base64.b64encode(hmac.digest(secret.encode(), text.encode(), "sha256")).decode()
    pp = base64.b64encode(hmac.digest(secret.encode(), passphrase.encode(), "sha256")).decode()
    return sign, pp


@pytest.mark.parametrize(("method", "endpoint", "body"), [
    ("GET", "/api/v1/hf/orders/client-order/sig-1_a?symbol=BTC-USDT", ""),
    ("DELETE", "/api/v1/hf/orders/client-order/sig-1_a?symbol=BTC-USDT", ""),
    ("POST", "/api/v1/hf/orders", '{"clientOid":"sig-1_a","side":"buy","symbol":"BTC-USDT","type":"limit",'
                                  '"price":"30000.1","size":"0.001","timeInForce":"IOC","postOnly":false}'),
])
def test_kucoin_full_request(method: str, endpoint: str, body: str) -> None:
    """Self-computed vector (KuCoin publishes none): headers against a direct hmac computation."""
    creds = Credentials("6582d0b1a7b3c80001b2c3d4", "0f9e8d7c-6b5a-4321-9fed-cba987654321", "my passphrase")
    ts = 1_700_000_000_123
    sign, pp = _independent_kucoin(creds.secret, creds.passphrase, f"{ts}{method}{endpoint}{body}")
    assert kucoin_headers(creds, ts, method.lower(), endpoint, body) == {
        "KC-API-KEY": creds.api_key, "KC-API-SIGN": sign, "KC-API-TIMESTAMP": "1700000000123",
        "KC-API-PASSPHRASE": pp, "KC-API-KEY-VERSION": "3", "Content-Type": "application/json"}


def test_kucoin_simulator_credentials() -> None:
    h = kucoin_headers(SIMULATOR, 1, "POST", "/api/v1/bullet-private", "")
    assert h["KC-API-KEY"] == "lowlat-sim-key"
    assert h["KC-API-PASSPHRASE"] == base64.b64encode(
        hmac.new(b"lowlat-sim-secret", b"lowlat-sim-pass", hashlib.sha256).digest()).decode()


# ------------------------------------------------------------------------------------------ credentials


def test_credentials_never_show_secrets() -> None:
    creds = Credentials("AKIAsuperlongapikey123", "s3cr3t-value-xyz", "pass-phrase-abc")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds]), repr({"c": creds})):
        assert "s3cr3t-value-xyz" not in text and "pass-phrase-abc" not in text
        assert "AKIAsuperlongapikey123" not in text and "AKIA" in text
    assert "lowlat-sim-secret" not in repr(SIMULATOR)


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LL_TEST_KEY", "key-value-1234")
    monkeypatch.setenv("LL_TEST_SECRET", "secret-value-5678")
    monkeypatch.setenv("LL_TEST_PASS", "pass-value-9012")
    creds = Credentials.from_env("LL_TEST_KEY", "LL_TEST_SECRET", "LL_TEST_PASS")
    assert creds == Credentials("key-value-1234", "secret-value-5678", "pass-value-9012")
    assert Credentials.from_env("LL_TEST_KEY", "LL_TEST_SECRET").passphrase == ""

    monkeypatch.delenv("LL_TEST_PASS")
    with pytest.raises(ValueError) as info:
        Credentials.from_env("LL_TEST_KEY", "LL_TEST_SECRET", "LL_TEST_PASS")
    monkeypatch.setenv("LL_TEST_SECRET", "")
    with pytest.raises(ValueError) as info2:
        Credentials.from_env("LL_TEST_KEY", "LL_TEST_SECRET", "LL_TEST_PASS")
    for exc, var in ((info.value, "LL_TEST_PASS"), (info2.value, "LL_TEST_SECRET")):
        text = f"{exc!s} {exc!r}"
        assert var in text and "\n" not in str(exc)
        for secret in ("key-value-1234", "secret-value-5678", "pass-value-9012"):
            assert secret not in text
