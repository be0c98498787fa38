"""Images for the logged-in user's tasks: bytes stored with the task, or files under the data folder.

Data-folder paths are resolved by `review.paths.resolve_image`, which refuses anything that leaves the
folder (`..`, absolute paths, symlinks out) or is not an image.
"""

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from editcaption.review.paths import UnsafePath, media_type, resolve_image
from editcaption.review.routes.shared import HTTPError, Me, ReviewState, State

router = APIRouter()


@router.get("/task/{aid}/image/{which}")
def task_image(state: State, aid: int, which: str, me: Me) -> Response:
    data, path = state.store.image(me.id, aid, which)
    if data is not None:
        return Response(data, media_type=sniff(data), headers={"Cache-Control": "private, max-age=3600"})
    if path is None:
        raise HTTPError(404, f"task {aid} has no {which} image")
    return serve_data(state, path)


@router.get("/data/{path:path}")
def data_file(state: State, path: str, me: Me) -> Response:
    return serve_data(state, path)


def serve_data(state: ReviewState, relative: str) -> Response:
    """A file under the configured data folder: 400 for an unsafe path, 404 for a missing one."""
    if state.config.data is None:
        raise HTTPError(404, "this server has no data folder (--data)")
    try:
        found = resolve_image(state.config.data, relative)
    except UnsafePath as exc:
        raise HTTPError(400, str(exc)) from None
    except FileNotFoundError as exc:
        raise HTTPError(404, str(exc)) from None
    return FileResponse(found, media_type=media_type(found))


def sniff(data: bytes) -> str:
    """The media type of stored image bytes, from their magic number."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
