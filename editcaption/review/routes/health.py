"""`/healthz`: the liveness probe; it needs no login and touches no store."""

from fastapi import APIRouter

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
