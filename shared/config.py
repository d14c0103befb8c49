"""Settings, declared once and read once from the environment (app settings in Azure,
local.settings.json `Values` locally)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from functools import lru_cache

from . import passwords
from .errors import ConfigError

_PLACEHOLDER = "change-me"
_UNRESOLVED = ("@microsoft.keyvault(", "@microsoft.appconfiguration(")
# a Storage queue name with room for "-poison" (queue names hold at most 63 characters)
_QUEUE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,54}[a-z0-9]")
#: ML Server's roles, most rights first
ROLES = ("Owner", "Contributor", "Reader")


@dataclass(frozen=True)
class Settings:
    #: Azurite or a real account; when empty, STORAGE_BLOB_ENDPOINT/STORAGE_TABLE_ENDPOINT/STORAGE_QUEUE_ENDPOINT
    #: are used with the app's managed identity.
    storage_connection_string: str = ""
    storage_blob_endpoint: str = ""
    storage_table_endpoint: str = ""
    storage_queue_endpoint: str = ""
    #: prefix of every table and container this app owns (letters and digits only)
    storage_prefix: str = "o16n"
    #: the deadline of one storage call, its retries included: past it the request answers 503
    #: with Retry-After (Azure's front end answers 504 after 230 s whatever the app does)
    storage_timeout_seconds: float = 10.0
    #: HS256 key for the access tokens /login issues; every instance must share it
    token_signing_key: str = ""
    #: HMAC key sealing every stored workspace before a worker may unpickle it
    snapshot_signing_key: str = ""
    #: during a key rotation, the key being replaced: still accepted to verify, never used to sign
    token_signing_key_previous: str = ""
    snapshot_signing_key_previous: str = ""
    #: Entra ID: the tenant whose tokens are accepted, and this API's audience(s), comma-separated
    #: (its application id and/or App ID URI). Both empty: only o16n's own tokens.
    aad_tenant_id: str = ""
    aad_audience: str = ""
    #: where the tenant's signing keys are read (default: the tenant's v2.0 JWKS)
    aad_jwks_url: str = ""
    #: after a key-set fetch, an unknown key id waits this long before another fetch (stops kid spam)
    aad_jwks_cooldown_seconds: float = 30.0
    #: the role of a delegated Entra token that carries AAD_SCOPE but none of the app roles Owner,
    #: Contributor, Reader ("none": such callers are refused)
    aad_default_role: str = "none"
    #: the delegated scope a user's token must carry (app-only tokens need an app role instead)
    aad_scope: str = "user_impersonation"
    #: the web page's own app registration in Entra ID (a single-page application whose redirect
    #: URI is this app's https://<host>/): with AAD_TENANT_ID and AAD_AUDIENCE set, the page offers
    #: Entra sign-in through MSAL.js and asks for AAD_AUDIENCE's AAD_SCOPE. Empty: local accounts only
    aad_spa_client_id: str = ""
    #: the admin's password: a hash from `python -m shared.passwords`, or a plain password of at
    #: least 12 characters that is hashed at start and never kept
    local_admin_password: str = ""
    #: extra local accounts, "user:password;user2:password2" (each password plain or hashed)
    local_users: str = ""
    #: roles of local accounts, "user:Owner;user2:Reader" (admin is Owner; others default to Contributor)
    local_roles: str = ""
    access_token_lifetime_seconds: int = 3600
    #: a refresh token unused this long expires
    refresh_token_lifetime_seconds: int = 14 * 24 * 3600
    #: renewals are allowed this long after the login that started the chain
    refresh_chain_lifetime_seconds: int = 90 * 24 * 3600
    #: how long an instance trusts what it knows of a token family (renewed or revoked elsewhere)
    token_state_ttl_seconds: float = 5.0
    #: failed logins for one user name before it is locked out (any password refused with 429)
    login_max_failures: int = 10
    #: failed logins from one client address before it is locked out
    login_max_failures_per_address: int = 50
    #: the first lock-out; each later one doubles, up to LOGIN_LOCKOUT_MAX_SECONDS
    login_lockout_seconds: float = 60.0
    login_lockout_max_seconds: float = 3600.0
    #: failures are forgotten after this long without one (and after the last lock-out ends)
    login_failure_window_seconds: float = 900.0
    #: the header whose last entry is the caller's address, appended by Azure's front end
    client_address_header: str = "X-Forwarded-For"
    #: "owned": a service name belongs to its first publisher, its co-publishers and Owners;
    #: "shared": any Contributor may publish a version under any name (ML Server's rule)
    service_names: str = "owned"
    #: "strict": user code runs only under Landlock + seccomp (refused with 503 where the kernel
    #: lacks them); "process": a separate process with limits only (README states the risks)
    sandbox: str = "strict"
    #: TCP ports user code may connect to, comma-separated (none by default; opens UDP too, for DNS)
    sandbox_outbound_ports: str = ""
    #: roles that may create and use sessions (ML Server let Readers too)
    session_roles: str = "Owner,Contributor"
    #: wall-clock budget of one execute or consume in a worker
    execution_timeout_seconds: float = 60.0
    #: address-space limit of each process a worker runs
    worker_memory_mb: int = 2048
    #: processes and threads a worker may have at once, itself included
    worker_max_processes: int = 64
    #: what a worker's folder may hold (files it writes, temp files)
    worker_disk_mb: int = 1024
    #: a saved workspace (objects + files) larger than this is refused
    max_workspace_mb: int = 256
    #: consoleOutput beyond this is cut
    max_console_bytes: int = 1024 * 1024
    max_request_bytes: int = 16 * 1024 * 1024
    #: how long a cached service definition is trusted before it is re-read
    service_cache_ttl_seconds: float = 5.0
    #: warm service workers kept per instance (least recently used retire first)
    max_warm_services: int = 16
    #: memory the warm service workers may hold together (PSS); past it the least recently used
    #: idle ones retire (0: only MAX_WARM_SERVICES bounds them)
    warm_services_mb: int = 1024
    #: workers a hot service may have, so concurrent calls need not queue behind one process
    #: (another starts when all are busy and WARM_SERVICES_MB has room). 1 by default: with one
    #: core, a second worker only adds switching (measured: c=8 p50 4.8x the floor instead of 2.9x)
    max_workers_per_service: int = 1
    max_warm_sessions: int = 8
    #: idle workers kept ready with PRELOAD_MODULES imported (0: start each worker on demand)
    spare_workers: int = 1
    #: template processes kept per instance, each with PRELOAD_MODULES imported, that fork new
    #: workers in milliseconds (sharing those modules' memory): one per group of people whose
    #: code workers run, so workers of different users never share one. 0: every worker is a
    #: fresh interpreter
    worker_templates: int = 2
    preload_modules: str = "numpy,pandas,sklearn.svm,sklearn.linear_model,sklearn.ensemble,sklearn.tree"
    #: the Storage queue of batch work (its poison queue is <name>-poison); empty: <prefix>-batch.
    #: The batch function's trigger reads this setting itself, so in Azure it must be set
    batch_queue: str = ""
    #: records one batch may hold, and the bytes of its request body
    batch_max_records: int = 100_000
    batch_max_bytes: int = 16 * 1024 * 1024
    #: records per stored chunk: a chunk is scored, written and counted as one
    batch_chunk_rows: int = 100
    #: the largest parallelCount a batch may ask for (records scored at once, across instances)
    batch_max_parallel: int = 64

    @property
    def queue_name(self) -> str:
        """The batch queue: instances with another STORAGE_PREFIX on the same account have their own."""
        return self.batch_queue or f"{self.storage_prefix.lower()}-batch"

    @property
    def outbound_port_list(self) -> list[int]:
        return [int(p) for p in _items(self.sandbox_outbound_ports)]

    @property
    def session_role_list(self) -> list[str]:
        return _items(self.session_roles)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            if raw.strip().casefold().startswith(_UNRESOLVED):
                # App Service passes a reference it could not resolve on as the value itself: text
                # anyone can work out from the app's name, never to be taken as a key or password.
                raise ConfigError(f"setting {f.name.upper()} is a Key Vault or App Configuration reference that "
                                  "App Service did not resolve: check that the app's identity may read it "
                                  "(Key Vault Secrets User), then refresh the app's references or restart it")
            try:
                values[f.name] = type(f.default)(raw)
            except ValueError:
                raise ConfigError(f"setting {f.name.upper()} must be a {type(f.default).__name__}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        for key in ("token_signing_key", "snapshot_signing_key"):
            value = getattr(self, key)
            if len(value) < 32 or _PLACEHOLDER in value:
                raise ConfigError(f"setting {key.upper()} must be a secret of at least 32 characters")
            previous = getattr(self, f"{key}_previous")
            if previous and (len(previous) < 32 or _PLACEHOLDER in previous):
                raise ConfigError(f"setting {key.upper()}_PREVIOUS must be empty or a secret of at least 32 characters")
        if not self.storage_connection_string and not (self.storage_blob_endpoint and self.storage_table_endpoint
                                                       and self.storage_queue_endpoint):
            raise ConfigError("set STORAGE_CONNECTION_STRING, or STORAGE_BLOB_ENDPOINT, STORAGE_TABLE_ENDPOINT and "
                              "STORAGE_QUEUE_ENDPOINT")
        if not self.storage_prefix.isalnum() or not self.storage_prefix[:1].isalpha():
            raise ConfigError("setting STORAGE_PREFIX must be letters and digits, starting with a letter")
        if self.aad_default_role not in (*ROLES, "none"):
            raise ConfigError(f"setting AAD_DEFAULT_ROLE must be one of {', '.join(ROLES)} or none")
        if self.service_names not in ("owned", "shared"):
            raise ConfigError("setting SERVICE_NAMES must be owned or shared")
        if not self.aad_scope or " " in self.aad_scope.strip():
            raise ConfigError("setting AAD_SCOPE must be one scope name, such as user_impersonation")
        for key in ("login_max_failures", "login_max_failures_per_address"):
            if getattr(self, key) < 1:
                raise ConfigError(f"setting {key.upper()} must be at least 1")
        if not 0 < self.login_lockout_seconds <= self.login_lockout_max_seconds:
            raise ConfigError("setting LOGIN_LOCKOUT_SECONDS must be above 0 and at most LOGIN_LOCKOUT_MAX_SECONDS")
        unknown = sorted(set(self.roles()) - set(self.accounts()) - {"admin"})
        if unknown:  # a typo here would leave that user a Contributor: fail loudly instead
            raise ConfigError("setting LOCAL_ROLES names an account that is not in LOCAL_USERS")
        if self.sandbox not in ("strict", "process"):
            raise ConfigError("setting SANDBOX must be strict or process")
        ports = _items(self.sandbox_outbound_ports)
        if not all(p.isdigit() and 0 < int(p) < 65536 for p in ports):
            raise ConfigError("setting SANDBOX_OUTBOUND_PORTS must be TCP port numbers, comma-separated")
        if not set(self.session_role_list) <= set(ROLES):
            raise ConfigError(f"setting SESSION_ROLES must list roles among {', '.join(ROLES)}")
        if self.warm_services_mb < 0 or self.worker_templates < 0:
            raise ConfigError("settings WARM_SERVICES_MB and WORKER_TEMPLATES must be 0 (none) or more")
        for key in ("worker_memory_mb", "worker_max_processes", "worker_disk_mb", "max_workspace_mb",
                    "max_workers_per_service"):
            if getattr(self, key) < 1:
                raise ConfigError(f"setting {key.upper()} must be at least 1")
        if not 0 < self.storage_timeout_seconds <= 60:
            raise ConfigError("setting STORAGE_TIMEOUT_SECONDS must be between 0 and 60")
        if not _QUEUE_NAME.fullmatch(self.queue_name) or "--" in self.queue_name:
            raise ConfigError("setting BATCH_QUEUE must be 3-56 lower-case letters, digits or single hyphens, "
                              "starting and ending with a letter or digit")
        for key in ("batch_max_records", "batch_max_bytes", "batch_chunk_rows", "batch_max_parallel"):
            if getattr(self, key) < 1:
                raise ConfigError(f"setting {key.upper()} must be at least 1")
        if not 0 < self.execution_timeout_seconds <= 200:
            # Azure answers 504 after 230 s whatever the function does.
            raise ConfigError("setting EXECUTION_TIMEOUT_SECONDS must be between 0 and 200")

    def accounts(self) -> dict[str, str]:
        """Local user name -> the password as configured (a scrypt$ hash or plain text)."""
        users = {}
        for n, pair in enumerate(filter(None, (p.strip() for p in self.local_users.split(";"))), 1):
            name, sep, password = pair.partition(":")
            if not sep or not name or not password:
                raise ConfigError("setting LOCAL_USERS must look like user:password;user2:password2")
            users[name] = _password(f"LOCAL_USERS (its account number {n})", password)
        if self.local_admin_password:
            users["admin"] = _password("LOCAL_ADMIN_PASSWORD", self.local_admin_password)
        return users

    def roles(self) -> dict[str, str]:
        roles = {}
        for n, pair in enumerate(filter(None, (p.strip() for p in self.local_roles.split(";"))), 1):
            name, _, role = pair.partition(":")
            if role not in ROLES:
                raise ConfigError(f"setting LOCAL_ROLES: the role of its entry number {n} is not one of "
                                  f"{', '.join(ROLES)}")
            roles[name] = role
        roles["admin"] = "Owner"
        return roles


def _password(where: str, value: str) -> str:
    if passwords.is_hash(value):
        try:
            standard = passwords.standard(value)
        except ValueError:
            raise ConfigError(f"setting {where} is not a hash made by 'python -m shared.passwords'") from None
        if not standard:
            raise ConfigError(f"setting {where} is a hash with other scrypt parameters than this version uses; "
                              "make it again with 'python -m shared.passwords'")
    elif len(value) < passwords.MIN_LENGTH:
        raise ConfigError(f"setting {where}: a password needs at least {passwords.MIN_LENGTH} characters "
                          "(or give its hash from 'python -m shared.passwords')")
    return value


def _items(raw: str) -> list[str]:
    return [p for p in raw.replace(" ", "").split(",") if p]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
