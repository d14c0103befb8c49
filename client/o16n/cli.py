"""The `o16n` command. Exit codes: 0 done, 1 the server said no (or could not be reached, or a
service's code failed), 2 the command was not used right."""
from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import os
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as _RichTable
from rich.text import Text

from . import _files, _types
from .client import O16nClient
from .errors import ClientAuthenticationError, O16nError
from .profile import Profile, entra_scopes
from .services import Batch, BatchResult, Pickled, Service, ServiceResponse, call_line

app = typer.Typer(name="o16n", no_args_is_help=True, rich_markup_mode="markdown", add_completion=False,
                  help="Publish Python code and models as web services on o16n, and call them. "
                       "`o16n login SERVER` first; `o16n COMMAND --help` shows examples.")
services_app = typer.Typer(no_args_is_help=True, help="List, show and delete published services.")
batch_app = typer.Typer(no_args_is_help=True, help="Score many records at once, asynchronously.")
sessions_app = typer.Typer(no_args_is_help=True, help="Python sessions on the server: run code, keep objects and files.")
snapshots_app = typer.Typer(no_args_is_help=True, help="Snapshots of sessions (their objects and files).")
app.add_typer(services_app, name="services")
app.add_typer(batch_app, name="batch")
app.add_typer(sessions_app, name="sessions")
app.add_typer(snapshots_app, name="snapshots")

def _clean(text: str) -> str:
    """Server-sent text made inert for a terminal: control and format characters (escape
    sequences, bidi overrides) shown as escapes, never sent raw."""
    return "".join(c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf") else f"\\u{ord(c):04x}"
                   for c in text)


