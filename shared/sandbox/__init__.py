"""Worker processes that run user code, away from the host's secrets."""
