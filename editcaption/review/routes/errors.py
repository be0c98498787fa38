"""How refusals reach the user: every known error becomes a 4xx with its reason, JSON or the error page.

Pages that need a login redirect a browser to /login instead of showing a bare 401.
"""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from editcaption.review.routes.shared import HTTPError, refuse, wants_json
from editcaption.review.store import NotYours, StoreError
from editcaption.review.tasks import BadResult


async def http_error(request: Request, exc: HTTPError) -> Response:
    if exc.status == 401 and not wants_json(request) and request.method == "GET":
        return RedirectResponse("/login", status_code=303)
    return refuse(request, exc.status, exc.reason)


async def starlette_error(request: Request, exc: StarletteHTTPException) -> Response:
    return refuse(request, exc.status_code, str(exc.detail))


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    """One line per bad field, named by its path without the leading `body`/`query`."""
    parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in exc.errors()]
    return refuse(request, 422, "; ".join(parts))


async def not_yours(request: Request, exc: NotYours) -> Response:
    """Someone else's task answers 404, as if it did not exist."""
    return refuse(request, 404, str(exc))


async def bad_result(request: Request, exc: BadResult) -> Response:
    return refuse(request, 422, str(exc))


async def store_error(request: Request, exc: StoreError) -> Response:
    return refuse(request, 400, str(exc))


def add_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on `app`."""
    app.add_exception_handler(HTTPError, http_error)
    app.add_exception_handler(StarletteHTTPException, starlette_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(NotYours, not_yours)
    app.add_exception_handler(BadResult, bad_result)
    app.add_exception_handler(StoreError, store_error)