class _Console(Console):
    """Strings are printed as plain text: a service's name or output never becomes rich markup."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        kwargs.pop("markup", None)
        super().print(*(Text(_clean(o)) if isinstance(o, str) else o for o in objects), **kwargs)


class Table(_RichTable):
    def add_row(self, *cells: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().add_row(*(Text(_clean(str(c))) for c in cells), **kwargs)


out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False, soft_wrap=True)


class _State:
    profile = "default"
    json = False


state = _State()

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def _examples(*lines: str) -> str:
    return "**Examples:**\n\n" + "\n\n".join(f"`{line}`" for line in lines)


@app.callback()
def _root(profile: Annotated[str, typer.Option("--profile", "-p", envvar="O16N_PROFILE",
                                               help="Which saved sign-in to use.")] = "default",
          json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts (every command).")] = False) -> None:
    state.profile = profile
    state.json = json_


def _json_mode(flag: bool) -> bool:
    return flag or state.json or os.environ.get("O16N_OUTPUT") == "json"


def _print_json(value: Any) -> None:
    # plain stdout: rich would wrap long lines; ASCII escapes keep control characters inert
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _client() -> O16nClient:
    return Profile.load(state.profile).client()


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """name=value options, repeated or comma-separated."""
    pairs: dict[str, str] = {}
    for value in values or []:
        for item in value.split(",") if what != "input" else [value]:
            name, sep, rest = item.partition("=")
            if not sep or not name.strip():
                raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint=f"--{what}")
            pairs[name.strip()] = rest.strip()
    return pairs


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# sign-in ---------------------------------------------------------------------------------------

@app.command(epilog=_examples(
    "o16n login http://localhost:12800 --username admin",
    "echo \"$PASSWORD\" | o16n login https://my-o16n.azurewebsites.net --username alice --password-stdin",
    "o16n login https://my-o16n.azurewebsites.net --device-code --tenant TENANT_ID --client-id CLI_APP_ID --api API_APP_ID",
    "O16N_CLIENT_SECRET=... o16n login https://my-o16n.azurewebsites.net --client-credentials --tenant TENANT_ID "
    "--client-id APP_ID --api API_APP_ID",
    "o16n login https://my-o16n.azurewebsites.net --token-stdin < token.txt"))
def login(server: Annotated[str, typer.Argument(help="The o16n server's address.")],
          username: Annotated[Optional[str], typer.Option(help="A local account (prompts for its password).")] = None,
          password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
          device_code: Annotated[bool, typer.Option(help="Sign in to Entra ID as a person (device code).")] = False,
          client_credentials: Annotated[bool, typer.Option(
              help="Sign in to Entra ID as an application (secret from O16N_CLIENT_SECRET).")] = False,
          token_stdin: Annotated[bool, typer.Option(help="Use an access token read from standard input, as is.")] = False,
          tenant: Annotated[Optional[str], typer.Option(help="Entra tenant id (or use --authority).")] = None,
          client_id: Annotated[Optional[str], typer.Option(help="Entra application id of this client.")] = None,
          api: Annotated[Optional[str], typer.Option(help="The o16n API's application id or App ID URI.")] = None,
          authority: Annotated[Optional[str], typer.Option(
              help="Entra authority URL (default https://login.microsoftonline.com/TENANT).")] = None,
          ca_bundle: Annotated[Optional[Path], typer.Option(
              exists=True, dir_okay=False, readable=True, help="A CA bundle to trust (a private CA in front of the server or authority).")] = None,
          json_: JsonFlag = False) -> None:
    """Sign in and remember the server and the method in a profile (tokens are kept owner-only)."""
    chosen = [m for m, on in (("password", username is not None), ("device-code", device_code),
                              ("client-credentials", client_credentials), ("token", token_stdin)) if on]
    if len(chosen) != 1:
        raise typer.BadParameter("choose one way to sign in: --username, --device-code, --client-credentials "
                                 "or --token-stdin")
    method = chosen[0]
    if not server.startswith(("http://", "https://")):
        raise typer.BadParameter("the server's address starts with http:// or https://", param_hint="SERVER")
    if "@" in urlsplit(server).netloc:
        raise typer.BadParameter("the server's address must not hold a user name or password", param_hint="SERVER")
    profile = Profile(state.profile, server.rstrip("/"), method, username=username,
                      ca_bundle=str(ca_bundle.resolve()) if ca_bundle else None)
    if method in ("device-code", "client-credentials"):
        if not client_id or not api or not (tenant or authority):
            raise typer.BadParameter("Entra sign-in needs --client-id, --api and --tenant (or --authority)")
        profile.client_id = client_id
        profile.authority = (authority or f"https://login.microsoftonline.com/{tenant}").rstrip("/")
        profile.scopes = entra_scopes(api, app_only=method == "client-credentials")
    if method == "password":
        password = _read_secret(password_stdin, "O16N_PASSWORD", f"Password for {username}")
        credential = profile.credential(password=password, kept=False)
    elif method == "token":
        token = _read_secret(True, "", "Access token").strip()
        credential = profile.credential(token=token, kept=False)
    elif method == "device-code":
        credential = profile.credential(prompt=lambda message: err.print(message), kept=False)
    else:
        secret = os.environ.get("O16N_CLIENT_SECRET")
        if not secret:
            raise typer.BadParameter("set O16N_CLIENT_SECRET to the application's client secret")
        credential = profile.credential(client_secret=secret, kept=False)
    _warn_if_cleartext(profile.server)
    # Signed in in memory first: a sign-in that fails leaves the profile and its tokens as they were.
    client = profile.client(credential)
    try:
        credential.get_token()
        client.status()  # proves the server takes the token
    except BaseException:  # whatever went wrong, a token the server issued is revoked, not left live
        with contextlib.suppress(Exception):
            credential.sign_out()
        raise
    with _files.locked(profile.tokens_path):  # not while another o16n renews the previous sign-in
        _end_previous_sign_in()
        credential.persist(profile.tokens_path)
        profile.save()
    who = username or client_id or "the given token"
    if _json_mode(json_):
        _print_json({"profile": profile.name, "server": profile.server, "method": method, "user": who})
    else:
        out.print(f"Signed in to {profile.server} as {who} ({method}); profile '{profile.name}'.")


def _end_previous_sign_in() -> None:
    """The profile's previous sign-in is replaced: revoked where the server can revoke it."""
    try:
        old = Profile.load(state.profile)
    except (O16nError, ValueError):
        return  # none, or unreadable: the new sign-in replaces its files
    try:
        if old.method == "password":
            old.client().sign_out(locked=False)  # the caller holds the lock
    except Exception as exc:  # noqa: BLE001 - the new sign-in is proven: it is kept whatever the old one does
        err.print(f"note: the previous sign-in of profile '{old.name}' could not be revoked ({exc}); "
                  "it lapses on its own")
    finally:
        old.forget()


def _warn_if_cleartext(server: str) -> None:
    host = urlsplit(server).hostname or ""
    if server.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
        err.print(f"warning: {host} is reached over plain http: passwords and tokens cross the network unencrypted")


