"""A set on a web server (http:// or https://): any static server that answers Range requests
(nginx, Apache, lighttpd, a CDN). One kept-alive connection; every read is one ranged GET. A login,
when the server wants one, comes from ~/.netrc (machine HOST login USER password PW) — never from
the URL or the command line."""

from __future__ import annotations

import base64
import http.client
import logging
import netrc
import ssl
from pathlib import Path
from urllib.parse import SplitResult, quote

from mkrec.remote.place import SourceError

log = logging.getLogger("mkrec.remote")

TIMEOUT = 60  # seconds without an answer before the server counts as gone
NETRC = Path("~/.netrc")


class HttpFetcher:
    def __init__(self, url: SplitResult) -> None:
        self.url = url.geturl()
        self.https = url.scheme == "https"
        self.host = url.hostname or ""
        self.port = url.port
        self.base = url.path if url.path.endswith("/") else url.path + "/"
        self._auth = _netrc_auth(self.host)
        self._conn: http.client.HTTPConnection | None = None

    def size(self, path: str) -> int | None:
        resp, _body = self._request("HEAD", path)
        if resp.status == 404:
            return None
        self._check(resp, path, (200,))
        length = resp.getheader("Content-Length")
        if length is not None:
            return int(length)
        # No length on HEAD (some dynamic servers): a one-byte range names the size in Content-Range
        resp, _body = self._request("GET", path, {"Range": "bytes=0-0"})
        self._check(resp, path, (206,))
        return int((resp.getheader("Content-Range") or "/0").rsplit("/", 1)[1])

    def read(self, path: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        resp, body = self._request("GET", path, {"Range": f"bytes={offset}-{offset + length - 1}"})
        if resp.status == 404:
            raise FileNotFoundError(f"{self._where(path)}: no such file on the server (HTTP 404)")
        if resp.status == 416:  # the range starts after the end
            return b""
        if resp.status == 200:
            raise SourceError(
                f"{self._where(path)}: the web server ignores Range requests",
                hint="serve the set with a server that answers them (nginx, Apache, lighttpd)",
            )
        self._check(resp, path, (206,))
        return body

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- one request, on the kept connection (opened again once when the server closed it) ----

    def _request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        target = self.base + quote(path)
        headers = {**(headers or {}), **({"Authorization": self._auth} if self._auth else {})}
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, target, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                log.debug(
                    "http: %s %s %s -> %d (%d bytes)",
                    method,
                    target,
                    headers.get("Range", ""),
                    resp.status,
                    len(body),
                )
                return resp, body
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()  # a kept-alive connection the server has dropped meanwhile
                if attempt == 2:
                    raise self._unreachable("the server closed the connection") from None
            except ssl.SSLError as exc:
                self.close()
                raise SourceError(
                    f"{self.url}: TLS failed ({exc.reason or exc})", hint="check the server's certificate"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                raise self._unreachable(why) from None
        raise AssertionError("not reached")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = kind(self.host, self.port, timeout=TIMEOUT)
        return self._conn

    def _check(self, resp: http.client.HTTPResponse, path: str, ok: tuple[int, ...]) -> None:
        if resp.status in ok:
            return
        where, status = self._where(path), f"HTTP {resp.status} {resp.reason}"
        if resp.status in (401, 403):
            raise SourceError(
                f"{where}: access denied ({status})",
                hint=f"put the login into ~/.netrc: machine {self.host} login USER password PASSWORD",
            )
        raise SourceError(f"{where}: the server answered {status}")

    def _where(self, path: str) -> str:
        return f"{self.url.rstrip('/')}/{path}"

    def _unreachable(self, why: str) -> SourceError:
        port = self.port or (443 if self.https else 80)
        return SourceError(
            f"{self.url}: cannot reach {self.host}:{port} ({why})",
            hint="check the address, that the web server runs, and the network (ip addr; ip route)",
        )


def _netrc_auth(host: str) -> str | None:
    """Basic authentication for host from ~/.netrc, if it names the host."""
    path = NETRC.expanduser()
    if not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        raise SourceError(f"{path}: {exc}") from None
    if not entry:
        return None
    login, _account, password = entry
    return "Basic " + base64.b64encode(f"{login}:{password or ''}".encode()).decode()
