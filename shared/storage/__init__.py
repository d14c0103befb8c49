"""Blob and Table repositories. Azure SDK errors become `shared.errors` here and nowhere else;
nothing above this package imports `azure.*`."""
from ._clients import request_failed, request_scope

__all__ = ["request_failed", "request_scope"]