def _read_secret(from_stdin: bool, env: str, prompt: str) -> str:
    if from_stdin and not sys.stdin.isatty():
        value = sys.stdin.readline().rstrip("\n")
    else:  # a terminal: never echoed
        value = (os.environ.get(env) if env else None) or typer.prompt(prompt, hide_input=True)
    if not value:
        raise typer.BadParameter(f"{prompt.lower()} is empty")
    return value


@app.command(epilog=_examples("o16n logout", "o16n --profile prod logout"))
def logout(json_: JsonFlag = False) -> None:
    """Sign out: revoke the refresh token (local accounts) and forget every kept token."""
    profile = Profile.load(state.profile)
    try:
        profile.client().sign_out()  # revokes; when the server cannot be told, the tokens stay, to retry
    except ClientAuthenticationError:
        profile.forget()  # nothing valid was kept: forgetting it is all there is to do
    else:
        profile.forget()
    if _json_mode(json_):
        _print_json({"profile": profile.name, "signedOut": True})
    else:
        out.print(f"Signed out of {profile.server} (profile '{profile.name}').")


@app.command(epilog=_examples("o16n status", "o16n status --json"))
def status(json_: JsonFlag = False) -> None:
    """The profile in use, and the server's health."""
    profile = Profile.load(state.profile)
    health = profile.client().status()
    if _json_mode(json_):
        _print_json({"profile": profile.name, "server": profile.server, "method": profile.method,
                     "user": profile.username or profile.client_id, "status": health})
        return
    out.print(f"profile '{profile.name}': {profile.server}, signed in with {profile.method}"
              + (f" as {profile.username}" if profile.username else ""))
    table = Table("component", "status", "details")
    table.add_row("server", str(health.get("statusCode", "")), json.dumps(health.get("details", {})))
    for name, part in (health.get("components") or {}).items():
        table.add_row(name, str(part.get("statusCode", "")), json.dumps(part.get("details", {}))[:120])
    out.print(table)


# services --------------------------------------------------------------------------------------

def _service_rows(services: list[Service]) -> Table:
    table = Table("name", "version", "kind", "operation", "inputs", "outputs", "published by", "permission")
    for s in services:
        table.add_row(s.name, s.version, "realtime" if s.runtime_type == "Realtime" else "standard", s.operation_id,
                      ", ".join(f"{p.name}: {p.type}" for p in s.inputs),
                      ", ".join(f"{p.name}: {p.type}" for p in s.outputs), s.published_by, s.permission)
    return table


@services_app.command("list", epilog=_examples("o16n services list", "o16n services list Iris --json"))
def services_list(name: Annotated[Optional[str], typer.Argument(help="Only this service's versions.")] = None,
                  json_: JsonFlag = False) -> None:
    """Every service you may see (or every version of one)."""
    found = _client().list_services(name)
    if _json_mode(json_):
        _print_json([s.raw for s in found])
    else:
        out.print(_service_rows(found))


@services_app.command("show", epilog=_examples("o16n services show Iris 1.0", "o16n services show Iris"))
def services_show(name: str, version: Annotated[Optional[str], typer.Argument(help="Default: the latest.")] = None,
                  json_: JsonFlag = False) -> None:
    """One version: its inputs, outputs, description and who published it."""
    svc = _client().get_service(name, version=version)
    if _json_mode(json_):
        _print_json(svc.raw)
        return
    out.print(_service_rows([svc]))
    if svc.description:
        out.print(f"description: {svc.description}", markup=False)
    out.print(f"swagger: {svc.capabilities()['swagger']}", markup=False)


@services_app.command("delete", epilog=_examples("o16n services delete Iris 1.0 --yes"))
def services_delete(name: str, version: str,
                    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
                    json_: JsonFlag = False) -> None:
    """Delete one version (its callers get 404 from then on)."""
    if not yes and not typer.confirm(f"Delete {name} {version}?"):
        raise typer.Exit(1)
    _client().delete_service(name, version=version, missing_ok=False)
    if _json_mode(json_):
        _print_json({"name": name, "version": version, "deleted": True})
    else:
        out.print(f"Deleted {name} {version}.", markup=False)


# publishing ------------------------------------------------------------------------------------

def _function_args(source: str, function: str, path: Path) -> list[str]:
    """The function's argument names, read from the file without running it."""
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise typer.BadParameter(f"{path} does not compile: {exc.msg} (line {exc.lineno})") from None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            a = node.args
            if a.vararg or a.kwarg or a.posonlyargs or a.kwonlyargs:
                raise typer.BadParameter(f"{function} must take plain named arguments, one per input")
            return [arg.arg for arg in a.args]
    raise typer.BadParameter(f"{path} defines no top-level function {function!r}")


