"""Everything account-specific the tests use, in one place."""
ADMIN_PASSWORD = "admin-test-password"
USERS = {"alice": "alice-test-password", "bob": "bob-test-password", "rita": "rita-test-password"}

# Nothing listens on port 9: a test that reaches storage without the azurite fixture fails fast.
_NOWHERE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
            "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
            "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;")

TEST_ENV = {
    "TOKEN_SIGNING_KEY": "test-token-signing-key-0123456789abcdef0123456789",
    "SNAPSHOT_SIGNING_KEY": "test-snapshot-signing-key-0123456789abcdef012345",
    "LOCAL_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "LOCAL_USERS": ";".join(f"{u}:{p}" for u, p in USERS.items()),
    "LOCAL_ROLES": "rita:Reader",
    "STORAGE_CONNECTION_STRING": _NOWHERE,
    "AzureWebJobsStorage": _NOWHERE,  # the host's own storage (queue triggers)
    "EXECUTION_TIMEOUT_SECONDS": "30",
    "STORAGE_TIMEOUT_SECONDS": "5",
    "SERVICE_CACHE_TTL_SECONDS": "2",
}
