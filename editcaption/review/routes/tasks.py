"""The annotator's routes: the home page with progress, the queue, a task's page, submit, skip and undo.

Every task route acts on the logged-in user's own assignments only; the store answers `NotYours`
(shown as 404) for anyone else's, and `BadResult` (422 with the reason) for an invalid answer.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from editcaption.review.routes.shared import Csrf, HTTPError, Me, State, go, page, wants_json
from editcaption.review.tasks import TASK_KINDS

router = APIRouter()


def check_kind(kind: str | None) -> None:
    """A `kind` filter, when given, names one of the task kinds."""
    if kind is not None and kind not in TASK_KINDS:
        raise HTTPError(422, f"kind must be one of {', '.join(TASK_KINDS)}")


@router.get("/", response_class=HTMLResponse)
def home(request: Request, state: State, me: Me, message: str | None = None) -> HTMLResponse:
    progress = state.store.progress(me.id)
    return page(request, "home.html", me, progress=progress, kinds=TASK_KINDS, message=message)


@router.get("/next")
def next_task(
    request: Request, state: State, me: Me, kind: str | None = None, project: str | None = None
) -> Response:
    check_kind(kind)
    aid = state.store.next_assignment(me.id, kind, project)
    if aid is None:
        return go(request, "/?message=Nothing+left+in+your+queue", done=True)
    return go(request, f"/task/{aid}")


@router.get("/queue")
def queue(state: State, me: Me, kind: str | None = None) -> dict[str, Any]:
    """The caller's pending task ids, for tools that annotate through the API."""
    check_kind(kind)
    return {"pending": state.store.queue(me.id, kind)}


@router.get("/task/{aid}", response_class=HTMLResponse)
def task_page(request: Request, state: State, aid: int, me: Me) -> HTMLResponse:
    task = state.store.task(me.id, aid)
    return page(request, f"task_{task.kind}.html", me, task=task, p=task.payload)


@router.post("/task/{aid}", dependencies=[Csrf])
def submit(
    request: Request,
    state: State,
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
    """An answer to one task; the fields a task kind needs are checked by the store (`BadResult`)."""
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
    task_kind = state.store.task(me.id, aid).kind if not wants_json(request) else None
    result = state.store.submit(me.id, aid, {k: v for k, v in fields.items() if v is not None})
    if wants_json(request):
        return JSONResponse({"ok": True, "result": result})
    return go(request, f"/next?kind={task_kind}")


@router.post("/task/{aid}/skip", dependencies=[Csrf])
def skip(request: Request, state: State, aid: int, me: Me) -> Response:
    kind = state.store.task(me.id, aid).kind
    state.store.skip(me.id, aid)
    return go(request, f"/next?kind={kind}")


@router.post("/undo", dependencies=[Csrf])
def undo(request: Request, state: State, me: Me) -> Response:
    aid = state.store.undo(me.id)
    if aid is None:
        return go(request, "/?message=Nothing+to+undo")
    return go(request, f"/task/{aid}", undone=aid)


@router.post("/requeue-skipped", dependencies=[Csrf])
def requeue(request: Request, state: State, me: Me) -> Response:
    n = state.store.requeue_skipped(me.id)
    return go(request, f"/?message={n}+skipped+tasks+back+in+your+queue", requeued=n)