@app.command(epilog=_examples(
    "o16n publish Iris 1.0 --code iris.py --function predict --init load --model clf=clf.pkl "
    "--inputs flower=vector --outputs species=vector",
    "o16n publish Add 1.0 --code add.py --function add --inputs x=float,y=float --outputs answer=float",
    "o16n publish Add 1.0 --code add.py --function add --update   (keeps inputs and outputs)"))
def publish(name: str, version: str,
            code: Annotated[Path, typer.Option(exists=True, dir_okay=False, readable=True,
                                               help="The Python file that defines the function.")],
            function: Annotated[str, typer.Option(help="The function each call runs; its arguments are the inputs.")],
            init: Annotated[Optional[str], typer.Option(help="A function run once per worker before calls.")] = None,
            model: Annotated[Optional[list[str]], typer.Option(
                help="NAME=FILE.pkl: a pickled object the code finds as variable NAME (repeat).")] = None,
            inputs: Annotated[Optional[list[str]], typer.Option(
                help="NAME=TYPE, comma-separated or repeated: float, int, bool, str, list, numeric, integer, "
                     "logical, character, vector, matrix, data.frame.")] = None,
            outputs: Annotated[Optional[list[str]], typer.Option(help="NAME=TYPE, like --inputs.")] = None,
            artifact: Annotated[Optional[list[str]], typer.Option(help="A file the code writes, returned to callers.")] = None,
            description: Annotated[Optional[str], typer.Option()] = None,
            alias: Annotated[Optional[str], typer.Option(help="The operationId (default: the function's name).")] = None,
            update: Annotated[bool, typer.Option(help="Update this version instead of publishing it.")] = False,
            json_: JsonFlag = False) -> None:
    """Publish a Python function (from a file) as a web service."""
    source = code.read_text()
    args = _function_args(source, function, code)
    if init is not None:
        _function_args(source, init, code)
    in_types = {k: _types.server_type(v, k) for k, v in _pairs(inputs, "inputs").items()}
    out_types = {k: _types.server_type(v, k) for k, v in _pairs(outputs, "outputs").items()}
    if (inputs is not None or not update) and sorted(in_types) != sorted(args):
        raise typer.BadParameter(f"--inputs must give a type to each argument of {function}: {', '.join(args) or 'none'}",
                                 param_hint="--inputs")
    client = _client()
    definition = client.service(name).version(version)
    if update and outputs is None:  # kept: the call line still assigns them
        out_names = [p.name for p in client.get_service(name, version=version).outputs]
    else:
        out_names = list(out_types)
    definition.code_str(call_line(function, args, out_names), source + (f"\n{init}()\n" if init else ""))
    definition.alias(alias or function)
    if inputs is not None or not update:
        definition.inputs(**{a: in_types[a] for a in args})
    if outputs is not None or not update:
        definition.outputs(**out_types)
    if description is not None:
        definition.description(description)
    if artifact:
        definition.artifacts(artifact)
    for key, path in _pairs(model, "model").items():
        data = Path(path).expanduser()
        if not data.is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint="--model")
        definition.models(**{key: Pickled(data.read_bytes())})
    svc = definition.redeploy() if update else definition.deploy()
    _published(svc, json_)


def _published(svc: Service, json_: bool) -> None:
    if _json_mode(json_):
        _print_json(svc.raw)
    else:
        out.print(f"Published {svc.name} {svc.version}: POST {svc.capabilities()['api']}", markup=False)


@app.command("publish-realtime", epilog=_examples(
    "o16n publish-realtime Iris 2.0 iris.onnx", "o16n publish-realtime Iris 2.0 model.pkl --description 'iris, sklearn'"))
def publish_realtime(name: str, version: str,
                     model: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                                           help="An ONNX model, or a pickled scikit-learn estimator.")],
                     description: Annotated[Optional[str], typer.Option()] = None,
                     alias: Annotated[Optional[str], typer.Option(help="The operationId.")] = None,
                     update: Annotated[bool, typer.Option(help="Replace this version's model.")] = False,
                     json_: JsonFlag = False) -> None:
    """Publish a model as a realtime service (called with `inputData`, a data frame)."""
    definition = _client().realtime_service(name).version(version).serialized_model(model.read_bytes())
    if description is not None:
        definition.description(description)
    if alias:
        definition.alias(alias)
    _published(definition.redeploy() if update else definition.deploy(), json_)


