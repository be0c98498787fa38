"""Admin-only routes: the overview page (stats, users), stats as JSON, and downloads of the exports.

An export is written to a fresh temporary folder, streamed, then removed; it is audited like the CLI's.
"""

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.background import BackgroundTask

from editcaption.review.exports import EXPORT_KINDS, export
from editcaption.review.routes.shared import Admin, HTTPError, State, address, page
from editcaption.review.stats import review_stats

router = APIRouter(prefix="/admin")
EXPORT_FORMATS = ("parquet", "jsonl")


@router.get("", response_class=HTMLResponse)
def admin_page(request: Request, state: State, me: Admin) -> HTMLResponse:
    stats = review_stats(state.store)
    users = [asdict(u) for u in state.store.users()]
    return page(request, "admin.html", me, stats=stats, users=users, export_kinds=EXPORT_KINDS)


@router.get("/stats.json")
def admin_stats(state: State, me: Admin) -> dict[str, Any]:
    return review_stats(state.store)


@router.get("/export")
def admin_export(request: Request, state: State, me: Admin, kind: str, format: str = "parquet") -> Response:
    if kind not in EXPORT_KINDS:
        raise HTTPError(422, f"kind must be one of {', '.join(EXPORT_KINDS)}")
    if format not in EXPORT_FORMATS:
        raise HTTPError(422, "format must be parquet or jsonl")
    folder = Path(tempfile.mkdtemp(prefix="editcaption-export-"))
    out = folder / f"{kind}.{format}"
    config = state.config
    try:
        export(config.store, kind, out, data_dir=config.data, actor=me.name, address=address(request))  # type: ignore[arg-type]
    except ValueError as exc:
        remove_folder(folder)
        raise HTTPError(409, str(exc)) from None
    return FileResponse(out, filename=out.name, background=BackgroundTask(remove_folder, folder))


def remove_folder(folder: Path) -> None:
    """Delete the export's temporary folder once the download has been sent (it holds files only)."""
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
