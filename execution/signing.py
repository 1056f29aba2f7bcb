"""Request signing for the venues: API credentials that never print their secrets, Binance HMAC-SHA256 (REST
query/body payloads and WebSocket-API params) and KuCoin v3 key headers.

Binance REST (EXCHANGES.md 2.4): the payload is the percent-encoded ``k=v&...`` query string concatenated WITHOUT
separator with the url-encoded body; since 2026-01-15 non-ASCII must be percent-encoded BEFORE signing (else
-1022); the signature is the lowercase hex HMAC-SHA256 of that payload and is appended as the last parameter.
Binance WebSocket API (2.7, 3.5): every param except ``signature``, sorted by name, joined ``k=v&...`` as raw
UTF-8 (no percent-encoding). KuCoin (1.7): ``KC-API-SIGN`` = base64 HMAC-SHA256 over
``timestamp + METHOD + endpoint(+?query) + body``, ``KC-API-PASSPHRASE`` = base64 HMAC of the passphrase, key
version "3".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from urllib.parse import quote

Params = Mapping[str, object] | Iterable[tuple[str, object]]
"""Request parameters: a mapping (insertion order kept) or ``(name, value)`` pairs."""

_UNRESERVED = "-_.~"
"""RFC 3986 unreserved characters besides letters and digits: everything else is percent-encoded (UTF-8)."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """One API key. ``repr``/``str`` show only the key's first 4 characters, never the secret or passphrase."""

    api_key: str
    secret: str
    passphrase: str = ""

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.api_key[:4]!r}…, secret=***, passphrase={'***' if self.passphrase else ''})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, key_var: str, secret_var: str, passphrase_var: str | None = None) -> Credentials:
        """Read the key, secret (and passphrase) from the named environment variables; a missing or empty one
        raises ``ValueError`` naming the variable (never a value)."""
        names = [key_var, secret_var] + ([passphrase_var] if passphrase_var else [])
        values = []
        for name in names:
            value = os.environ.get(name, "")
            if not value:
                raise ValueError(f"environment variable {name} is not set (or empty)")
            values.append(value)
        return cls(*values)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], key_var: str, secret_var: str,
                  passphrase_var: str | None = None) -> Credentials:
        """Read them from a file of ``NAME=value`` lines (the environment variables' names; blank lines and
        ``#`` comments skipped) that must be yours and mode 0600: a file others can read is refused. Errors are
        one-line ``ValueError``s naming the file, line or variable, never a value."""
        where = os.fspath(path)
        try:
            fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise ValueError(f"credentials file {where}: {e.strerror}") from None
        with os.fdopen(fd, encoding="utf-8") as f:
            st = os.fstat(fd)
            if st.st_uid != os.getuid():
                raise ValueError(f"credentials file {where} belongs to uid {st.st_uid}, not to you (uid "
                                 f"{os.getuid()}): refused")
            if st.st_mode & 0o077:
                raise ValueError(f"credentials file {where} is mode {st.st_mode & 0o777:04o}: others may read "
                                 f"it; refused until `chmod 600 {where}`")
            text = f.read()
        found: dict[str, str] = {}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, eq, value = line.removeprefix("export ").partition("=")
            if not eq or not name.strip():
                raise ValueError(f"credentials file {where}, line {n}: not NAME=value")
            found[name.strip()] = value.strip()
        names = [key_var, secret_var] + ([passphrase_var] if passphrase_var else [])
        missing = [name for name in names if not found.get(name)]
        if missing:
            raise ValueError(f"credentials file {where} has no {', '.join(missing)} (or it is empty)")
        return cls(*(found[name] for name in names))


SIMULATOR = Credentials("lowlat-sim-key", "lowlat-sim-secret", "lowlat-sim-pass")
"""The local simulator's public test credentials (``python -m feeds.simulator``; overridable with its
``--api-key/--api-secret/--api-passphrase``). Like the exchanges' documented example keys they are published on
purpose and are NOT secrets: only the local simulator accepts them."""


def render(value: object) -> str:
    """A parameter value as the venues expect it on the wire: bools ``true``/``false``, ints and Decimals as
    plain digits (no exponent), strings unchanged. Floats are refused (use Decimal or an exact string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"non-finite Decimal parameter {value}")
        return format(value, "f")
    raise TypeError(f"unsupported parameter type {type(value).__name__} (floats are not exact: use Decimal/str)")


def _pairs(params: Params) -> list[tuple[str, object]]:
    return list(params.items()) if isinstance(params, Mapping) else list(params)


# ---------------------------------------------------------------------------------------------------- Binance


def binance_query(params: Params) -> str:
    """The percent-encoded ``k=v&k=v`` payload (parameter order kept) exactly as sent and signed."""
    return "&".join(f"{quote(k, safe=_UNRESERVED)}={quote(render(v), safe=_UNRESERVED)}" for k, v in _pairs(params))


def binance_sign(secret: str, payload: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``payload`` (REST: the percent-encoded query+body; WS-API: the sorted raw
    params). MEXC spot v3 signs the same way."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def binance_sign_parts(secret: str, query: str, body: str) -> str:
    """Signature of a request with parameters both in the query string and the form body: the HMAC covers
    ``query + body`` concatenated without separator (each already percent-encoded, without ``signature``)."""
    return binance_sign(secret, query + body)


def binance_signed_query(params: Params, secret: str) -> str:
    """``binance_query(params)`` with ``&signature=<hex>`` appended last: the whole query string (or form body)
    of a signed request whose parameters all travel in one place."""
    payload = binance_query(params)
    return f"{payload}&signature={binance_sign(secret, payload)}"


def wsapi_payload(params: Mapping[str, object]) -> str:
    """The WebSocket-API signature payload: every param except ``signature``, sorted by name, ``k=v`` joined
    with ``&``, raw UTF-8 (NOT percent-encoded)."""
    return "&".join(f"{k}={render(params[k])}" for k in sorted(params) if k != "signature")


def wsapi_signed_params(params: Mapping[str, object], api_key: str, secret: str) -> dict[str, object]:
    """WebSocket-API ``params`` with ``apiKey`` set and ``signature`` (hex HMAC over ``wsapi_payload``) added
    last; the other values keep their JSON types (INT params as ints, DECIMAL params as strings)."""
    signed = {k: v for k, v in params.items() if k != "signature"}
    signed["apiKey"] = api_key
    signed["signature"] = binance_sign(secret, wsapi_payload(signed))
    return signed


# ---------------------------------------------------------------------------------------------------- KuCoin


def kucoin_sign(secret: str, text: str) -> str:
    """Base64 HMAC-SHA256 of ``text`` under ``secret`` (KuCoin's signing primitive)."""
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()).decode()


@lru_cache(maxsize=8)
def _kucoin_passphrase(secret: str, passphrase: str) -> str:
    return kucoin_sign(secret, passphrase)


def kucoin_headers(creds: Credentials, ts_ms: int, method: str, endpoint: str, body: str) -> dict[str, str]:
    """The private-call headers: ``endpoint`` is the path plus ``?query`` (for GET/DELETE, exactly as sent),
    ``body`` the exact JSON text sent (``""`` when none), ``ts_ms`` the ms timestamp also sent."""
    ts = str(int(ts_ms))
    return {
        "KC-API-KEY": creds.api_key,
        "KC-API-SIGN": kucoin_sign(creds.secret, ts + method.upper() + endpoint + body),
        "KC-API-TIMESTAMP": ts,
        "KC-API-PASSPHRASE": _kucoin_passphrase(creds.secret, creds.passphrase),
        "KC-API-KEY-VERSION": "3",
        "Content-Type": "application/json",
    }
