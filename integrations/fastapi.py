"""FastAPI: idempotent path operations, documented in the OpenAPI schema.

::

    idempotency = Idempotency(redis)              # one store and policy for many operations
    app = FastAPI()
    document_idempotency(app)                     # /openapi.json and /docs show it

    @app.post("/orders", status_code=201)
    @idempotency(required=True)                   # or required=False: keys are optional
    async def create_order(order: Order) -> Order: ...

``@idempotency(...)`` is ``@idempotent`` (:mod:`idemkit.decorator`) on a FastAPI path
operation: the same capture and replay path as the middleware, one exchange (and one Redis
pipeline) shared by every operation it marks. :func:`document_idempotency` adds to the
schema of each marked operation, and of each route an ``IdempotencyMiddleware`` on the app
covers, what idemkit adds to it: the ``Idempotency-Key`` header parameter (required or not,
as configured), the ``Idempotent-Replayed`` header on successful answers, and the
problem+json answers 400 (key missing or malformed), 409 (in flight, ``Retry-After``),
413 (body too large), 422 (key reused) and 503 (store unavailable, ``Retry-After``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, Unpack

from integrations._extras import missing_extra

try:
    from fastapi import FastAPI
    from fastapi.routing import APIRoute
except ImportError as exc:
    raise missing_extra(__name__, "fastapi", exc) from exc

from idemkit.exchange import HttpIdempotency
from idemkit.handlers import decorate_handler
from idemkit.middleware import Coverage, IdempotencyMiddleware, as_lease_store
from idemkit.observe import Observer
from idemkit.policy import IdempotencyPolicy, PolicyOptions

__all__ = ["PROBLEM_SCHEMA", "Idempotency", "document_idempotency", "openapi_operation"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__idemkit_operation__"
_SCHEMA_NAME = "IdempotencyProblem"
_REF = {"$ref": f"#/components/schemas/{_SCHEMA_NAME}"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": _SCHEMA_NAME,
    "description": "An RFC 9457 problem answered by idemkit on the service's behalf.",
    "type": "object",
    "properties": {
        "type": {"type": "string", "example": "urn:idemkit:problem:request-in-flight"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying the same request.",
        "schema": {"type": "integer"},
    }
}
_PROBLEMS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "400": ("Idempotency-Key missing (where required) or malformed", None),
    "409": ("A request with this Idempotency-Key is still in progress", _RETRY_AFTER),
    "413": ("Request body too large for an idempotent request", None),
    "422": ("Idempotency-Key already used for a different request", None),
    "503": ("Idempotency store unavailable; the request was not processed", _RETRY_AFTER),
}


@dataclass(frozen=True, slots=True)
class _Operation:
    required: bool


class Idempotency:
    """Idempotency for FastAPI path operations over one store and policy.

    ``store`` is a ``redis.asyncio`` client (or an :class:`idemkit.LeaseStore`); ``observer``
    and the keyword options are those of ``IdempotencyMiddleware`` / ``@idempotent``.
    """

    def __init__(
        self,
        store: Any,
        *,
        observer: Observer | None = None,
        **options: Unpack[PolicyOptions],
    ) -> None:
        self.policy = IdempotencyPolicy.from_options(**options)
        self.exchange = HttpIdempotency(as_lease_store(store), self.policy, observer)

    def __call__(self, *, required: bool = True) -> Callable[[F], F]:
        """Make one path operation idempotent; ``required``: answer 400 without a key."""

        def decorate(fn: F) -> F:
            endpoint: F = decorate_handler(
                fn, self.exchange, require_key=required, framework="fastapi"
            )
            setattr(endpoint, _MARK, _Operation(required))
            return endpoint

        return decorate


def document_idempotency(app: FastAPI) -> None:
    """Document idemkit in ``app``'s OpenAPI schema (see the module docstring). Call once,
    before or after adding routes: the schema is completed when it is first built."""
    build = app.openapi
    if getattr(build, _MARK, False):
        return

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _document(app, schema)
            app.openapi_schema = schema
        return app.openapi_schema

    setattr(openapi, _MARK, True)
    app.openapi = openapi  # type: ignore[method-assign]
    app.openapi_schema = None


def openapi_operation(operation: dict[str, Any], *, required: bool) -> None:
    """Add idemkit's header and answers to one OpenAPI operation object (in place)."""
    parameters = operation.setdefault("parameters", [])
    if not any(p.get("name", "").lower() == "idempotency-key" for p in parameters):
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": required,
                "description": (
                    "A unique value (e.g. a UUID) naming this request; send the same value "
                    "when you retry it, to receive the stored answer instead of running it "
                    "twice. 1-255 visible ASCII characters, bare or as a quoted string."
                ),
                "schema": {"type": "string", "minLength": 1, "maxLength": 257},
            }
        )
    responses = operation.setdefault("responses", {})
    for status, answer in responses.items():
        if status.startswith("2"):
            answer.setdefault("headers", {})["Idempotent-Replayed"] = {
                "description": "'true' when this is the stored answer to an earlier request",
                "schema": {"type": "string", "enum": ["true"]},
            }
    for status, (description, headers) in _PROBLEMS.items():
        answer = responses.get(status)
        if answer is None:
            answer = responses[status] = {"description": description}
        else:  # e.g. FastAPI's own 422 (validation error): both bodies are possible
            answer["description"] = f"{answer.get('description', '')}; or: {description}"
        answer.setdefault("content", {})["application/problem+json"] = {"schema": _REF}
        if headers:
            answer.setdefault("headers", {}).update(headers)


def _document(app: FastAPI, schema: dict[str, Any]) -> None:
    coverages = [_coverage(m) for m in app.user_middleware if _is_ours(m)]
    paths = schema.get("paths", {})
    documented = False
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        mark = getattr(route.endpoint, _MARK, None)
        for method in route.methods or ():
            required = mark.required if isinstance(mark, _Operation) else None
            for coverage in coverages:
                covered = coverage.required(method, route.path_format)
                if covered is not None:
                    required = covered or bool(required)
            operation = paths.get(route.path_format, {}).get(method.lower())
            if required is not None and operation is not None:
                openapi_operation(operation, required=required)
                documented = True
    if documented:
        schema.setdefault("components", {}).setdefault("schemas", {})[_SCHEMA_NAME] = PROBLEM_SCHEMA


def _is_ours(middleware: Any) -> bool:
    cls = getattr(middleware, "cls", None)
    return isinstance(cls, type) and issubclass(cls, IdempotencyMiddleware)


def _coverage(middleware: Any) -> Coverage:
    options: dict[str, Any] = dict(getattr(middleware, "kwargs", {}))
    methods: Iterable[str] = options.get("methods", IdempotencyPolicy().methods)
    return Coverage(
        (str(m).upper() for m in methods),
        options.get("require_key", False),
        options.get("exempt_paths", ()),
    )