# calling ---------------------------------------------------------------------------------------

@app.command(epilog=_examples(
    "o16n call Iris 1.0 --json '{\"flower\": [7, 3.2, 4.7, 1.4]}'",
    "o16n call Add 1.0 --input x=1 --input y=2",
    "o16n --json call Add 1.0 --input x=1 --input y=2   (the whole answer, as JSON)"))
def call(name: str, version: str,
         json_body: Annotated[Optional[str], typer.Option("--json", help="The inputs as one JSON object.")] = None,
         input_: Annotated[Optional[list[str]], typer.Option(
             "--input", "-i", help="NAME=VALUE (VALUE read as JSON, else as text); repeat.")] = None) -> None:
    """Call a service. Exits 1 when its code fails (the answer says why)."""
    if json_body is not None and input_:
        raise typer.BadParameter("give the inputs with --json or with --input, not both")
    if json_body is not None:
        try:
            body = json.loads(json_body)
        except ValueError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--json") from None
        if not isinstance(body, dict):
            raise typer.BadParameter("a JSON object of the service's inputs", param_hint="--json")
    else:
        body = {k: _value(v) for k, v in _pairs(input_, "input").items()}
    svc = _client().get_service(name, version=version)
    answer = svc.consume(**body)
    if _json_mode(False):
        _print_json(answer.raw)
    else:
        _show_answer(answer)
    if not answer.success:
        raise typer.Exit(1)


def _show_answer(answer: ServiceResponse) -> None:
    if not answer.success:
        err.print(f"the service failed: {answer.error}", markup=False)
    table = Table("output", "value")
    for key, value in answer.raw_outputs.items():
        table.add_row(key, json.dumps(value))
    if answer.raw_outputs:
        out.print(table)
    if answer.console_output:
        out.print("console output:", markup=False)
        out.print(answer.console_output, markup=False, end="")
    for file_name in answer.artifacts:
        out.print(f"output file: {file_name}", markup=False)


@app.command(epilog=_examples("o16n swagger Iris 1.0 > iris.swagger.json"))
def swagger(name: str, version: str, json_: JsonFlag = False) -> None:
    """The service's Swagger 2.0 document (always JSON)."""
    svc = _client().get_service(name, version=version)
    _print_json(svc.swagger())


# batch -----------------------------------------------------------------------------------------

def _read_records(path: Path, svc: Service) -> list[dict[str, Any]]:
    kinds = {p.name: p.type for p in svc.inputs}
    text = path.read_text()
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return [{k: _cell(v, kinds.get(k), i) for k, v in row.items()} for i, row in enumerate(rows)]
    stripped = text.lstrip()
    if stripped.startswith("["):
        records = json.loads(text)
    else:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError as exc:
                    raise typer.BadParameter(f"{path} line {n} is not JSON: {exc}") from None
    return records


def _cell(text: str | None, kind: str | None, row: int) -> Any:
    try:
        if kind == "numeric":
            return float(text)
        if kind == "integer":
            return int(text)
        if kind == "logical":
            return {"true": True, "false": False, "1": True, "0": False}[str(text).strip().lower()]
        if kind in ("vector", "matrix", "data.frame"):
            return json.loads(text)
    except (ValueError, TypeError, KeyError):
        raise typer.BadParameter(f"row {row + 1}: {text!r} is not a {kind}") from None
    return text


WaitTimeout = Annotated[Optional[float], typer.Option("--timeout", min=0,
                                                    help="With --wait: give up (exit 1) after this many seconds.")]


def _follow(batch: Batch, json_: bool, timeout: float | None) -> BatchResult:
    if _json_mode(json_) or not err.is_terminal and os.environ.get("O16N_PROGRESS") != "1":
        return batch.wait(timeout=timeout)
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err) as progress:
        task = progress.add_task(_clean(f"batch {batch.execution_id}"), total=None)

        def show(result: BatchResult) -> None:
            progress.update(task, total=result.total_item_count, completed=result.completed_item_count,
                            description=_clean(f"batch {batch.execution_id} {result.state}"))
        return batch.wait(progress=show, timeout=timeout)


