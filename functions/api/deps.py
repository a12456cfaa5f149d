"""FastAPI dependencies: the wired services and the authenticated caller.

``create_app`` stores a services provider on ``app.state``; routes take ``ServicesDep`` and
``CallerDep``, so a test can swap either with ``app.dependency_overrides[get_services]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from llm_gateway.errors import InvalidRequest, PermissionDenied
from llm_gateway.runtime import Services
from llm_gateway.security.api_keys import Caller
from llm_gateway.text import first_unencodable, may_hold_surrogates

ServicesProvider = Callable[[], Services]


# Dependencies are ``async def`` where they do no blocking I/O: FastAPI runs a sync dependency in
# the thread pool, one hand-off (and GIL switch) per dependency per request.
async def get_services(request: Request) -> Services:
    provider: ServicesProvider = request.app.state.services
    return provider()


ServicesDep = Annotated[Services, Depends(get_services)]


# Documents the bearer scheme in /openapi.json; auto_error=False so a missing or malformed header is
# the gateway's own OpenAI-shaped 401 (authenticate reads the header itself), not FastAPI's 403.
bearer = HTTPBearer(auto_error=False, description="A gateway API key: `Authorization: Bearer <key>`.")


async def get_caller(
    request: Request, services: ServicesDep, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    header = request.headers.get("authorization")
    # A cached key is answered on the loop; a lookup (a DynamoDB read) runs in the thread pool.
    caller = services.auth.cached(header)
    if caller is None:
        caller = await run_in_threadpool(services.auth.authenticate, header)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_admin(who: CallerDep) -> Caller:
    """An admin key, or 403 (the admin routes are documented; hiding them would not protect them)."""
    if not who.admin:
        raise PermissionDenied("This route needs an admin key.", code="admin_key_required")
    return who


AdminDep = Annotated[Caller, Depends(get_admin)]


async def encodable_body(request: Request) -> None:
    """Every route's dependency: a JSON body holding text that cannot be encoded (a lone UTF-16
    surrogate, in any field — message content, system prompt, input items, job bodies, metadata)
    is a 400 naming the field, before the handler runs. The body FastAPI parsed is reused; only a
    body whose bytes could spell a surrogate is walked."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    raw = await request.body()
    if not raw or not may_hold_surrogates(raw):
        return
    try:
        body = await request.json()
    except ValueError:  # not JSON: FastAPI has refused it already, or the route takes no JSON
        return
    where = first_unencodable(body)
    if where is not None:
        raise InvalidRequest(
            f"'{where}' holds text that cannot be encoded as UTF-8 (an unpaired UTF-16 surrogate).", param=where
        )
