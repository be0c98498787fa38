"""The review web app: server-rendered pages for login, the three task kinds, progress and admin.

Every request carries a signed session cookie (itsdangerous) holding a CSRF token and, once logged in,
a session token whose row in the store says who it is (so logout and password changes end sessions on
the server; each login issues a new token). Every POST must send the CSRF token back (form field
`csrf_token` or header `X-CSRF-Token`). Failed logins are throttled per account and per client address
(`LoginLimits`, 429 with `Retry-After`), and logins, logouts, password changes and exports go to the
store's audit log with the client's address (`trusted_proxies` decides when X-Forwarded-For counts).
Store calls are blocking, so handlers that touch the store are plain `def`s (FastAPI runs them in its thread
pool). A request that asks for JSON (`Accept: application/json`) gets JSON answers and errors,
anyone else gets pages; either way a bad request is a 4xx with the reason.

This module holds the config, the session middleware and `create_app`, which assembles the routers
of `review/routes/` (health, auth, tasks, images, admin) over one `ReviewState` on `app.state.review`.
"""

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from editcaption.proxies import parse_networks
from editcaption.review.routes import admin, auth, health, images, tasks
from editcaption.review.routes.errors import add_error_handlers
from editcaption.review.routes.shared import ReviewState
from editcaption.review.store import LoginLimits, Store
from editcaption.schema import ERROR_TYPES, SEVERITIES, VERDICTS

_HERE = Path(__file__).parent
COOKIE = "ec_review"
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class ReviewAppConfig(BaseModel):
    """How `editcaption review serve` runs the app."""

    model_config = ConfigDict(extra="forbid")

    store: str = Field(description="SQLAlchemy URL: sqlite:///PATH (default kind) or postgresql+psycopg://…")
    data: Path | None = Field(
        default=None, description="Folder images may be served from; None serves only images stored per task."
    )
    session_hours: float = Field(default=12.0, gt=0, description="A login lasts this long.")
    secure_cookies: bool = Field(default=False, description="Mark cookies HTTPS-only (set behind TLS).")
    login_limits: LoginLimits = Field(default_factory=LoginLimits, description="Failed-login throttling.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of reverse proxies whose X-Forwarded-For is believed; empty: the peer is the client.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, cidrs: list[str]) -> list[str]:
        parse_networks(cidrs)
        return cidrs


class SessionMiddleware:
    """Signed session cookie {"s": session token or None, "c": CSRF token} in `request.state.session`.

    A plain ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware on the submission path): it
    reads the cookie before the app runs, and when the handler sets `request.state.session_changed`
    (or the visitor had no valid cookie) adds the new cookie to the response, with security headers.
    """

    def __init__(self, app: Any, signer: URLSafeTimedSerializer, max_age: int, secure: bool) -> None:
        self.app, self.signer, self.max_age = app, signer, max_age
        self.cookie_flags = f"; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax" + (
            "; Secure" if secure else ""
        )
        self.headers = [(k.lower().encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = None
        raw = Request(scope).cookies.get(COOKIE)
        if raw:
            try:
                session = self.signer.loads(raw, max_age=self.max_age)
            except BadSignature:
                session = None
        state = scope.setdefault("state", {})
        fresh = not isinstance(session, dict) or "c" not in session
        state["session"] = {"s": None, "c": secrets.token_urlsafe(32)} if fresh else session
        state["session_changed"] = fresh

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + self.headers
                if state["session_changed"]:
                    value = f"{COOKIE}={self.signer.dumps(state['session'])}{self.cookie_flags}"
                    headers.append((b"set-cookie", value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def create_app(config: ReviewAppConfig, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """The app on `config.store`; `clock` (UTC) replaces the wall clock for sessions, the audit log and
    login throttling (tests move it instead of waiting out a window)."""
    store = Store(config.store, clock=clock)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals.update(error_types=ERROR_TYPES, severities=SEVERITIES, verdicts=VERDICTS)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="EditCaption review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.review = ReviewState(
        store=store, config=config, proxies=parse_networks(config.trusted_proxies), templates=templates
    )
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    signer = URLSafeTimedSerializer(store.secret(), salt="editcaption-review-session")
    max_age = int(config.session_hours * 3600)
    app.add_middleware(SessionMiddleware, signer=signer, max_age=max_age, secure=config.secure_cookies)
    add_error_handlers(app)
    for routes in (health, auth, tasks, images, admin):
        app.include_router(routes.router)
    return app