def _show_batch(result: BatchResult, execution_id: str, json_: bool, *, rows: bool) -> None:
    if _json_mode(json_):
        _print_json({"batchExecutionId": execution_id, **result.raw})
        return
    out.print(f"batch {execution_id}: {result.state}, {result.completed_item_count} of "
              f"{result.total_item_count} done", markup=False)
    if rows and len(result):
        table = Table("#", "success", "outputs", "error")
        for i, item in enumerate(result):
            table.add_row(str(i), "yes" if item.success else "no", json.dumps(item.raw_outputs), item.error)
        out.print(table)


def _exit_if_failed(result: BatchResult) -> None:
    """A batch that failed, or any of whose records failed, exits 1 (as a failed call does)."""
    failed = sum(not r.success for r in result)
    if failed:
        err.print(f"{failed} of {result.total_item_count} records failed")
    if failed or result.state.lower() == "failed":
        raise typer.Exit(1)


@batch_app.command("start", epilog=_examples(
    "o16n batch start Iris 1.0 flowers.csv --parallel 4 --wait",
    "o16n batch start Add 1.0 records.jsonl   (one JSON object per line)"))
def batch_start(name: str, version: str,
                records: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                                        help="CSV with a header of input names, or JSON lines.")],
                parallel: Annotated[int, typer.Option(min=1, help="Records scored at once.")] = 10,
                wait: Annotated[bool, typer.Option(help="Follow it with a progress bar until it ends.")] = False,
                timeout: WaitTimeout = None, json_: JsonFlag = False) -> None:
    """Start a batch; prints its id (or, with --wait, its results). Exits 1 if any record failed."""
    svc = _client().get_service(name, version=version)
    batch = svc.batch(_read_records(records, svc), parallel_count=parallel).start()
    if wait:
        result = _follow(batch, json_, timeout)
        _show_batch(result, batch.execution_id or "", json_, rows=True)
        _exit_if_failed(result)
    elif _json_mode(json_):
        _print_json({"batchExecutionId": batch.execution_id})
    else:
        out.print(batch.execution_id, markup=False)


@batch_app.command("status", epilog=_examples("o16n batch status Iris 1.0 BATCH_ID"))
def batch_status(name: str, version: str, execution_id: str, json_: JsonFlag = False) -> None:
    """A batch's state and progress."""
    batch = _client().get_service(name, version=version).get_batch(execution_id)
    result = batch.results(show_partial_results=False)
    if _json_mode(json_):
        _print_json({"batchExecutionId": execution_id, "state": result.state,
                     "completedItemCount": result.completed_item_count, "totalItemCount": result.total_item_count})
    else:
        _show_batch(result, execution_id, json_, rows=False)


@batch_app.command("results", epilog=_examples("o16n batch results Iris 1.0 BATCH_ID --wait",
                                               "o16n batch results Iris 1.0 BATCH_ID --json > results.json"))
def batch_results(name: str, version: str, execution_id: str,
                  wait: Annotated[bool, typer.Option(help="Follow it with a progress bar until it ends.")] = False,
                  timeout: WaitTimeout = None, json_: JsonFlag = False) -> None:
    """The results so far (in input order), or all of them with --wait. Exits 1 if any record failed."""
    batch = _client().get_service(name, version=version).get_batch(execution_id)
    result = _follow(batch, json_, timeout) if wait else batch.results()
    _show_batch(result, execution_id, json_, rows=True)
    _exit_if_failed(result)


@batch_app.command("list", epilog=_examples("o16n batch list Iris 1.0"))
def batch_list(name: str, version: str, json_: JsonFlag = False) -> None:
    """Your batches of a service (an Owner sees everyone's)."""
    ids = _client().get_service(name, version=version).list_batch_executions()
    if _json_mode(json_):
        _print_json(ids)
    else:
        for execution_id in ids:
            out.print(execution_id, markup=False)


@batch_app.command("cancel", epilog=_examples("o16n batch cancel Iris 1.0 BATCH_ID"))
def batch_cancel(name: str, version: str, execution_id: str, json_: JsonFlag = False) -> None:
    """Stop a batch and delete its records and results."""
    _client().get_service(name, version=version).get_batch(execution_id).cancel()
    if _json_mode(json_):
        _print_json({"batchExecutionId": execution_id, "cancelled": True})
    else:
        out.print(f"Cancelled batch {execution_id}.", markup=False)


# sessions and snapshots ------------------------------------------------------------------------

def _emit(value: Any, json_: bool, human: Callable[[], None]) -> None:
    if _json_mode(json_):
        _print_json(value)
    else:
        human()


