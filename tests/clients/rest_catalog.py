"""An Iceberg REST catalog for the tests: the REST protocol's table and
namespace endpoints, served over pyiceberg's SQL catalog (SQLite and a local
warehouse directory). thermocline's lake-over-REST test runs against it.

    rest_catalog.py PORT WAREHOUSE_DIR PREFIX TOKEN

Requests must carry "Authorization: Bearer TOKEN" (401 otherwise).

Prints "listening on PORT" once it accepts connections. Every request is
logged to standard error.
"""

import json
import os
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pyiceberg.catalog.rest import TableResponse
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import CommitTableRequest
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER, SortOrder

# SQLite and the catalog are used from one thread at a time.
LOCK = threading.Lock()
CATALOG = None
PREFIX = ""
TOKEN = ""


class Failure(Exception):
    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def namespace_of(segment):
    return tuple(urllib.parse.unquote(segment).split("\x1f"))


def table_response(table):
    return TableResponse(
        **{"metadata-location": table.metadata_location, "metadata": table.metadata, "config": {}}
    ).model_dump_json(by_alias=True, exclude_none=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("rest_catalog: " + (fmt % args) + "\n")

    def reply(self, status, body=None):
        data = b"" if body is None else (body if isinstance(body, bytes) else body.encode())
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def route(self):
        path = urllib.parse.urlsplit(self.path).path
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v1"]:
            raise Failure(404, "NotFound", f"no route {path}")
        parts = parts[1:]
        if parts == ["config"]:
            return ("config",)
        prefix = [p for p in PREFIX.split("/") if p]
        if parts[: len(prefix)] != prefix:
            raise Failure(404, "NotFound", f"no route {path} (prefix {PREFIX!r})")
        parts = parts[len(prefix) :]
        if parts == ["namespaces"]:
            return ("namespaces",)
        if len(parts) == 2 and parts[0] == "namespaces":
            return ("namespace", namespace_of(parts[1]))
        if len(parts) == 3 and parts[0] == "namespaces" and parts[2] == "tables":
            return ("tables", namespace_of(parts[1]))
        if len(parts) == 4 and parts[0] == "namespaces" and parts[2] == "tables":
            return ("table", namespace_of(parts[1]), urllib.parse.unquote(parts[3]))
        raise Failure(404, "NotFound", f"no route {path}")

    def handle_any(self):
        try:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                raise Failure(401, "NotAuthorizedException", "not authorized: wrong or no token")
            route = self.route()
            with LOCK:
                status, body = self.serve(route)
        except Failure as f:
            status, body = f.status, f
        except (NoSuchTableError, NoSuchNamespaceError) as e:
            status, body = 404, Failure(404, type(e).__name__, str(e))
        except (TableAlreadyExistsError, NamespaceAlreadyExistsError) as e:
            status, body = 409, Failure(409, "AlreadyExistsException", str(e))
        except CommitFailedException as e:
            status, body = 409, Failure(409, "CommitFailedException", str(e))
        except Exception as e:  # a bad request: the protocol's 400
            status, body = 400, Failure(400, "BadRequestException", f"{type(e).__name__}: {e}")
        if isinstance(body, Failure):
            body = json.dumps(
                {"error": {"message": body.message, "type": body.kind, "code": status}}
            )
        self.reply(status, body)

    def serve(self, route):
        kind, method = route[0], self.command
        if kind == "config" and method == "GET":
            return 200, json.dumps({"defaults": {}, "overrides": {"prefix": PREFIX}})
        if kind == "namespaces" and method == "GET":
            namespaces = [list(n) for n in CATALOG.list_namespaces()]
            return 200, json.dumps({"namespaces": namespaces})
        if kind == "namespaces" and method == "POST":
            req = json.loads(self.body())
            CATALOG.create_namespace(tuple(req["namespace"]), req.get("properties") or {})
            return 200, json.dumps(
                {"namespace": req["namespace"], "properties": req.get("properties") or {}}
            )
        if kind == "namespace":
            ns = route[1]
            if method == "HEAD":
                return (204 if CATALOG.namespace_exists(ns) else 404), None
            if method == "GET":
                props = CATALOG.load_namespace_properties(ns)
                return 200, json.dumps({"namespace": list(ns), "properties": props})
            if method == "DELETE":
                CATALOG.drop_namespace(ns)
                return 204, None
        if kind == "tables":
            ns = route[1]
            if method == "GET":
                ids = [{"namespace": list(t[:-1]), "name": t[-1]} for t in CATALOG.list_tables(ns)]
                return 200, json.dumps({"identifiers": ids})
            if method == "POST":
                req = json.loads(self.body())
                # The protocol leaves a partition field's id to the catalog.
                spec = req.get("partition-spec")
                if spec:
                    for i, field in enumerate(spec.get("fields", [])):
                        field.setdefault("field-id", 1000 + i)
                    spec.setdefault("spec-id", 0)
                order = req.get("write-order")
                table = CATALOG.create_table(
                    identifier=ns + (req["name"],),
                    schema=Schema.model_validate(req["schema"]),
                    location=req.get("location"),
                    partition_spec=PartitionSpec.model_validate(spec) if spec else UNPARTITIONED_PARTITION_SPEC,
                    sort_order=SortOrder.model_validate(order) if order else UNSORTED_SORT_ORDER,
                    properties=req.get("properties") or {},
                )
                return 200, table_response(table)
        if kind == "table":
            ident = route[1] + (route[2],)
            if method == "HEAD":
                return (204 if CATALOG.table_exists(ident) else 404), None
            if method == "GET":
                return 200, table_response(CATALOG.load_table(ident))
            if method == "DELETE":
                CATALOG.drop_table(ident)
                return 204, None
            if method == "POST":
                req = CommitTableRequest.model_validate_json(self.body())
                table = CATALOG.load_table(ident)
                response = CATALOG.commit_table(table, req.requirements, req.updates)
                return 200, response.model_dump_json(by_alias=True, exclude_none=True)
        raise Failure(405, "MethodNotAllowed", f"{method} is not served for {self.path}")

    do_GET = do_POST = do_HEAD = do_DELETE = handle_any


def main():
    global CATALOG, PREFIX, TOKEN
    port, warehouse, PREFIX, TOKEN = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    os.makedirs(warehouse, exist_ok=True)
    CATALOG = SqlCatalog(
        "rest",
        uri=f"sqlite:///{os.path.join(warehouse, 'rest-catalog.db')}",
        warehouse=f"file://{os.path.abspath(warehouse)}",
    )
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
