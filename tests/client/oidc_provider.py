"""A loopback stand-in for Entra ID that the real msal library signs in against: the device code
flow (with refresh tokens) and the client credentials flow, tokens as o16n's server accepts them.

HTTPS on https://localhost:{port}/{tenant} (msal refuses plain http) with a certificate from a
CA made here (`ca_file`); the same JWKS also on plain http (`jwks_url`), so a server needs no CA.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import secrets
import shutil
import ssl
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Scopes msal adds to every user request; they shape the response, they name no API.
OIDC_SCOPES = {"openid", "profile", "offline_access"}


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class Provider:
    """clients: client id -> secret (None: a public client); users: name -> {"oid", "roles"} (app roles
    on the API); app_roles: client id -> roles of its app-only tokens. `authority`, `jwks_url` and
    `ca_file` exist once started (a context manager, or start()/stop())."""

    def __init__(self, *, tenant: str, api: str, clients: dict[str, str | None], users: dict[str, dict],
                 app_roles: dict[str, list[str]], token_lifetime: int = 3600, device_code_lifetime: int = 900,
                 interval: int = 1):
        self.tenant, self.api, self.clients, self.users, self.app_roles = tenant, api, clients, users, app_roles
        self.token_lifetime = token_lifetime  # seconds; msal treats < 300 s as expired (forces a refresh)
        self.device_code_lifetime, self.interval = device_code_lifetime, interval
        self.issuer = f"https://login.microsoftonline.com/{tenant}/v2.0"  # what o16n's server expects
        self.token_requests: list[dict] = []
        self.kid = uuid.uuid4().hex
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._lock = threading.Lock()
        self._device_codes: dict[str, dict] = {}   # device_code -> {client_id, scopes, user_code, expires_at, user}
        self._refresh_tokens: dict[str, dict] = {}  # refresh token -> {client_id, user, scopes}; single use
        self._servers: list[ThreadingHTTPServer] = []
        self._dir: str | None = None

    def start(self) -> Provider:
        self._dir = tempfile.mkdtemp(prefix="oidc-")
        self.ca_file, cert_file, key_file = _make_tls_files(Path(self._dir))
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert_file, key_file)
        https, http = self._serve(tls), self._serve(None)
        self.authority = f"https://localhost:{https.server_port}/{self.tenant}"
        self.jwks_url = f"http://127.0.0.1:{http.server_port}/{self.tenant}/discovery/v2.0/keys"
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Provider:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def approve(self, user_code: str, user: str) -> None:
        if user not in self.users:
            raise ValueError(f"unknown user {user!r}")
        self._decide(user_code, user)

    def deny(self, user_code: str) -> None:
        self._decide(user_code, False)

    def revoke_refresh_tokens(self) -> None:
        with self._lock:
            self._refresh_tokens.clear()

    def _decide(self, user_code: str, user: str | bool) -> None:
        with self._lock:
            for flow in self._device_codes.values():
                if flow["user_code"] == user_code:
                    flow["user"] = user
                    return
        raise KeyError(f"no pending device flow with user code {user_code!r}")

    def _route(self, method: str, path: str, form: dict, authorization: str) -> tuple[int, dict]:
        base = f"/{self.tenant}"
        try:
            if method == "GET" and path == f"{base}/v2.0/.well-known/openid-configuration":
                return 200, self._configuration()
            if method == "GET" and path == f"{base}/discovery/v2.0/keys":
                return 200, self.jwks()
            if method == "POST" and path == f"{base}/oauth2/v2.0/devicecode":
                return 200, self._device_authorization(form)
            if method == "POST" and path == f"{base}/oauth2/v2.0/token":
                self.token_requests.append(dict(form))
                return 200, self._token(form, authorization)
        except OAuthError as e:
            return e.status, {"error": e.error, "error_description": e.description}
        return 404, {"error": "not_found", "error_description": f"no endpoint {method} {path}"}

    def _configuration(self) -> dict:
        base = f"{self.authority}/oauth2/v2.0"
        return {"issuer": self.issuer, "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token", "device_authorization_endpoint": f"{base}/devicecode",
                "jwks_uri": f"{self.authority}/discovery/v2.0/keys", "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code"], "subject_types_supported": ["pairwise"],
                "grant_types_supported": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token",
                                          "client_credentials"]}

    def jwks(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def _device_authorization(self, form: dict) -> dict:
        client_id = form.get("client_id", "")
        if client_id not in self.clients:
            raise OAuthError("unauthorized_client", f"the application {client_id!r} is not known here")
        scopes = self._user_scopes(form.get("scope", ""))
        device_code, user_code = secrets.token_urlsafe(32), secrets.token_hex(4).upper()
        with self._lock:
            self._device_codes[device_code] = {"client_id": client_id, "scopes": scopes, "user_code": user_code,
                                               "expires_at": time.time() + self.device_code_lifetime, "user": None}
        uri = f"{self.authority}/devicelogin"
        return {"device_code": device_code, "user_code": user_code, "verification_uri": uri,
                "expires_in": self.device_code_lifetime, "interval": self.interval,
                # Entra's wording, which msal clients print as is
                "message": f"To sign in, use a web browser to open the page {uri} and enter the code {user_code} "
                           "to authenticate."}

    def _token(self, form: dict, authorization: str) -> dict:
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if authorization.startswith("Basic "):  # RFC 6749's preferred way; msal posts it in the form
            client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        if client_id not in self.clients:
            raise OAuthError("unauthorized_client", f"the application {client_id!r} is not known here")
        expected = self.clients[client_id]
        if expected is not None and not secrets.compare_digest(secret or "", expected):
            raise OAuthError("invalid_client", "invalid client secret provided", 401)
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            return self._device_code_grant(client_id, form)
        if grant == "refresh_token":
            scopes = self._user_scopes(form["scope"]) if form.get("scope") else None
            with self._lock:  # rotating: each refresh token is good for one exchange
                rt = self._refresh_tokens.pop(form.get("refresh_token", ""), None)
            if rt is None or rt["client_id"] != client_id:
                raise OAuthError("invalid_grant", "the refresh token has expired, was revoked or was already used")
            return self._user_tokens(client_id, rt["user"], scopes or rt["scopes"], form)
        if grant == "client_credentials":
            if expected is None:
                raise OAuthError("invalid_client", "a public client has no credentials to present", 401)
            if form.get("scope") != f"api://{self.api}/.default":
                raise OAuthError("invalid_scope", f"the scope {form.get('scope')!r} is not valid; "
                                 f"app-only tokens need api://{self.api}/.default")
            return self._access_token(client_id, None, _sp_oid(client_id), self.app_roles.get(client_id, []))
        raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")

    def _device_code_grant(self, client_id: str, form: dict) -> dict:
        with self._lock:
            flow = self._device_codes.get(form.get("device_code", ""))
            if flow is None or flow["client_id"] != client_id:
                raise OAuthError("invalid_grant", "unknown device code")
            if time.time() > flow["expires_at"]:
                raise OAuthError("expired_token", "the device code has expired")
            if flow["user"] is None:
                raise OAuthError("authorization_pending", "the user has not yet finished authorizing")
            del self._device_codes[form["device_code"]]  # a device code is redeemed once
        if flow["user"] is False:
            raise OAuthError("authorization_declined", "the user declined the authorization request")
        return self._user_tokens(client_id, flow["user"], flow["scopes"], form)

    def _user_scopes(self, scope: str) -> list[str]:
        scopes = scope.split()
        api = [s for s in scopes if s not in OIDC_SCOPES]
        allowed = {f"api://{self.api}/user_impersonation", f"api://{self.api}/.default"}
        if not api or not set(api) <= allowed:
            raise OAuthError("invalid_scope", f"the scope {scope!r} is not valid; ask for "
                             f"api://{self.api}/user_impersonation")
        return scopes

    def _user_tokens(self, client_id: str, user: str, scopes: list[str], form: dict) -> dict:
        info = self.users[user]
        out = self._access_token(client_id, user, info["oid"], info.get("roles", []))
        out["scope"] = " ".join(s for s in scopes if s not in OIDC_SCOPES)
        if "openid" in scopes:  # msal names the account (get_accounts' username) from the ID token
            now = int(time.time())
            out["id_token"] = self._sign({
                "iss": self.issuer, "aud": client_id, "tid": self.tenant, "oid": info["oid"],
                "sub": _pairwise(info["oid"], client_id), "preferred_username": user, "name": user,
                "iat": now, "nbf": now, "exp": now + 3600, "ver": "2.0"})
        if form.get("client_info") == "1":  # msal keys its cache by uid.utid; without it, by sub
            out["client_info"] = _b64(json.dumps({"uid": info["oid"], "utid": self.tenant}).encode())
        if "offline_access" in scopes:
            rt = secrets.token_urlsafe(32)
            with self._lock:
                self._refresh_tokens[rt] = {"client_id": client_id, "user": user, "scopes": scopes}
            out["refresh_token"] = rt
        return out

    def _access_token(self, client_id: str, user: str | None, oid: str, roles: list[str]) -> dict:
        now, lifetime = int(time.time()), self.token_lifetime
        claims = {"iss": self.issuer, "aud": self.api, "tid": self.tenant, "oid": oid,
                  "sub": _pairwise(oid, self.api) if user else oid, "azp": client_id,
                  "azpacr": "0" if self.clients[client_id] is None else "1", "iat": now, "nbf": now,
                  "exp": now + lifetime, "ver": "2.0", "uti": uuid.uuid4().hex}
        if user:
            claims.update(scp="user_impersonation", name=user, preferred_username=user)
        else:
            claims["idtyp"] = "app"
        if roles:  # Entra leaves the claim out when nothing is assigned
            claims["roles"] = list(roles)
        return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                "access_token": self._sign(claims)}

    def _sign(self, claims: dict) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def _serve(self, tls: ssl.SSLContext | None) -> ThreadingHTTPServer:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self):
                if tls:  # the handshake happens here, in the request's thread, not in accept()
                    self.request = tls.wrap_socket(self.request, server_side=True)
                super().setup()

            def do_GET(self):  # noqa: N802
                self._answer("GET", {})

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                self._answer("POST", {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()})

            def _answer(self, method, form):
                status, body = provider._route(method, urlparse(self.path).path, form,
                                               self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                if not isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
                    super().handle_error(request, client_address)  # a client that distrusts the CA is no bug

        server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._servers.append(server)
        return server


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _pairwise(oid: str, audience: str) -> str:
    """Entra's sub: stable per user and application, unlike oid."""
    return _b64(hashlib.sha256(f"{oid}|{audience}".encode()).digest())


def _sp_oid(client_id: str) -> str:
    """The object id of a client's service principal, stable per client."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{client_id}"))


def _make_tls_files(folder: Path) -> tuple[str, str, str]:
    """A throwaway CA and a leaf for localhost and 127.0.0.1: (ca_file, cert_file, key_file)."""
    now = datetime.now(timezone.utc)

    def cert(subject, issuer, key, signer, *extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=2))
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    def usage(**on):
        names = ("digital_signature content_commitment key_encipherment data_encipherment key_agreement "
                 "key_cert_sign crl_sign encipher_only decipher_only").split()
        return x509.KeyUsage(**{n: on.get(n, False) for n in names})

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "o16n test CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, (x509.BasicConstraints(ca=True, path_length=0), True),
              (usage(key_cert_sign=True, crl_sign=True), True))
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), ca_name, leaf_key, ca_key,
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (usage(digital_signature=True), True),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
                (x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                              x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
                (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False))
    pem = serialization.Encoding.PEM
    files = folder / "ca.pem", folder / "leaf.pem", folder / "leaf.key"
    files[0].write_bytes(ca.public_bytes(pem))
    files[1].write_bytes(leaf.public_bytes(pem))
    files[2].write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return tuple(str(f) for f in files)
