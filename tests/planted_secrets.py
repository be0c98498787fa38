"""Secrets planted on purpose, and a search for them in every file a run wrote (issue 23).

The Serve tests start their server with these variables in its environment; `test_secrets.py` runs
synthesis, eval and review with them and with a store URL that carries `DB_PASSWORD`. Afterwards every
file under the run's folders (outputs, logs, Ray's session folder) is searched: text files as bytes,
Parquet files cell by cell (their pages are compressed, so a byte search could miss a value).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

DB_PASSWORD = "S3cret-planted-db-4711"
PLANTED_ENV = {
    "OPENAI_API_KEY": "sk-planted-openai-9Qx27LmZ",
    "AWS_SECRET_ACCESS_KEY": "planted-aws-secret-Hq8Zr2",
    "HF_TOKEN": "hf_plantedTokenXk42Lq",
    "EDITCAPTION_REVIEW_PASSWORD": "planted-review-password-77",
    "PGPASSWORD": "planted-pg-password-31",
    "EDITCAPTION_REVIEW_STORE": f"postgresql+psycopg://postgres:{DB_PASSWORD}@127.0.0.1:1/review",
}
SECRETS = [*(v for k, v in PLANTED_ENV.items() if k != "EDITCAPTION_REVIEW_STORE"), DB_PASSWORD]
_MAX_BYTES = 64_000_000


def _parquet_text(path: Path) -> bytes:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception:  # not a readable Parquet file after all: search its bytes
        return path.read_bytes()
    return repr(table.to_pylist()).encode()


def find_secrets(roots: Iterable[Path], secrets: Iterable[str] = SECRETS) -> list[str]:
    """`path: secret` for every secret found in a regular file under `roots` (symlinks not followed)."""
    wanted = [s.encode() for s in secrets]
    found = []
    for root in roots:
        files = (
            [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        )
        for path in files:
            try:
                if path.stat().st_size > _MAX_BYTES:
                    continue
                data = _parquet_text(path) if path.suffix == ".parquet" else path.read_bytes()
            except OSError:  # a socket, or a file that went away
                continue
            found += [f"{path}: {s.decode()}" for s in wanted if s in data]
    return found


def searched_files(roots: Iterable[Path]) -> int:
    """How many files `find_secrets` looked at (a test asserts the search covered something)."""
    return sum(
        1 if root.is_file() else sum(1 for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        for root in roots
    )