def _lines(values: list[str]) -> Callable[[], None]:
    return lambda: [out.print(v, markup=False) for v in values]


@sessions_app.command("list", epilog=_examples("o16n sessions list"))
def sessions_list(json_: JsonFlag = False) -> None:
    """Your sessions."""
    found = _client().list_sessions()

    def human() -> None:
        table = Table("id", "name", "runtime")
        for s in found:
            table.add_row(s.get("id", ""), s.get("name") or "", s.get("runtimeType", ""))
        out.print(table)
    _emit(found, json_, human)


@sessions_app.command("create", epilog=_examples("o16n sessions create --name scratch",
                                                 "o16n sessions create --snapshot SNAPSHOT_ID"))
def sessions_create(name: Annotated[Optional[str], typer.Option()] = None,
                    snapshot: Annotated[Optional[str], typer.Option(help="Start from this snapshot.")] = None,
                    json_: JsonFlag = False) -> None:
    """Start a session; prints its id."""
    session = _client().create_session(name=name, snapshot_id=snapshot)
    _emit({"sessionId": session.id}, json_, _lines([session.id]))


@sessions_app.command("execute", epilog=_examples(
    "o16n sessions execute SID 'x = 6 * 7' --output x", "o16n sessions execute SID --file train.py",
    "o16n sessions execute SID 'y = x + 1' --input x=41 --output y"))
def sessions_execute(session_id: str, code: Annotated[Optional[str], typer.Argument(help="Python code.")] = None,
                     file: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False,
                                                                  help="Run this file instead.")] = None,
                     input_: Annotated[Optional[list[str]], typer.Option("--input", "-i",
                                                                         help="NAME=VALUE (JSON or text).")] = None,
                     output: Annotated[Optional[list[str]], typer.Option("--output", "-o",
                                                                         help="A variable to print.")] = None,
                     json_: JsonFlag = False) -> None:
    """Run code in a session. Exits 1 when it fails."""
    if (code is None) == (file is None):
        raise typer.BadParameter("give the code, or --file, not both")
    source = code if code is not None else file.read_text()  # type: ignore[union-attr]
    result = _client().get_session(session_id).execute(
        source, inputs={k: _value(v) for k, v in _pairs(input_, "input").items()}, outputs=output or [])

    def human() -> None:
        if result.console_output:
            out.print(result.console_output, markup=False, end="")
        for key, value in result.outputs.items():
            out.print(f"{key} = {json.dumps(value)}", markup=False)
        if not result.success:
            err.print(f"failed: {result.error}", markup=False)
    _emit({"success": result.success, "errorMessage": result.error, "consoleOutput": result.console_output,
           "outputParameters": result.outputs, "changedFiles": result.changed_files}, json_, human)
    if not result.success:
        raise typer.Exit(1)


@sessions_app.command("objects", epilog=_examples("o16n sessions objects SID"))
def sessions_objects(session_id: str, json_: JsonFlag = False) -> None:
    """The names of the objects a session holds."""
    names = _client().get_session(session_id).list_objects()
    _emit(names, json_, _lines(names))


@sessions_app.command("files", epilog=_examples("o16n sessions files SID"))
def sessions_files(session_id: str, json_: JsonFlag = False) -> None:
    """The files in a session's folder."""
    names = _client().get_session(session_id).list_files()
    _emit(names, json_, _lines(names))


@sessions_app.command("upload", epilog=_examples("o16n sessions upload SID data.csv"))
def sessions_upload(session_id: str, file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
                    json_: JsonFlag = False) -> None:
    """Put a file into a session's folder."""
    _client().get_session(session_id).upload_file(file)
    _emit({"uploaded": file.name}, json_, _lines([f"Uploaded {file.name}."]))


@sessions_app.command("download", epilog=_examples("o16n sessions download SID plot.png -o plot.png"))
def sessions_download(session_id: str, name: str,
                      output: Annotated[Optional[Path], typer.Option("--output", "-o",
                                                                     help="Where to write it (default: its name).")] = None,
                      json_: JsonFlag = False) -> None:
    """Fetch a file from a session's folder."""
    target = output or Path(_base_name(name))
    data = _client().get_session(session_id).get_file(name)
    target.write_bytes(data)
    _emit({"file": str(target), "bytes": len(data)}, json_, _lines([f"Wrote {target} ({len(data)} bytes)."]))


