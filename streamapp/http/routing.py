"""Routes declared once: a `Route` says what an operation takes and answers, and the OpenAPI
document is built from the list of them and the models of streamapp.http.schemas.

The same list registers the aiohttp handlers (streamapp.http.handlers), so a route cannot be
served undocumented, and a body, its limits and its errors are written in one place. Schemas
come from msgspec (`schema_components`), plus the components the configuration decides
(`schemas.dynamic_components`: database names, history types, typed attributes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from streamapp.http.schemas import REF_TEMPLATE, Error, dynamic_components
from streamapp.settings import Settings

JSON = "application/json"
NDJSON = "application/x-ndjson"
CSV = "text/csv"
HTML = "text/html"
TEXT = "text/plain"
FORM = "application/x-www-form-urlencoded"

#: A schema: a type msgspec describes (a Struct becomes a component), the name of a component
#: from `dynamic_components` (a str), a literal JSON schema (a Mapping), AnyOf, or None (no schema).
Schema = Any


@dataclass(frozen=True)
class AnyOf:
    """A value of one of `choices`: msgspec cannot describe a union of Structs without tags."""

    choices: tuple[Schema, ...]


@dataclass(frozen=True)
class Content:
    """One media type of a body or an answer; `description` says what it holds (e.g. NDJSON lines)."""

    media_type: str = JSON
    schema: Schema = None
    description: str | None = None


@dataclass(frozen=True)
class Body:
    content: tuple[Content, ...]
    description: str | None = None
    required: bool = True


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter (as a response header: `location` is ignored)."""

    name: str
    location: Literal["path", "query", "header"]
    schema: Schema = str
    description: str | None = None
    required: bool = False


@dataclass(frozen=True)
class Reply:
    status: int
    description: str
    content: tuple[Content, ...] = ()
    headers: tuple[Param, ...] = ()


@dataclass(frozen=True)
class Route:
    """One operation: what the handler is registered at, who may call it, what it takes and answers.

    `errors` lists codes of STANDARD_ERRORS (one shared description each) or Replies of its own.
    """

    method: str
    path: str
    operation_id: str
    summary: str
    scope: str | None
    success: Reply
    errors: tuple[int | Reply, ...] = ()
    body: Body | None = None
    params: tuple[Param, ...] = ()
    tags: tuple[str, ...] = ()
    description: str | None = None

    def path_params(self) -> tuple[str, ...]:
        """The names in the path template (`{db}`), in order."""
        return tuple(re.findall(r"\{([^}/]+)\}", self.path))


def error(status: int, description: str) -> Reply:
    """An error answer of one route (the Error model), where the shared description does not fit."""
    return Reply(status, description, (Content(JSON, Error),))


def json_reply(status: int, description: str, model: Schema) -> Reply:
    return Reply(status, description, (Content(JSON, model),))


#: Shared error answers: code -> (component name, description).
STANDARD_ERRORS: dict[int, tuple[str, str]] = {
    401: ("Unauthorized", "Missing or unknown bearer token"),
    403: ("Forbidden", "Token lacks the scope or the database"),
    404: ("NotFound", "Unknown database, trigger, campaign, or no such item"),
    409: ("Conflict", "Conflicts with an earlier request"),
    413: ("TooLarge", "Body over the size limit, or over 10,000 items"),
    415: ("UnsupportedMediaType", "Content-Encoding or content type not accepted by this route"),
    422: ("Unprocessable", "Invalid body or parameter; `details` names each bad field, up to 1,000"),
    503: ("Unavailable", "Worker starting or rebalancing; retry (see Retry-After)"),
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer realm", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
}


