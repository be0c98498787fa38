"""What every review router shares: the app's state, the refusal type, the page/JSON answers and the
request dependencies (who is logged in, is it an admin, is the CSRF token right, where does it come from).

The state lives on `app.state.review` (set once by `create_app`), so routers are plain module-level
`APIRouter`s that read it per request instead of closures over `create_app`'s locals.
"""

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from editcaption.proxies import Network, client_address
from editcaption.redaction import redact_text
from editcaption.review.store import Store, UserInfo

if TYPE_CHECKING:
    from editcaption.review.app import ReviewAppConfig


@dataclass(frozen=True)
class ReviewState:
    """The app-wide objects handlers need, built once from the `ReviewAppConfig`."""

    store: Store
    config: "ReviewAppConfig"
    proxies: tuple[Network, ...]
    templates: Jinja2Templates


class HTTPError(Exception):
    """A refused request: status and the reason shown to the user."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


async def review_state(request: Request) -> ReviewState:
    """The app's `ReviewState` (async: it blocks on nothing, so it needs no thread)."""
    return request.app.state.review


State = Annotated[ReviewState, Depends(review_state)]


def wants_json(request: Request) -> bool:
    """API clients ask for JSON; everyone else gets pages and redirects."""
    return "application/json" in request.headers.get("accept", "")


def page(request: Request, name: str, me: UserInfo | None, **context: Any) -> HTMLResponse:
    """A template rendered with the user and the CSRF token every form posts back."""
    context.update(user=me, csrf_token=request.state.session["c"])
    return request.app.state.review.templates.TemplateResponse(request, name, context)


def refuse(request: Request, status: int, reason: str) -> Response:
    """An error answer, JSON or the error page, with secrets (store URLs) redacted from the reason."""
    reason = redact_text(reason)
    if wants_json(request):
        return JSONResponse({"error": reason}, status_code=status)
    templates = request.app.state.review.templates
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "reason": reason, "user": None}, status_code=status
    )


def form_error(
    request: Request,
    template: str,
    me: UserInfo | None,
    status: int,
    reason: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """A form shown again with its error (or the JSON error), so the user can correct and resend."""
    if wants_json(request):
        return JSONResponse({"error": reason}, status_code=status, headers=headers)
    response = page(request, template, me, error=reason)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def go(request: Request, url: str, **payload: Any) -> Response:
    """Where to go next: a 303 for browsers, `{"ok", "next", …payload}` for API clients."""
    if wants_json(request):
        return JSONResponse({"ok": True, "next": url, **payload})
    return RedirectResponse(url, status_code=303)


def address(request: Request) -> str:
    """The client's address for throttling and the audit log (X-Forwarded-For only from trusted proxies)."""
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"), request.app.state.review.proxies)


def current_user(request: Request, state: State) -> UserInfo:
    """The logged-in user from the session token; 401 (a redirect to /login for pages) without one."""
    token = request.state.session.get("s")
    found = state.store.session_user(token) if isinstance(token, str) else None
    if found is None:
        raise HTTPError(401, "log in first")
    return found


def admin_user(me: Annotated[UserInfo, Depends(current_user)]) -> UserInfo:
    """The logged-in user, if an admin; 403 otherwise."""
    if not me.is_admin:
        raise HTTPError(403, "admin pages are for admins only")
    return me


def check_csrf(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> None:
    """Every POST sends the session's CSRF token back, as form field `csrf_token` or `X-CSRF-Token`."""
    sent = csrf_token or request.headers.get("x-csrf-token") or ""
    if not secrets.compare_digest(sent.encode(), request.state.session["c"].encode()):
        raise HTTPError(403, "missing or wrong CSRF token: reload the page and try again")


Me = Annotated[UserInfo, Depends(current_user)]
Admin = Annotated[UserInfo, Depends(admin_user)]
Csrf = Depends(check_csrf)