@sessions_app.command("snapshot", epilog=_examples("o16n sessions snapshot SID --name 'trained model'"))
def sessions_snapshot(session_id: str, name: Annotated[Optional[str], typer.Option()] = None,
                      json_: JsonFlag = False) -> None:
    """Snapshot a session's objects and files; prints the snapshot's id."""
    snap = _client().get_session(session_id).snapshot(name)
    _emit({"snapshotId": snap.id}, json_, _lines([snap.id]))


@sessions_app.command("console", epilog=_examples("o16n sessions console SID"))
def sessions_console(session_id: str, json_: JsonFlag = False) -> None:
    """The console output of the session's last execution."""
    text = _client().get_session(session_id).console_output()
    _emit({"consoleOutput": text}, json_, lambda: out.print(text, markup=False, end=""))


@sessions_app.command("history", epilog=_examples("o16n sessions history SID"))
def sessions_history(session_id: str, json_: JsonFlag = False) -> None:
    """The code a session has run, in order."""
    blocks = _client().get_session(session_id).history()
    _emit(blocks, json_, _lines(blocks))


@sessions_app.command("close", epilog=_examples("o16n sessions close SID", "o16n sessions close SID --force"))
def sessions_close(session_id: str, force: Annotated[bool, typer.Option(help="Even while it runs code.")] = False,
                   json_: JsonFlag = False) -> None:
    """Close a session (its objects and files go with it)."""
    _client().close_session(session_id, force=force, missing_ok=False)
    _emit({"sessionId": session_id, "closed": True}, json_, _lines([f"Closed {session_id}."]))


def _base_name(name: str) -> str:
    """A default file name, in this folder, from a name the server may have chosen."""
    try:
        return _files.base_name(name)
    except ValueError:
        raise typer.BadParameter(f"{_clean(name)!r} is no file name to write to: give --output") from None


@snapshots_app.command("list", epilog=_examples("o16n snapshots list"))
def snapshots_list(json_: JsonFlag = False) -> None:
    """Your snapshots."""
    found = _client().list_snapshots()

    def human() -> None:
        table = Table("id", "name", "created", "bytes")
        for s in found:
            table.add_row(s.id, s.name, s.creation_time, str(s.content_size))
        out.print(table)
    _emit([{"id": s.id, "name": s.name, "owner": s.owner, "creationTime": s.creation_time,
            "contentSize": s.content_size} for s in found], json_, human)


@snapshots_app.command("download", epilog=_examples("o16n snapshots download SNAPSHOT_ID -o snapshot.zip"))
def snapshots_download(snapshot_id: str,
                       output: Annotated[Optional[Path], typer.Option("--output", "-o")] = None,
                       json_: JsonFlag = False) -> None:
    """A snapshot's content, as a zip file."""
    target = output or Path(_base_name(snapshot_id) + ".zip")
    data = _client().get_snapshot_content(snapshot_id)
    target.write_bytes(data)
    _emit({"file": str(target), "bytes": len(data)}, json_, _lines([f"Wrote {target} ({len(data)} bytes)."]))


@snapshots_app.command("delete", epilog=_examples("o16n snapshots delete SNAPSHOT_ID"))
def snapshots_delete(snapshot_id: str, json_: JsonFlag = False) -> None:
    """Delete a snapshot (services published from it keep their copy)."""
    _client().delete_snapshot(snapshot_id, missing_ok=False)
    _emit({"snapshotId": snapshot_id, "deleted": True}, json_, _lines([f"Deleted {snapshot_id}."]))


def main(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="o16n", standalone_mode=False)
        if isinstance(code, int):  # typer.Exit raised by a command comes back as its code
            return code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("aborted")
        return 1
    except typer.TyperException as exc:  # a usage error (typer's own click)
        exc.show()  # type: ignore[attr-defined]
        return 2
    except O16nError as exc:
        err.print(f"error: {exc}")
        return 1
    except TimeoutError as exc:
        err.print(f"error: {exc}")
        return 1
    except UnicodeError as exc:  # text the server sent that cannot be written here
        err.print(f"error: {type(exc).__name__}: {exc}")
        return 1
    except ValueError as exc:  # what the client refuses before sending anything
        err.print(f"error: {exc}")
        return 2
    except (KeyError, TypeError, AttributeError, OSError) as exc:
        if os.environ.get("O16N_DEBUG"):
            raise
        err.print(f"error: {type(exc).__name__}: {exc} (O16N_DEBUG=1 shows where)")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
