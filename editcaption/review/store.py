"""The review store: users, items, per-annotator assignments and their answers, login sessions and the
audit log, through SQLAlchemy 2.

SQLite (the default) runs in WAL mode with `synchronous=FULL` and a busy timeout, and every write
takes the write lock up front (`BEGIN IMMEDIATE`), so concurrent annotators queue instead of failing
and an acknowledged submission has reached the disk. PostgreSQL (`postgresql+psycopg://…`) serves
teams. An answer lives on its assignment row: a submission is one small UPDATE, and undo puts the row
back in the queue.

Security state lives here too, so that every server process and the admin commands agree: a login
session is a row (the cookie holds a random token, the table its sha256), so logging out or changing a
password ends sessions on the server. The audit log is one append-only table (database triggers refuse
UPDATE and DELETE), each entry also appended as a JSON line to the audit file; failed logins are
counted from it, per account and per client address, to throttle password guessing.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import (
    DDL,
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    make_url,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from editcaption.redaction import redact, redact_text
from editcaption.review.tasks import TASK_KINDS, BadResult, validate_payload, validate_result

_BATCH = 500  # items per insert transaction
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_HASHER = PasswordHasher()
AUDIT_ENV = "EDITCAPTION_REVIEW_AUDIT_LOG"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Item(Base):
    """One thing to review. Images are stored bytes, or paths relative to the server's data folder."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("project", "kind", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(256))
    pair_id: Mapped[str] = mapped_column(String(256))
    source: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    target: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    source_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    target_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Assignment(Base):
    """An item given to one annotator; status pending → done or skipped, with the answer once done."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("item_id", "user_id"),
        Index("ix_assignments_queue", "user_id", "status", "item_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    seq: Mapped[int] = mapped_column(Integer, default=0, doc="Bumped on every answer, skip or undo.")


class Setting(Base):
    __tablename__ = "settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class LoginSession(Base):
    """A logged-in browser: the sha256 of the random token its cookie carries."""

    __tablename__ = "sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """Who did what, from where, to how many rows; rows are only ever inserted (see the triggers)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_target", "action", "target", "at"),
        Index("ix_audit_address", "action", "address", "at"),
        Index("ix_audit_at", "at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    target: Mapped[str | None] = mapped_column(String(256), nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


_APPEND_ONLY = "audit_log is append-only"
for _ddl in (
    f"CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END",
    f"CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END",
):
    event.listen(AuditEntry.__table__, "after_create", DDL(_ddl).execute_if(dialect="sqlite"))
for _ddl in (
    "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END $$",
    "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
):
    event.listen(AuditEntry.__table__, "after_create", DDL(_ddl).execute_if(dialect="postgresql"))


class LoginLimits(BaseModel):
    """Password guessing: `max_failures_per_account` failed logins for one name, or
    `max_failures_per_address` from one client address, within `window_s`, and every further login
    there is refused (429 with `Retry-After`, the password not even checked) until the oldest of those
    failures is `window_s` old. The lock ends on its own; `editcaption review user unlock` lifts it.
    A successful login clears its account's count."""

    model_config = ConfigDict(extra="forbid")

    max_failures_per_account: int = Field(5, ge=1, description="Failed logins for one account name.")
    max_failures_per_address: int = Field(20, ge=1, description="Failed logins from one client address.")
    window_s: float = Field(900.0, gt=0, description="How long a failure counts (and a lock lasts at most).")


class NewItem(BaseModel):
    """An item to import; `key` tells items of the same pair apart (e.g. one judge item per model)."""

    project: str = Field(min_length=1, max_length=128)
    kind: str
    pair_id: str = Field(min_length=1)
    key: str | None = Field(default=None, description="Defaults to the pair id.")
    source: bytes | None = None
    target: bytes | None = None
    source_path: str | None = Field(default=None, description="Relative to the server's --data folder.")
    target_path: str | None = None
    payload: dict[str, Any]

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in TASK_KINDS:
            raise ValueError(f"unknown task kind {kind!r}; kinds: {', '.join(TASK_KINDS)}")
        return kind


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    is_admin: bool


@dataclass(frozen=True)
class LoginBlock:
    """Why a login is refused without checking the password, and for how long."""

    scope: str  # "account" or "address"
    retry_after_s: float


@dataclass(frozen=True)
class TaskView:
    """What a task page needs: the assignment, its item and where its images come from."""

    assignment_id: int
    status: str
    result: dict[str, Any] | None
    item_id: int
    project: str
    kind: str
    pair_id: str
    payload: dict[str, Any]
    has_source_bytes: bool
    has_target_bytes: bool
    source_path: str | None
    target_path: str | None


@dataclass(frozen=True)
class DoneRow:
    """One answered assignment with what the exports need about its item and annotator."""

    assignment_id: int
    item_id: int
    project: str
    kind: str
    pair_id: str
    payload: dict[str, Any]
    annotator: str
    result: dict[str, Any]
    submitted_at: datetime


class StoreError(ValueError):
    """A request the store refuses; the message says why."""


class NotYours(StoreError):
    """The assignment does not exist or belongs to another annotator (the two look the same)."""


def check_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise StoreError(f"user name {name!r} must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return name


class Store:
    """All reads and writes of the review app; one instance per process, safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        hasher: PasswordHasher | None = None,
        audit_file: str | Path | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`hasher` sets the argon2 cost of new passwords (default: argon2-cffi's recommended one);
        verifying always uses the cost stored in each hash. `audit_file` receives every audit entry as
        a JSON line; default: $EDITCAPTION_REVIEW_AUDIT_LOG, else `<name>.audit.jsonl` beside a SQLite
        store's file, else none (the table alone). `clock` (UTC) times audit entries, sessions and
        login windows (tests move it instead of waiting)."""
        self.url = url
        self.clock = clock or _now
        self.hasher = hasher or _HASHER
        self.is_sqlite = url.startswith("sqlite")
        self.engine = _make_engine(url)
        self.audit_file = Path(audit_file) if audit_file else default_audit_file(url)
        self._audit_lock = threading.Lock()
        self._last_added = 0
        try:
            if not create and not inspect(self.engine).has_table(Assignment.__tablename__):
                self.engine.dispose()
                raise StoreError(
                    f"no review store at {redact_text(url)}: create one with `editcaption review user add`"
                )
            Base.metadata.create_all(self.engine)  # also adds tables a store made by an older version lacks
        except OperationalError as exc:  # unreachable server, unknown database, refused login
            self.engine.dispose()
            reason = str(exc.orig or exc).strip().splitlines()[-1]
            raise StoreError(
                f"cannot open the review store at {redact_text(url)}: {redact_text(reason)}"
            ) from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A transaction that holds the write lock from its start (SQLite), committed on exit."""
        with self.engine.connect() as conn:
            conn.execution_options(begin="IMMEDIATE")
            with Session(bind=conn) as session, session.begin():
                yield session

    @contextmanager
    def _write_conn(self) -> Iterator[Connection]:
        """Like `_write`, without the ORM session: for the per-submission path."""
        with self.engine.connect() as conn:
            conn.execution_options(begin="IMMEDIATE")
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine) as session:
            yield session

    # --- settings -------------------------------------------------------------------------------
    def secret(self) -> str:
        """The cookie-signing key, created once per store so every server process on it agrees."""
        with self._read() as s:
            row = s.get(Setting, "secret_key")
            if row is not None:
                return row.value
        with self._write() as s:
            row = s.get(Setting, "secret_key")
            if row is None:
                row = Setting(name="secret_key", value=secrets.token_urlsafe(48))
                s.add(row)
            return row.value

    # --- users ----------------------------------------------------------------------------------
    def add_user(
        self,
        name: str,
        password: str,
        *,
        admin: bool = False,
        replace: bool = False,
        actor: str | None = None,
    ) -> int:
        """Create an account (or reset its password with `replace`, which ends all its sessions);
        passwords are stored as argon2 hashes."""
        check_name(name)
        _check_password(password)
        hashed = self.hasher.hash(password)
        with self._write() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is not None and not replace:
                raise StoreError(f"user {name!r} exists already (use --replace to reset the password)")
            action = "user.add" if user is None else "user.password_reset"
            if user is None:
                user = User(name=name, created_at=_now())
                s.add(user)
            user.password_hash, user.is_admin = hashed, admin
            s.flush()
            s.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
            uid = user.id
        self.record(action, actor=actor, target=name, detail={"admin": admin})
        return uid

    def ensure_user(self, name: str, *, admin: bool = False, actor: str | None = None) -> int:
        """An account with no usable password (it cannot log in) for imported or seeded answers."""
        check_name(name)
        with self._write() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is not None:
                return user.id
            user = User(name=name, password_hash="!", is_admin=admin, created_at=_now())
            s.add(user)
            s.flush()
            uid = user.id
        self.record("user.add", actor=actor, target=name, detail={"admin": admin, "can_log_in": False})
        return uid

    def change_password(self, user_id: int, password: str, *, keep_session: str | None = None) -> None:
        """Set a new password and end every session of the user except `keep_session` (a token)."""
        _check_password(password)
        hashed = self.hasher.hash(password)
        with self._write() as s:
            s.execute(update(User).where(User.id == user_id).values(password_hash=hashed))
            query = delete(LoginSession).where(LoginSession.user_id == user_id)
            if keep_session is not None:
                query = query.where(LoginSession.token_hash != _token_hash(keep_session))
            s.execute(query)

    def authenticate(self, name: str, password: str) -> UserInfo | None:
        """The user if the password matches; None otherwise (unknown names cost a hash too)."""
        with self._read() as s:
            user = s.scalar(select(User).where(User.name == name))
        stored = user.password_hash if user is not None else _dummy_hash()
        try:
            _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return _info(user) if user is not None else None

    # --- sessions -------------------------------------------------------------------------------
    def open_session(self, user_id: int, hours: float, *, replaces: str | None = None) -> str:
        """A new session token for the user (never the one the browser had: no fixation); `replaces`
        (the browser's previous token) ends, and so do every user's expired sessions."""
        token, now = secrets.token_urlsafe(32), self.clock()
        with self._write() as s:
            s.execute(delete(LoginSession).where(LoginSession.expires_at < now))
            if replaces:
                s.execute(delete(LoginSession).where(LoginSession.token_hash == _token_hash(replaces)))
            s.add(
                LoginSession(
                    token_hash=_token_hash(token),
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + timedelta(hours=hours),
                )
            )
        return token

    def session_user(self, token: str) -> UserInfo | None:
        """The user of a live session; None for an unknown, ended or expired token."""
        with self.engine.connect() as conn:
            row = conn.execute(_SESSION_USER, {"token": _token_hash(token), "now": self.clock()}).first()
        return UserInfo(id=row[0], name=row[1], is_admin=row[2]) if row is not None else None

    def close_session(self, token: str) -> None:
        with self._write() as s:
            s.execute(delete(LoginSession).where(LoginSession.token_hash == _token_hash(token)))

    def user(self, user_id: int) -> UserInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(User.id, User.name, User.is_admin).where(User.id == user_id)).first()
        return UserInfo(id=row[0], name=row[1], is_admin=row[2]) if row is not None else None

    def users(self) -> list[UserInfo]:
        with self._read() as s:
            return [_info(u) for u in s.scalars(select(User).order_by(User.name))]

    def user_id(self, name: str) -> int:
        with self._read() as s:
            uid = s.scalar(select(User.id).where(User.name == name))
        if uid is None:
            raise StoreError(f"no user {name!r}; create it with `editcaption review user add {name}`")
        return uid

    # --- audit log and login throttling -----------------------------------------------------------
    def record(
        self,
        action: str,
        *,
        actor: str | None = None,
        target: str | None = None,
        address: str | None = None,
        rows: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append an audit entry (actor defaults to the local account running the command)."""
        entry = {
            "at": self.clock(),
            "action": action,
            "actor": actor or local_actor(),
            "target": target,
            "address": address,
            "rows": rows,
            "detail": redact(detail) if detail else None,
        }
        with self._write_conn() as conn:
            entry["id"] = conn.execute(insert(AuditEntry).returning(AuditEntry.id), entry).scalar_one()
        if self.audit_file is not None:
            line = json.dumps({**entry, "at": entry["at"].isoformat()}, sort_keys=True) + "\n"
            with self._audit_lock, self.audit_file.open("a", encoding="utf-8") as f:
                f.write(line)

    def audit_entries(
        self, since: datetime | None = None, action: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Audit entries in the order they were written, optionally from `since` and of actions
        starting with `action`; with `limit`, the latest ones."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc())
        if since is not None:
            query = query.where(AuditEntry.at >= since.astimezone(UTC))
        if action:
            query = query.where(AuditEntry.action.startswith(action, autoescape=True))
        if limit:
            query = query.limit(limit)
        with self._read() as s:
            entries = [
                {
                    "id": e.id,
                    "at": _aware(e.at),
                    "action": e.action,
                    "actor": e.actor,
                    "target": e.target,
                    "address": e.address,
                    "rows": e.rows,
                    "detail": e.detail,
                }
                for e in s.scalars(query)
            ]
        return entries[::-1]

    def login_block(
        self, name: str, address: str | None, limits: LoginLimits, now: datetime | None = None
    ) -> LoginBlock | None:
        """Whether a login for `name` from `address` is refused unchecked, counted from the audit log:
        failures within the window, after the latest success or unlock of the account (or unlock of
        the address)."""
        now = (now or self.clock()).astimezone(UTC)
        window = timedelta(seconds=limits.window_s)
        scopes = [("account", AuditEntry.target, name, limits.max_failures_per_account, _ACCOUNT_RESETS)]
        if address:
            scopes.append(
                ("address", AuditEntry.address, address, limits.max_failures_per_address, _ADDRESS_RESETS)
            )
        with self.engine.connect() as conn:
            for scope, column, value, limit, resets in scopes:
                reset = conn.scalar(
                    select(func.max(AuditEntry.at)).where(AuditEntry.action.in_(resets), column == value)
                )
                since = max(now - window, _aware(reset)) if reset is not None else now - window
                failures = conn.scalars(
                    select(AuditEntry.at)
                    .where(AuditEntry.action == "login.failure", column == value, AuditEntry.at > since)
                    .order_by(AuditEntry.at.desc())
                    .limit(limit)
                ).all()
                if len(failures) == limit:
                    wait = (_aware(failures[-1]) + window - now).total_seconds()
                    if wait > 0:
                        return LoginBlock(scope, wait)
        return None

    def unlock(self, name: str | None = None, address: str | None = None, actor: str | None = None) -> None:
        """Lift the login lock of an account and/or a client address (an audit entry resets the count)."""
        if name:
            self.record("user.unlock", actor=actor, target=name)
        if address:
            self.record("address.unlock", actor=actor, address=address)

    # --- items and assignments ------------------------------------------------------------------
    def add_items(self, items: Iterable[NewItem]) -> tuple[list[int], int]:
        """(ids of the items, new or already there, in input order; how many were new).

        Importing the same queue twice adds nothing: an item is keyed by (project, kind, key). Items
        are written in batches, each batch one transaction.
        """
        ids, added = [], 0
        batch: list[NewItem] = []
        for new in items:
            batch.append(new)
            if len(batch) == _BATCH:
                ids, added = ids + self._add_batch(batch), added + self._last_added
                batch = []
        if batch:
            ids, added = ids + self._add_batch(batch), added + self._last_added
        return ids, added

    def _add_batch(self, batch: list[NewItem]) -> list[int]:
        rows = []
        for new in batch:
            try:
                payload = validate_payload(new.kind, new.payload)
            except BadResult as exc:
                raise StoreError(f"item {new.pair_id}: {exc}") from None
            row = new.model_dump()
            rows.append({**row, "key": new.key or new.pair_id, "payload": payload, "created_at": _now()})
        keys = {(r["project"], r["kind"], r["key"]) for r in rows}
        with self._write() as s:
            found: dict[tuple[str, str, str], int] = {}
            for project, kind in {(p, k) for p, k, _ in keys}:
                wanted = [key for p, k, key in keys if (p, k) == (project, kind)]
                for item_id, key in s.execute(
                    select(Item.id, Item.key).where(
                        Item.project == project, Item.kind == kind, Item.key.in_(wanted)
                    )
                ):
                    found[(project, kind, key)] = item_id
            fresh, seen = [], set()
            for r in rows:
                k = (r["project"], r["kind"], r["key"])
                if k not in found and k not in seen:
                    fresh.append(r)
                    seen.add(k)
            if fresh:
                for item_id, project, kind, key in s.execute(
                    insert(Item).returning(
                        Item.id, Item.project, Item.kind, Item.key, sort_by_parameter_order=True
                    ),
                    fresh,
                ):
                    found[(project, kind, key)] = item_id
        self._last_added = len(fresh)
        return [found[(r["project"], r["kind"], r["key"])] for r in rows]

    def assign(self, item_ids: Iterable[int], annotators: list[str], k: int) -> int:
        """Give each item to `k` distinct annotators, least-loaded first; returns new assignments.

        Items that already have assignments keep them and get only the missing ones.
        """
        if k < 1 or k > len(annotators):
            raise StoreError(f"--assign {k} needs 1 to {len(annotators)} annotators (got {len(annotators)})")
        uids = [self.user_id(name) for name in dict.fromkeys(annotators)]
        item_ids = list(dict.fromkeys(item_ids))
        created = 0
        with self._write() as s:
            load = dict.fromkeys(uids, 0)
            for uid, count in s.execute(
                select(Assignment.user_id, func.count())
                .where(Assignment.user_id.in_(uids), Assignment.status == "pending")
                .group_by(Assignment.user_id)
            ):
                load[uid] = count
            for start in range(0, len(item_ids), _BATCH):
                chunk = item_ids[start : start + _BATCH]
                have: dict[int, set[int]] = {i: set() for i in chunk}
                for item_id, uid in s.execute(
                    select(Assignment.item_id, Assignment.user_id).where(Assignment.item_id.in_(chunk))
                ):
                    have[item_id].add(uid)
                rows = []
                for item_id in chunk:
                    free = sorted((u for u in uids if u not in have[item_id]), key=lambda u: (load[u], u))
                    for uid in free[: max(0, k - len(have[item_id] & set(uids)))]:
                        rows.append({"item_id": item_id, "user_id": uid, "status": "pending", "seq": 0})
                        load[uid] += 1
                if rows:
                    s.execute(insert(Assignment), rows)
                    created += len(rows)
        return created

    def assign_to(self, item_id: int, user_id: int) -> int:
        """Give one item to one annotator (no-op if already theirs); the assignment id."""
        with self._write() as s:
            found = s.scalar(
                select(Assignment.id).where(Assignment.item_id == item_id, Assignment.user_id == user_id)
            )
            if found is not None:
                return found
            assignment = Assignment(item_id=item_id, user_id=user_id, status="pending", seq=0)
            s.add(assignment)
            s.flush()
            return assignment.id

    def next_assignment(
        self, user_id: int, kind: str | None = None, project: str | None = None
    ) -> int | None:
        """The annotator's first pending assignment (in import order), optionally of one kind/project."""
        query = (
            select(Assignment.id)
            .join(Item, Item.id == Assignment.item_id)
            .where(Assignment.user_id == user_id, Assignment.status == "pending")
            .order_by(Assignment.item_id)
            .limit(1)
        )
        if kind:
            query = query.where(Item.kind == kind)
        if project:
            query = query.where(Item.project == project)
        with self.engine.connect() as conn:
            return conn.scalar(query)

    def task(self, user_id: int, assignment_id: int) -> TaskView:
        """The assignment if it is this annotator's; NotYours otherwise."""
        with self._read() as s:
            row = s.execute(
                select(Assignment, Item)
                .join(Item, Item.id == Assignment.item_id)
                .where(Assignment.id == assignment_id, Assignment.user_id == user_id)
            ).first()
            if row is None:
                raise NotYours(f"no task {assignment_id} assigned to you")
            a, item = row
            return TaskView(
                assignment_id=a.id,
                status=a.status,
                result=a.result,
                item_id=item.id,
                project=item.project,
                kind=item.kind,
                pair_id=item.pair_id,
                payload=item.payload,
                has_source_bytes=item.source is not None,
                has_target_bytes=item.target is not None,
                source_path=item.source_path,
                target_path=item.target_path,
            )

    def image(self, user_id: int, assignment_id: int, which: str) -> tuple[bytes | None, str | None]:
        """(stored bytes, or None and the data-relative path) of one of the annotator's task images."""
        column = {"source": (Item.source, Item.source_path), "target": (Item.target, Item.target_path)}
        if which not in column:
            raise StoreError(f"image must be 'source' or 'target', not {which!r}")
        with self._read() as s:
            row = s.execute(
                select(*column[which])
                .join(Assignment, Assignment.item_id == Item.id)
                .where(Assignment.id == assignment_id, Assignment.user_id == user_id)
            ).first()
        if row is None:
            raise NotYours(f"no task {assignment_id} assigned to you")
        return row[0], row[1]

    def submit(self, user_id: int, assignment_id: int, answer: dict[str, Any]) -> dict[str, Any]:
        """Validate and store an answer (replacing an earlier one); returns it once committed."""
        with self._write_conn() as conn:
            kind = conn.scalar(_KIND_OF_ASSIGNMENT, {"aid": assignment_id, "uid": user_id})
            if kind is None:
                raise NotYours(f"no task {assignment_id} assigned to you")
            result = validate_result(kind, answer)
            conn.execute(_STORE_ANSWER, {"aid": assignment_id, "result": result, "at": _now()})
        return result

    def queue(self, user_id: int, kind: str | None = None) -> list[int]:
        """The annotator's pending assignment ids, in the order `next_assignment` serves them."""
        query = (
            select(Assignment.id)
            .join(Item, Item.id == Assignment.item_id)
            .where(Assignment.user_id == user_id, Assignment.status == "pending")
            .order_by(Assignment.item_id)
        )
        if kind:
            query = query.where(Item.kind == kind)
        with self.engine.connect() as conn:
            return list(conn.scalars(query))

    def skip(self, user_id: int, assignment_id: int) -> None:
        self._set_status(user_id, assignment_id, "skipped")

    def undo(self, user_id: int) -> int | None:
        """Put the annotator's latest answered or skipped assignment back in their queue; its id."""
        with self._write() as s:
            last = s.scalar(
                select(Assignment.id)
                .where(Assignment.user_id == user_id, Assignment.status.in_(("done", "skipped")))
                .order_by(Assignment.submitted_at.desc(), Assignment.id.desc())
                .limit(1)
            )
            if last is not None:
                s.execute(
                    update(Assignment)
                    .where(Assignment.id == last)
                    .values(status="pending", result=None, submitted_at=None, seq=Assignment.seq + 1)
                )
        return last

    def requeue_skipped(self, user_id: int) -> int:
        """Return the annotator's skipped assignments to their queue; how many."""
        with self._write() as s:
            res = s.execute(
                update(Assignment)
                .where(Assignment.user_id == user_id, Assignment.status == "skipped")
                .values(status="pending", submitted_at=None, seq=Assignment.seq + 1)
            )
            return res.rowcount

    def _set_status(self, user_id: int, assignment_id: int, status: str) -> None:
        with self._write() as s:
            res = s.execute(
                update(Assignment)
                .where(Assignment.id == assignment_id, Assignment.user_id == user_id)
                .values(status=status, result=None, submitted_at=_now(), seq=Assignment.seq + 1)
            )
            if res.rowcount != 1:
                raise NotYours(f"no task {assignment_id} assigned to you")

    # --- reporting ------------------------------------------------------------------------------
    def progress(self, user_id: int | None = None) -> list[dict[str, Any]]:
        """Counts of pending/done/skipped per (annotator, project, kind), optionally for one annotator."""
        query = (
            select(User.name, Item.project, Item.kind, Assignment.status, func.count())
            .select_from(Assignment)
            .join(Item, Item.id == Assignment.item_id)
            .join(User, User.id == Assignment.user_id)
            .group_by(User.name, Item.project, Item.kind, Assignment.status)
        )
        if user_id is not None:
            query = query.where(Assignment.user_id == user_id)
        table: dict[tuple[str, str, str], dict[str, Any]] = {}
        with self._read() as s:
            for name, project, kind, status, count in s.execute(query):
                row = table.setdefault(
                    (name, project, kind),
                    {
                        "annotator": name,
                        "project": project,
                        "kind": kind,
                        "pending": 0,
                        "done": 0,
                        "skipped": 0,
                    },
                )
                row[status] = count
        for row in table.values():
            total = row["pending"] + row["done"] + row["skipped"]
            row["total"], row["percent_done"] = total, 100 * row["done"] / total if total else 0.0
        return sorted(table.values(), key=lambda r: (r["project"], r["kind"], r["annotator"]))

    def done(self, kind: str | None = None, project: str | None = None) -> Iterator[DoneRow]:
        """Every answered assignment, ordered by item then annotator, streamed in chunks."""
        query = (
            select(Assignment, Item.project, Item.kind, Item.pair_id, Item.payload, User.name)
            .join(Item, Item.id == Assignment.item_id)
            .join(User, User.id == Assignment.user_id)
            .where(Assignment.status == "done")
            .order_by(Assignment.item_id, User.name)
        )
        if kind:
            query = query.where(Item.kind == kind)
        if project:
            query = query.where(Item.project == project)
        with self._read() as s:
            for a, proj, k, pair_id, payload, name in s.execute(query.execution_options(yield_per=500)):
                yield DoneRow(a.id, a.item_id, proj, k, pair_id, payload, name, a.result, a.submitted_at)

    def item_images(self, item_id: int) -> tuple[bytes | None, bytes | None, str | None, str | None]:
        """(source bytes, target bytes, source path, target path) of an item, for exports."""
        with self._read() as s:
            row = s.execute(
                select(Item.source, Item.target, Item.source_path, Item.target_path).where(Item.id == item_id)
            ).first()
        if row is None:
            raise StoreError(f"no item {item_id}")
        return row[0], row[1], row[2], row[3]

    def items(self, kind: str | None = None, project: str | None = None) -> list[dict[str, Any]]:
        """Item metadata (no image bytes) with their annotators, for Label Studio exports."""
        query = select(Item.id, Item.project, Item.kind, Item.pair_id, Item.payload).order_by(Item.id)
        if kind:
            query = query.where(Item.kind == kind)
        if project:
            query = query.where(Item.project == project)
        with self._read() as s:
            return [
                {"id": i, "project": p, "kind": k, "pair_id": pid, "payload": payload}
                for i, p, k, pid, payload in s.execute(query)
            ]

    def assignment_id(self, item_id: int, user_id: int) -> int | None:
        with self._read() as s:
            return s.scalar(
                select(Assignment.id).where(Assignment.item_id == item_id, Assignment.user_id == user_id)
            )


# The per-submission statements, built once: a submission is one SELECT and one UPDATE.
_KIND_OF_ASSIGNMENT = (
    select(Item.kind)
    .join(Assignment, Assignment.item_id == Item.id)
    .where(Assignment.id == bindparam("aid"), Assignment.user_id == bindparam("uid"))
)
_STORE_ANSWER = (
    update(Assignment)
    .where(Assignment.id == bindparam("aid"))
    .values(
        status="done",
        result=bindparam("result", type_=JSON),
        submitted_at=bindparam("at"),
        seq=Assignment.seq + 1,
    )
)


_SESSION_USER = (
    select(User.id, User.name, User.is_admin)
    .join(LoginSession, LoginSession.user_id == User.id)
    .where(LoginSession.token_hash == bindparam("token"), LoginSession.expires_at > bindparam("now"))
)
_ACCOUNT_RESETS = ("login.success", "user.unlock")
_ADDRESS_RESETS = ("address.unlock",)


def default_audit_file(url: str) -> Path | None:
    """$EDITCAPTION_REVIEW_AUDIT_LOG, else `<name>.audit.jsonl` beside a SQLite file, else None."""
    if os.environ.get(AUDIT_ENV):
        return Path(os.environ[AUDIT_ENV])
    try:
        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        db = Path(parsed.database)
        return db.with_name(f"{db.stem}.audit.jsonl")
    return None


def local_actor() -> str:
    """Who runs an admin command on this machine: `cli:<login name>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise StoreError("a password needs at least 8 characters")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(at: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time we store is UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('begin', 'DEFERRED')}")

        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True)
    raise StoreError(
        f"store URL {redact_text(url)!r}: use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB"
    )


def _info(user: User) -> UserInfo:
    return UserInfo(id=user.id, name=user.name, is_admin=user.is_admin)


def _now() -> datetime:
    return datetime.now(UTC)


@cache
def _dummy_hash() -> str:
    """A hash to verify unknown names against, so a wrong name takes as long as a wrong password."""
    return _HASHER.hash(secrets.token_urlsafe(16))
