"""The one place requests are sent: base URL, bearer token, retries, and errors translated."""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests
import urllib3

from . import __version__
from .errors import ClientAuthenticationError, HttpResponseError, O16nError, from_response, retry_after

if TYPE_CHECKING:
    from .credentials import Credential

log = logging.getLogger("o16n")
#: GETs and DELETEs are retried on these (a cold instance, a storage hiccup); POSTs never are
_RETRY_STATUS = {502, 503, 504}
_RETRIES = 3


class TrustingSession(requests.Session):
    """A session that trusts `verify` (a CA bundle's path, or False) on every request: requests
    lets REQUESTS_CA_BUNDLE override a session's own `verify`, not a request's."""

    def __init__(self, verify: bool | str = True) -> None:
        super().__init__()
        self._verify = verify

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self._verify is not True:
            kwargs.setdefault("verify", self._verify)
        return super().request(method, url, *args, **kwargs)


def segment(value: str, what: str) -> str:
    """A value that goes into a URL path: refused client-side when it could not name anything."""
    if not isinstance(value, str) or not value or value in {".", ".."}:
        raise ValueError(f"{what} must be a non-empty string")
    return quote(value, safe="")


class Transport:
    def __init__(self, endpoint: str, credential: Credential | None, *, timeout: float = 120.0,
                 verify: bool | str = True, max_bytes: int = 1 << 30) -> None:
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ValueError("endpoint must be the server's http:// or https:// address")
        parts = urlsplit(endpoint)
        if parts.username is not None or parts.password is not None:
            # requests would send them as Basic auth, and they would sit in the profile
            raise ValueError("the server's address must not hold a user name or password")
        self.endpoint = endpoint.rstrip("/")
        self.credential = credential
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.session = TrustingSession(verify)
        self.session.headers["User-Agent"] = f"o16n-client/{__version__}"
        # uncompressed answers only: a small compressed one could inflate past any sane size
        self.session.headers["Accept-Encoding"] = "identity"
        if credential is not None:
            credential.attach(self)

    def url(self, path: str) -> str:
        return f"{self.endpoint}/{path.lstrip('/')}"

    def send(self, method: str, path: str, *, authenticated: bool = True, **kwargs: Any) -> requests.Response:
        """The answer to one request; a non-2xx answer raises the error it stands for."""
        kwargs.setdefault("timeout", self.timeout)
        # o16n never redirects: following one would re-send a password or a refresh token elsewhere
        kwargs["allow_redirects"] = False
        base_headers = kwargs.pop("headers", None) or {}
        retried_auth = False
        for attempt in range(_RETRIES + 1):
            headers = dict(base_headers)
            if authenticated:
                if self.credential is None:
                    raise ClientAuthenticationError("no credential: sign in first (o16n login)")
                headers["Authorization"] = "Bearer " + self.credential.get_token(force_refresh=retried_auth)
            try:
                deadline = time.monotonic() + self.timeout
                response = self._read(self._within_deadline(method, path, headers, kwargs), deadline)
            except requests.RequestException as exc:
                if method in ("GET", "DELETE") and attempt < _RETRIES:
                    time.sleep(0.5 * 2 ** attempt)
                    continue
                raise O16nError(f"could not reach {self.endpoint}: {type(exc).__name__}") from exc
            if 200 <= response.status_code < 300:
                return response
            if 300 <= response.status_code < 400:
                raise HttpResponseError("the server answered with a redirect, which the client does not follow "
                                        "(is the server's address right, with https?)",
                                        status_code=response.status_code)
            if response.status_code == 401 and authenticated and not retried_auth \
                    and self.credential is not None and self.credential.can_refresh:
                retried_auth = True  # the token may have been renewed or revoked elsewhere: once more, fresh
                continue
            if response.status_code in _RETRY_STATUS and method in ("GET", "DELETE") and attempt < _RETRIES:
                time.sleep(min(retry_after(response.headers) or 1.0, 5.0) * (attempt + 1) / 2)
                continue
            error = from_response(response.status_code, _body(response), response.headers)
            log.info("%s %s -> %s %s", method, path.split("?")[0], response.status_code, error.error_code)
            raise error
        raise HttpResponseError("gave up after retries")  # pragma: no cover - the loop returns or raises

    def _within_deadline(self, method: str, path: str, headers: dict, kwargs: dict) -> requests.Response:
        """The answer's status and headers, within `timeout` in all: requests bounds each read
        only, so headers sent a line at a time could hold the call forever. On a deadline the
        caller gets control back; the request's thread ends when the server stops sending or a
        read times out, and closes what it got."""
        done: dict[str, Any] = {}
        lock = threading.Lock()

        def run() -> None:
            try:
                response = self.session.request(method, self.url(path), headers=headers, stream=True, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                with lock:
                    done["error"] = exc
                return
            with lock:
                if done.get("abandoned"):
                    response.close()  # the caller gave up: its connection is not kept open
                else:
                    done["response"] = response
        worker = threading.Thread(target=run, name="o16n-request", daemon=True)
        worker.start()
        worker.join(self.timeout)  # the first part of the one deadline `_read` finishes
        with lock:
            if "error" in done:
                raise done["error"]
            if "response" not in done:
                done["abandoned"] = True
                raise self._too_slow()
            return done["response"]

    def _read(self, response: requests.Response, deadline: float) -> requests.Response:
        """The whole body, within `timeout` in all (requests' timeout bounds each read only, so a
        trickling server could hold a call forever) and within `max_bytes`."""
        body = bytearray()
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            response.close()
            raise O16nError(f"the server compressed its answer ({encoding[:20]}) although asked not to")
        with response:
            while True:
                try:  # read1: what has arrived, not a full chunk (read() waits for 64 KiB, however slowly)
                    chunk = response.raw.read1(1 << 16, decode_content=True)
                except (urllib3.exceptions.HTTPError, OSError) as exc:  # what iter_content would have wrapped
                    raise requests.ConnectionError(str(exc)) from exc
                if not chunk:
                    break
                body += chunk
                if len(body) > self.max_bytes:
                    raise O16nError(f"the server's answer is larger than {self.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise self._too_slow()
        response._content = bytes(body)  # noqa: SLF001 - what requests keeps once it has read a body
        response._content_consumed = True  # noqa: SLF001
        return response

    def _too_slow(self) -> O16nError:
        return O16nError(f"the server took longer than {self.timeout:g} s to answer")

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.send(method, path, **kwargs)
        return _body(response) if response.content else None


def _body(response: requests.Response) -> Any:
    if "json" in response.headers.get("Content-Type", ""):
        try:
            return response.json()
        except (ValueError, RecursionError):  # not JSON, or nested past what Python parses
            pass
    return response.text
