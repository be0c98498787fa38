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
"""

import math
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from editcaption.proxies import client_address, parse_networks
from editcaption.redaction import redact_text
from editcaption.review.exports import EXPORT_KINDS, export
from editcaption.review.paths import UnsafePath, media_type, resolve_image
from editcaption.review.stats import review_stats
from editcaption.review.store import LoginBlock, LoginLimits, NotYours, Store, StoreError, UserInfo
from editcaption.review.tasks import TASK_KINDS, BadResult
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


class HTTPError(Exception):
    """A refused request: status and the reason shown to the user."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def create_app(config: ReviewAppConfig, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """The app on `config.store`; `clock` (UTC) replaces the wall clock for sessions, the audit log and
    login throttling (tests move it instead of waiting out a window)."""
    store = Store(config.store, clock=clock)
    proxies = parse_networks(config.trusted_proxies)
    signer = URLSafeTimedSerializer(store.secret(), salt="editcaption-review-session")
    max_age = int(config.session_hours * 3600)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals.update(error_types=ERROR_TYPES, severities=SEVERITIES, verdicts=VERDICTS)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="EditCaption review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.store = store
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    app.add_middleware(SessionMiddleware, signer=signer, max_age=max_age, secure=config.secure_cookies)

    def wants_json(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "")

    def refuse(request: Request, status: int, reason: str) -> Response:
        reason = redact_text(reason)
        if wants_json(request):
            return JSONResponse({"error": reason}, status_code=status)
        return templates.TemplateResponse(
            request, "error.html", {"status": status, "reason": reason, "user": None}, status_code=status
        )

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> Response:
        if exc.status == 401 and not wants_json(request) and request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        return refuse(request, exc.status, exc.reason)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException) -> Response:
        return refuse(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in exc.errors()]
        return refuse(request, 422, "; ".join(parts))

    @app.exception_handler(NotYours)
    async def _not_yours(request: Request, exc: NotYours) -> Response:
        return refuse(request, 404, str(exc))

    @app.exception_handler(BadResult)
    async def _bad_result(request: Request, exc: BadResult) -> Response:
        return refuse(request, 422, str(exc))

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> Response:
        return refuse(request, 400, str(exc))

    def user(request: Request) -> UserInfo:
        token = request.state.session.get("s")
        found = store.session_user(token) if isinstance(token, str) else None
        if found is None:
            raise HTTPError(401, "log in first")
        return found

    def address(request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.getlist("x-forwarded-for"), proxies)

    def start_session(request: Request, user_id: int) -> str:
        """A new session token and CSRF token in the cookie (the old token, if any, ends)."""
        token = store.open_session(user_id, config.session_hours, replaces=request.state.session.get("s"))
        request.state.session = {"s": token, "c": secrets.token_urlsafe(32)}
        request.state.session_changed = True
        return request.state.session["c"]

    def refused_login(
        request: Request, name: str, where: str, block: LoginBlock, template: str, me: UserInfo | None
    ) -> Response:
        wait = math.ceil(block.retry_after_s)
        store.record(
            "login.refused",
            actor="anonymous" if me is None else me.name,
            target=name,
            address=where,
            detail={"scope": block.scope, "retry_after_s": wait},
        )
        whose = "for this account" if block.scope == "account" else "from your address"
        reason = f"Too many failed logins {whose}; try again in {wait} s."
        return form_error(request, template, me, 429, reason, {"Retry-After": str(wait)})

    def form_error(
        request: Request,
        template: str,
        me: UserInfo | None,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
    ) -> Response:
        if wants_json(request):
            return JSONResponse({"error": reason}, status_code=status, headers=headers)
        response = page(request, template, me, error=reason)
        response.status_code = status
        response.headers.update(headers or {})
        return response

    def admin(me: Annotated[UserInfo, Depends(user)]) -> UserInfo:
        if not me.is_admin:
            raise HTTPError(403, "admin pages are for admins only")
        return me

    def csrf(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> None:
        sent = csrf_token or request.headers.get("x-csrf-token") or ""
        if not secrets.compare_digest(sent.encode(), request.state.session["c"].encode()):
            raise HTTPError(403, "missing or wrong CSRF token: reload the page and try again")

    def page(request: Request, name: str, me: UserInfo | None, **context: Any) -> HTMLResponse:
        context.update(user=me, csrf_token=request.state.session["c"])
        return templates.TemplateResponse(request, name, context)

    def go(request: Request, url: str, **payload: Any) -> Response:
        if wants_json(request):
            return JSONResponse({"ok": True, "next": url, **payload})
        return RedirectResponse(url, status_code=303)

    Me = Annotated[UserInfo, Depends(user)]
    Admin = Annotated[UserInfo, Depends(admin)]
    Csrf = Depends(csrf)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/login")
    def login_page(request: Request) -> Response:
        if wants_json(request):
            return JSONResponse({"csrf_token": request.state.session["c"]})
        return page(request, "login.html", None, error=None)

    @app.post("/login", dependencies=[Csrf])
    def login(
        request: Request,
        name: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
    ) -> Response:
        where = address(request)
        block = store.login_block(name, where, config.login_limits)
        if block is not None:  # refused before the password is checked, right or wrong
            return refused_login(request, name, where, block, "login.html", None)
        found = store.authenticate(name, password)
        if found is None:
            store.record("login.failure", actor="anonymous", target=name, address=where)
            return form_error(request, "login.html", None, 401, "Wrong name or password.")
        csrf_token = start_session(request, found.id)
        store.record("login.success", actor=found.name, target=found.name, address=where)
        return go(request, "/", csrf_token=csrf_token)

    @app.post("/logout", dependencies=[Csrf])
    def logout(request: Request) -> Response:
        token = request.state.session.get("s")
        me = store.session_user(token) if isinstance(token, str) else None
        if isinstance(token, str):
            store.close_session(token)
        if me is not None:
            store.record("logout", actor=me.name, target=me.name, address=address(request))
        request.state.session = {"s": None, "c": secrets.token_urlsafe(32)}
        request.state.session_changed = True
        return go(request, "/login")

    @app.get("/password", response_class=HTMLResponse)
    def password_page(request: Request, me: Me) -> HTMLResponse:
        return page(request, "password.html", me, error=None)

    @app.post("/password", dependencies=[Csrf])
    def change_password(
        request: Request,
        me: Me,
        current: Annotated[str, Form(max_length=1024)],
        new: Annotated[str, Form(max_length=1024)],
        repeat: Annotated[str, Form(max_length=1024)],
    ) -> Response:
        """A new password; every other session of the account ends, this one gets a new token."""
        where = address(request)
        block = store.login_block(me.name, where, config.login_limits)
        if block is not None:
            return refused_login(request, me.name, where, block, "password.html", me)
        if store.authenticate(me.name, current) is None:
            store.record(
                "login.failure", actor=me.name, target=me.name, address=where, detail={"route": "/password"}
            )
            return form_error(request, "password.html", me, 403, "The current password is wrong.")
        if new != repeat:
            return form_error(request, "password.html", me, 422, "The two new passwords differ.")
        try:
            store.change_password(me.id, new, keep_session=request.state.session["s"])
        except StoreError as exc:
            return form_error(request, "password.html", me, 422, str(exc))
        csrf_token = start_session(request, me.id)
        store.record("password.change", actor=me.name, target=me.name, address=where)
        return go(
            request, "/?message=Password+changed;+your+other+sessions+have+ended", csrf_token=csrf_token
        )

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, me: Me, message: str | None = None) -> HTMLResponse:
        return page(
            request, "home.html", me, progress=store.progress(me.id), kinds=TASK_KINDS, message=message
        )

    @app.get("/next")
    def next_task(request: Request, me: Me, kind: str | None = None, project: str | None = None) -> Response:
        if kind is not None and kind not in TASK_KINDS:
            raise HTTPError(422, f"kind must be one of {', '.join(TASK_KINDS)}")
        aid = store.next_assignment(me.id, kind, project)
        if aid is None:
            return go(request, "/?message=Nothing+left+in+your+queue", done=True)
        return go(request, f"/task/{aid}")

    @app.get("/queue")
    def queue(me: Me, kind: str | None = None) -> dict[str, Any]:
        """The caller's pending task ids, for tools that annotate through the API."""
        if kind is not None and kind not in TASK_KINDS:
            raise HTTPError(422, f"kind must be one of {', '.join(TASK_KINDS)}")
        return {"pending": store.queue(me.id, kind)}

    @app.get("/task/{aid}", response_class=HTMLResponse)
    def task_page(request: Request, aid: int, me: Me) -> HTMLResponse:
        task = store.task(me.id, aid)
        return page(request, f"task_{task.kind}.html", me, task=task, p=task.payload)

    @app.post("/task/{aid}", dependencies=[Csrf])
    def submit(
        request: Request,
        aid: int,
        me: Me,
        action: Annotated[str | None, Form()] = None,
        instruction: Annotated[str | None, Form()] = None,
        fixed: Annotated[list[str] | None, Form()] = None,
        chosen: Annotated[str | None, Form()] = None,
        error_type: Annotated[str | None, Form()] = None,
        severity: Annotated[str | None, Form()] = None,
        verdict: Annotated[str | None, Form()] = None,
        error_types: Annotated[list[str] | None, Form()] = None,
    ) -> Response:
        fields = {
            "action": action,
            "instruction": instruction,
            "fixed": fixed,
            "chosen": chosen,
            "error_type": error_type,
            "severity": severity,
            "verdict": verdict,
            "error_types": error_types,
        }
        task_kind = store.task(me.id, aid).kind if not wants_json(request) else None
        result = store.submit(me.id, aid, {k: v for k, v in fields.items() if v is not None})
        if wants_json(request):
            return JSONResponse({"ok": True, "result": result})
        return go(request, f"/next?kind={task_kind}")

    @app.post("/task/{aid}/skip", dependencies=[Csrf])
    def skip(request: Request, aid: int, me: Me) -> Response:
        kind = store.task(me.id, aid).kind
        store.skip(me.id, aid)
        return go(request, f"/next?kind={kind}")

    @app.post("/undo", dependencies=[Csrf])
    def undo(request: Request, me: Me) -> Response:
        aid = store.undo(me.id)
        if aid is None:
            return go(request, "/?message=Nothing+to+undo")
        return go(request, f"/task/{aid}", undone=aid)

    @app.post("/requeue-skipped", dependencies=[Csrf])
    def requeue(request: Request, me: Me) -> Response:
        n = store.requeue_skipped(me.id)
        return go(request, f"/?message={n}+skipped+tasks+back+in+your+queue", requeued=n)

    @app.get("/task/{aid}/image/{which}")
    def task_image(aid: int, which: str, me: Me) -> Response:
        data, path = store.image(me.id, aid, which)
        if data is not None:
            return Response(data, media_type=_sniff(data), headers={"Cache-Control": "private, max-age=3600"})
        if path is None:
            raise HTTPError(404, f"task {aid} has no {which} image")
        return _serve_data(path)

    @app.get("/data/{path:path}")
    def data_file(path: str, me: Me) -> Response:
        return _serve_data(path)

    def _serve_data(relative: str) -> Response:
        if config.data is None:
            raise HTTPError(404, "this server has no data folder (--data)")
        try:
            found = resolve_image(config.data, relative)
        except UnsafePath as exc:
            raise HTTPError(400, str(exc)) from None
        except FileNotFoundError as exc:
            raise HTTPError(404, str(exc)) from None
        return FileResponse(found, media_type=media_type(found))

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page(request: Request, me: Admin) -> HTMLResponse:
        return page(
            request,
            "admin.html",
            me,
            stats=review_stats(store),
            users=[asdict(u) for u in store.users()],
            export_kinds=EXPORT_KINDS,
        )

    @app.get("/admin/stats.json")
    def admin_stats(me: Admin) -> dict[str, Any]:
        return review_stats(store)

    @app.get("/admin/export")
    def admin_export(request: Request, me: Admin, kind: str, format: str = "parquet") -> Response:
        if kind not in EXPORT_KINDS:
            raise HTTPError(422, f"kind must be one of {', '.join(EXPORT_KINDS)}")
        if format not in ("parquet", "jsonl"):
            raise HTTPError(422, "format must be parquet or jsonl")
        folder = Path(tempfile.mkdtemp(prefix="editcaption-export-"))
        out = folder / f"{kind}.{format}"
        try:
            export(config.store, kind, out, data_dir=config.data, actor=me.name, address=address(request))  # type: ignore[arg-type]
        except ValueError as exc:
            _remove(folder)
            raise HTTPError(409, str(exc)) from None
        return FileResponse(out, filename=out.name, background=BackgroundTask(_remove, folder))

    return app


def _remove(folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