def openapi_document(routes: Iterable[Route], settings: Settings, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`; ValueError when a route is declared twice or inconsistently."""
    routes = list(routes)
    _check(routes)
    table = _SchemaTable(_schema_sources(routes))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, table)
    return {
        "openapi": "3.1.0",
        "info": {"title": "streamapp", "version": version},
        "tags": [{"name": tag} for tag in dict.fromkeys(tag for route in routes for tag in route.tags)],
        "paths": paths,
        "components": {
            "schemas": table.components(dynamic_components(settings)),
            "responses": {name: _error_reply(code, text) for code, (name, text) in STANDARD_ERRORS.items()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _check(routes: list[Route]) -> None:
    seen: set[tuple[str, str]] = set()
    operation_ids: set[str] = set()
    for route in routes:
        key = (route.method.upper(), route.path)
        if key in seen or route.operation_id in operation_ids:
            raise ValueError(f"{route.method} {route.path} ({route.operation_id}) is declared twice")
        seen.add(key)
        operation_ids.add(route.operation_id)
        declared = tuple(p.name for p in route.params if p.location == "path")
        if sorted(declared) != sorted(route.path_params()):
            raise ValueError(f"{route.operation_id}: path parameters {declared} do not match {route.path}")
        unknown = [code for code in route.errors if isinstance(code, int) and code not in STANDARD_ERRORS]
        if unknown:
            raise ValueError(f"{route.operation_id}: no standard error answer for {unknown}")


# -- schemas ---------------------------------------------------------------------------------------


def _schema_sources(routes: list[Route]) -> list[Schema]:
    """Every schema the routes use, with the Error model of the shared error answers."""
    found: list[Schema] = [Error]
    for route in routes:
        replies = [route.success, *(e for e in route.errors if isinstance(e, Reply))]
        contents = [c for reply in replies for c in reply.content] + list(route.body.content if route.body else ())
        params = [*route.params, *(h for reply in replies for h in reply.headers)]
        found += [c.schema for c in contents] + [p.schema for p in params]
    return found


class _SchemaTable:
    """Schemas of the types in use, generated by msgspec in one call (named Structs become components)."""

    def __init__(self, sources: list[Schema]) -> None:
        self.types: list[Any] = []
        for source in _flat(sources):
            if source is not None and not isinstance(source, str | Mapping) and source not in self.types:
                self.types.append(source)
        schemas, self._components = msgspec.json.schema_components(self.types, ref_template=REF_TEMPLATE)
        self._schemas = list(schemas)

    def schema(self, source: Schema) -> dict[str, Any] | None:
        if source is None:
            return None
        if isinstance(source, str):
            return {"$ref": REF_TEMPLATE.format(name=source)}
        if isinstance(source, Mapping):
            return dict(source)
        if isinstance(source, AnyOf):
            return {"anyOf": [self.schema(choice) or {} for choice in source.choices]}
        return dict(self._schemas[self.types.index(source)])

    def components(self, dynamic: dict[str, Any]) -> dict[str, Any]:
        clash = self._components.keys() & dynamic.keys()
        if clash:
            raise ValueError(f"component names used by a model and by the configuration: {sorted(clash)}")
        return {**self._components, **dynamic}


def _flat(sources: Iterable[Schema]) -> Iterable[Schema]:
    for source in sources:
        if isinstance(source, AnyOf):
            yield from _flat(source.choices)
        else:
            yield source


# -- operations ------------------------------------------------------------------------------------


def _operation(route: Route, table: _SchemaTable) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary}
    if route.description:
        operation["description"] = route.description
    if route.tags:
        operation["tags"] = list(route.tags)
    if route.params:
        operation["parameters"] = [_parameter(p, table) for p in route.params]
    if route.body is not None:
        operation["requestBody"] = _body(route.body, table)
    operation["responses"] = _responses(route, table)
    operation["security"] = [{"bearer": [route.scope]}] if route.scope else []
    if route.scope:
        operation["x-scope"] = route.scope
    return operation


def _parameter(param: Param, table: _SchemaTable) -> dict[str, Any]:
    described: dict[str, Any] = {
        "name": param.name,
        "in": param.location,
        "required": param.required or param.location == "path",
        "schema": table.schema(param.schema) or {},
    }
    if param.description:
        described["description"] = param.description
    return described


def _body(body: Body, table: _SchemaTable) -> dict[str, Any]:
    described: dict[str, Any] = {"required": body.required, "content": _content(body.content, table)}
    if body.description:
        described["description"] = body.description
    return described


def _content(contents: tuple[Content, ...], table: _SchemaTable) -> dict[str, Any]:
    """Media types; a description goes on the schema (OpenAPI has no description per media type)."""
    described: dict[str, Any] = {}
    for content in contents:
        schema = table.schema(content.schema)
        if content.description:
            schema = {**(schema or {"type": "string"}), "description": content.description}
        described[content.media_type] = {"schema": schema} if schema is not None else {}
    return described


def _responses(route: Route, table: _SchemaTable) -> dict[str, Any]:
    responses = {str(route.success.status): _reply(route.success, table)}
    for error in route.errors:
        if isinstance(error, Reply):
            responses[str(error.status)] = _reply(error, table)
        else:
            responses[str(error)] = {"$ref": f"#/components/responses/{STANDARD_ERRORS[error][0]}"}
    return responses


def _reply(reply: Reply, table: _SchemaTable) -> dict[str, Any]:
    described: dict[str, Any] = {"description": reply.description}
    if reply.content:
        described["content"] = _content(reply.content, table)
    if reply.headers:
        described["headers"] = {h.name: _header(h, table) for h in reply.headers}
    return described


def _header(header: Param, table: _SchemaTable) -> dict[str, Any]:
    described: dict[str, Any] = {"schema": table.schema(header.schema) or {}}
    if header.description:
        described["description"] = header.description
    return described


def _error_reply(code: int, description: str) -> dict[str, Any]:
    reply: dict[str, Any] = {"description": description, "content": {JSON: {"schema": {"$ref": _ERROR_REF}}}}
    if code in _HEADERS:
        reply["headers"] = _HEADERS[code]
    return reply


_ERROR_REF = REF_TEMPLATE.format(name=Error.__name__)
