"""The entry point Azure indexes: one FunctionApp, one blueprint per resource."""
import azure.functions as func

from functions import batch, batch_queue, consume, login, realtime, services, sessions, snapshots, status, unsupported, web

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for module in (login, status, sessions, snapshots, services, realtime, consume, batch, batch_queue, unsupported, web):
    app.register_functions(module.bp)
