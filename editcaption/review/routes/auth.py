"""Login, logout and password change: the routes that open and end sessions.

Each login issues a new session token (its row in the store says who it is) and a new CSRF token.
Failed logins are throttled per account and per client address (`LoginLimits`, 429 with
`Retry-After`), and every login, refusal, logout and password change goes to the audit log.
"""

import math
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from editcaption.review.routes.shared import (
    Csrf,
    Me,
    ReviewState,
    State,
    address,
    form_error,
    go,
    page,
    wants_json,
)
from editcaption.review.store import LoginBlock, StoreError, UserInfo

router = APIRouter()


def start_session(request: Request, state: ReviewState, user_id: int) -> str:
    """A new session token and CSRF token in the cookie (the old token, if any, ends); the CSRF token."""
    token = state.store.open_session(
        user_id, state.config.session_hours, replaces=request.state.session.get("s")
    )
    request.state.session = {"s": token, "c": secrets.token_urlsafe(32)}
    request.state.session_changed = True
    return request.state.session["c"]


def refused_login(
    request: Request,
    state: ReviewState,
    name: str,
    where: str,
    block: LoginBlock,
    template: str,
    me: UserInfo | None,
) -> Response:
    """The 429 for a throttled account or address, recorded in the audit log."""
    wait = math.ceil(block.retry_after_s)
    state.store.record(
        "login.refused",
        actor="anonymous" if me is None else me.name,
        target=name,
        address=where,
        detail={"scope": block.scope, "retry_after_s": wait},
    )
    whose = "for this account" if block.scope == "account" else "from your address"
    reason = f"Too many failed logins {whose}; try again in {wait} s."
    return form_error(request, template, me, 429, reason, {"Retry-After": str(wait)})


@router.get("/login")
def login_page(request: Request) -> Response:
    """The login form; API clients get the CSRF token to post back instead."""
    if wants_json(request):
        return JSONResponse({"csrf_token": request.state.session["c"]})
    return page(request, "login.html", None, error=None)


@router.post("/login", dependencies=[Csrf])
def login(
    request: Request,
    state: State,
    name: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    where = address(request)
    block = state.store.login_block(name, where, state.config.login_limits)
    if block is not None:  # refused before the password is checked, right or wrong
        return refused_login(request, state, name, where, block, "login.html", None)
    found = state.store.authenticate(name, password)
    if found is None:
        state.store.record("login.failure", actor="anonymous", target=name, address=where)
        return form_error(request, "login.html", None, 401, "Wrong name or password.")
    csrf_token = start_session(request, state, found.id)
    state.store.record("login.success", actor=found.name, target=found.name, address=where)
    return go(request, "/", csrf_token=csrf_token)


@router.post("/logout", dependencies=[Csrf])
def logout(request: Request, state: State) -> Response:
    token = request.state.session.get("s")
    me = state.store.session_user(token) if isinstance(token, str) else None
    if isinstance(token, str):
        state.store.close_session(token)
    if me is not None:
        state.store.record("logout", actor=me.name, target=me.name, address=address(request))
    request.state.session = {"s": None, "c": secrets.token_urlsafe(32)}
    request.state.session_changed = True
    return go(request, "/login")


@router.get("/password", response_class=HTMLResponse)
def password_page(request: Request, me: Me) -> HTMLResponse:
    return page(request, "password.html", me, error=None)


@router.post("/password", dependencies=[Csrf])
def change_password(
    request: Request,
    state: State,
    me: Me,
    current: Annotated[str, Form(max_length=1024)],
    new: Annotated[str, Form(max_length=1024)],
    repeat: Annotated[str, Form(max_length=1024)],
) -> Response:
    """A new password; every other session of the account ends, this one gets a new token."""
    where = address(request)
    block = state.store.login_block(me.name, where, state.config.login_limits)
    if block is not None:
        return refused_login(request, state, me.name, where, block, "password.html", me)
    if state.store.authenticate(me.name, current) is None:
        state.store.record(
            "login.failure", actor=me.name, target=me.name, address=where, detail={"route": "/password"}
        )
        return form_error(request, "password.html", me, 403, "The current password is wrong.")
    if new != repeat:
        return form_error(request, "password.html", me, 422, "The two new passwords differ.")
    try:
        state.store.change_password(me.id, new, keep_session=request.state.session["s"])
    except StoreError as exc:
        return form_error(request, "password.html", me, 422, str(exc))
    csrf_token = start_session(request, state, me.id)
    state.store.record("password.change", actor=me.name, target=me.name, address=where)
    return go(request, "/?message=Password+changed;+your+other+sessions+have+ended", csrf_token=csrf_token)
