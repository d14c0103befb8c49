"""o16n's Python client: publish and call web services on an o16n (or ML Server) API."""
__version__ = "0.1.0"

from .client import DeployClient, O16nClient  # noqa: E402
from .credentials import (AccessTokenCredential, ClientSecretCredential, Credential,  # noqa: E402
                          DeviceCodeCredential, PasswordCredential)
from .errors import (ClientAuthenticationError, HttpResponseError, O16nError, ResourceExistsError,  # noqa: E402
                     ResourceModifiedError, ResourceNotFoundError, ServiceError)
from .services import Batch, BatchResult, Parameter, Service, ServiceResponse  # noqa: E402
from .sessions import ExecuteResult, Session, Snapshot  # noqa: E402

__all__ = ["O16nClient", "DeployClient", "Credential", "PasswordCredential", "AccessTokenCredential",
           "DeviceCodeCredential", "ClientSecretCredential", "O16nError", "HttpResponseError",
           "ClientAuthenticationError", "ResourceNotFoundError", "ResourceExistsError", "ResourceModifiedError",
           "ServiceError", "Service", "ServiceResponse", "Batch", "BatchResult", "Parameter", "Session", "Snapshot",
           "ExecuteResult"]
