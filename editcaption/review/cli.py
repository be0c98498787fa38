"""`editcaption review …`: serve the app, manage accounts, import tasks, export answers, show statistics
and the audit log."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Human review web app: refine, prefer and judge tasks.", no_args_is_help=True)
user_app = typer.Typer(help="Annotator and admin accounts.", no_args_is_help=True)
ls_app = typer.Typer(help="Round trip with Label Studio (labeling config, tasks, annotation exports).")
app.add_typer(user_app, name="user")
app.add_typer(ls_app, name="labelstudio")

PASSWORD_ENV = "EDITCAPTION_REVIEW_PASSWORD"
DEFAULT_STORE = "sqlite:///review.db"

StoreOpt = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="EDITCAPTION_REVIEW_STORE",
        help="Store URL: sqlite:///PATH (WAL mode) or postgresql+psycopg://USER@HOST:PORT/DB.",
    ),
]
KindOpt = Annotated[str, typer.Option("--kind", help="Task kind: refine, prefer or judge.")]
ProjectOpt = Annotated[str | None, typer.Option("--project", help="Only this project (default: all).")]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Folder whose images may be served/read; nothing outside it is ever served."),
]


def _fail(message: str) -> None:
    from editcaption.redaction import redact_text

    typer.echo(f"error: {redact_text(message)}", err=True)
    raise typer.Exit(2)


@app.command("serve")
def serve(
    store: StoreOpt = DEFAULT_STORE,
    data: DataOpt = None,
    host: Annotated[
        str, typer.Option(help="Interface to listen on (0.0.0.0 for a team network).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    secure_cookies: Annotated[bool, typer.Option(help="HTTPS-only cookies; set when behind TLS.")] = False,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="CIDR of a reverse proxy whose X-Forwarded-For is believed (repeat for several); "
            "without one the TCP peer is the client.",
        ),
    ] = None,
    max_failures_per_account: Annotated[
        int, typer.Option(help="Failed logins for one account within the window before it is locked.")
    ] = 5,
    max_failures_per_address: Annotated[
        int, typer.Option(help="Failed logins from one client address within the window before it is locked.")
    ] = 20,
    login_window_s: Annotated[
        float, typer.Option(help="Seconds a failed login counts; a lock ends at most this long after.")
    ] = 900.0,
) -> None:
    """Start the review web app."""
    import uvicorn
    from pydantic import ValidationError

    from editcaption.review.app import ReviewAppConfig, create_app
    from editcaption.review.store import LoginLimits, StoreError

    if data is not None and not data.is_dir():
        _fail(f"--data {data} is not a folder")
    try:
        config = ReviewAppConfig(
            store=store,
            data=data,
            secure_cookies=secure_cookies,
            trusted_proxies=trusted_proxy or [],
            login_limits=LoginLimits(
                max_failures_per_account=max_failures_per_account,
                max_failures_per_address=max_failures_per_address,
                window_s=login_window_s,
            ),
        )
        application = create_app(config)
    except (ValidationError, StoreError) as exc:
        _fail(str(exc))
    # Client addresses come from --trusted-proxy alone: uvicorn must not rewrite them from the header.
    uvicorn.run(application, host=host, port=port, log_level="info", proxy_headers=False)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="Login name: letters, digits, '.', '_' or '-'.")],
    store: StoreOpt = DEFAULT_STORE,
    admin: Annotated[bool, typer.Option("--admin", help="May see the admin pages and export.")] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Reset the password of an existing account.")
    ] = False,
) -> None:
    """Create an account. The password comes from stdin, $EDITCAPTION_REVIEW_PASSWORD or a prompt, never argv."""
    from editcaption.review.store import Store, StoreError

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with Store(store) as s:
            s.add_user(name, password, admin=admin, replace=replace)
    except StoreError as exc:
        _fail(str(exc))
    ended = " (its sessions have ended)" if replace else ""
    typer.echo(f"{'admin' if admin else 'annotator'} {name} ready{ended}")


@user_app.command("unlock")
def user_unlock(
    name: Annotated[str | None, typer.Argument(help="Account whose failed logins are forgotten.")] = None,
    store: StoreOpt = DEFAULT_STORE,
    address: Annotated[
        str | None, typer.Option("--address", help="Also (or only) lift the lock of this client address.")
    ] = None,
) -> None:
    """Lift a login lock before it ends on its own (failed logins before now stop counting)."""
    from editcaption.review.store import Store, StoreError, check_name

    if not name and not address:
        _fail("name an account, or give --address")
    try:
        if name:
            check_name(name)
        with Store(store, create=False) as s:
            s.unlock(name, address)
    except StoreError as exc:
        _fail(str(exc))
    typer.echo(f"unlocked {' and '.join(x for x in (name, address and f'address {address}') if x)}")


@user_app.command("list")
def user_list(store: StoreOpt = DEFAULT_STORE) -> None:
    """List accounts."""
    from editcaption.review.store import Store

    with Store(store) as s:
        for u in s.users():
            typer.echo(f"{u.name}{' (admin)' if u.is_admin else ''}")


@app.command("import")
def import_cmd(
    source: Annotated[
        Path,
        typer.Option(
            "--from",
            help="A synthesis output folder, its review_queue.parquet, or a pair dataset (any editcaption layout).",
        ),
    ],
    kind: KindOpt,
    store: StoreOpt = DEFAULT_STORE,
    assign: Annotated[int, typer.Option("--assign", help="Annotators per item (k).")] = 1,
    annotators: Annotated[
        str | None, typer.Option(help="Comma-separated accounts to assign to (default: every non-admin).")
    ] = None,
    project: Annotated[
        str | None, typer.Option(help="Project name (default: the source's folder name).")
    ] = None,
    benchmark: Annotated[
        str | None, typer.Option(help="Judge tasks: benchmark name (default: dataset or project).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Judge tasks from a pair dataset: who wrote its instructions.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Pair datasets: keep paths (not bytes) for images inside this served folder."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Import at most this many items.")] = None,
) -> None:
    """Import tasks and assign each to k annotators (importing the same items again adds nothing)."""
    from editcaption.ray_setup import shutdown_if_started
    from editcaption.review.importers import import_tasks
    from editcaption.review.store import Store, StoreError

    if not source.exists():
        _fail(f"--from {source} does not exist")
    name = project or (source.parent.name if source.is_file() else source.resolve().name)
    try:
        with Store(store) as s, shutdown_if_started():
            people = (
                [a.strip() for a in annotators.split(",") if a.strip()]
                if annotators
                else [u.name for u in s.users() if not u.is_admin]
            )
            summary = import_tasks(
                s,
                source,
                kind,
                project=name,
                annotators=people,
                assign=assign,
                benchmark=benchmark,
                model=model,
                data_dir=data,
                limit=limit,
            )
    except (StoreError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(
        f"project {name}: {summary.items} {kind} items ({summary.new_items} new), "
        f"{summary.assignments} new assignments; skipped {dict(summary.skipped) or 'none'}"
    )


@app.command("export")
def export_cmd(
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="sft (refined, TRL format), preference or judgment (human verdicts: the Parquet file "
            "`editcaption eval` reads as `human: {parquet: FILE}`).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output file, .parquet or .jsonl.")],
    store: StoreOpt = DEFAULT_STORE,
    data: DataOpt = None,
    project: ProjectOpt = None,
) -> None:
    """Write the answers as contract records (SFTRecord/TRL, PreferencePair, Judgment): the files the
    training and eval stages read."""
    from editcaption.review.exports import export

    try:
        summary = export(store, kind, out, data_dir=data, project=project)  # type: ignore[arg-type]
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"{summary.rows} {kind} rows → {summary.path}; left out {summary.skipped or 'none'}")


@app.command("audit")
def audit_cmd(
    store: StoreOpt = DEFAULT_STORE,
    since: Annotated[
        str | None,
        typer.Option(
            help="From this time: ISO 8601 (UTC unless it says otherwise) or an age like 30m, 12h, 7d."
        ),
    ] = None,
    action: Annotated[
        str | None, typer.Option(help="Only actions starting with this (e.g. login, user., export).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the latest N entries.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of a table.")
    ] = False,
) -> None:
    """The audit log: logins (with the client address), account administration, imports and exports."""
    from rich.console import Console
    from rich.table import Table

    from editcaption.review.store import Store, StoreError

    try:
        start = parse_since(since) if since else None
        with Store(store, create=False) as s:
            entries = s.audit_entries(start, action, limit)
    except (StoreError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        for e in entries:
            typer.echo(json.dumps({**e, "at": e["at"].isoformat()}, sort_keys=True))
        return
    table = Table("at (UTC)", "action", "actor", "target", "address", "rows", "detail", title="Audit log")
    for e in entries:
        table.add_row(
            e["at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            e["action"],
            e["actor"] or "",
            e["target"] or "",
            e["address"] or "",
            "" if e["rows"] is None else str(e["rows"]),
            json.dumps(e["detail"], sort_keys=True) if e["detail"] else "",
        )
    Console(width=max(160, Console().width)).print(table)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO 8601 time (naive means UTC) or an age: a number and s, m, h or d."""
    age = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if age:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[age[2]]
        return (now or datetime.now(UTC)) - timedelta(**{unit: float(age[1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: give an ISO 8601 time or an age like 30m, 12h, 7d") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@app.command("stats")
def stats_cmd(
    store: StoreOpt = DEFAULT_STORE,
    project: ProjectOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full statistics as JSON.")] = False,
) -> None:
    """Progress, agreement (percent, Fleiss' and Cohen's kappa) and human-eval rates by model and benchmark."""
    from rich.console import Console
    from rich.table import Table

    from editcaption.review.stats import review_stats
    from editcaption.review.store import Store, StoreError

    try:
        with Store(store, create=False) as s:
            stats = review_stats(s, project)
    except StoreError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(stats, indent=2, default=str))
        return
    console = Console()
    progress = Table("annotator", "project", "kind", "done", "skipped", "pending", "% done", title="Progress")
    for r in stats["progress"]:
        progress.add_row(
            r["annotator"],
            r["project"],
            r["kind"],
            *(str(r[k]) for k in ("done", "skipped", "pending")),
            f"{r['percent_done']:.0f}",
        )
    console.print(progress)
    agree = Table("kind", "label", "items 2+", "% agreement", "Fleiss κ", "Cohen κ", title="Agreement")
    for kind, a in stats["agreement"].items():
        cohen = ", ".join(f"{'-'.join(c['annotators'])}: {_num(c['kappa'])}" for c in a["cohen_kappa"])
        pct = _num(100 * a["percent_agreement"], 1) if a["percent_agreement"] is not None else "–"
        agree.add_row(
            kind, a["label"], str(a["items_with_2plus"]), pct, _num(a["fleiss_kappa"]), cohen or "–"
        )
    console.print(agree)
    rates = Table("group", "n", "correct %", "minor error %", "critical error %", title="Human evaluation")
    for label in ("by_model", "by_benchmark"):
        for name, r in stats["human_eval"][label].items():
            p = r["percent"]
            rates.add_row(
                f"{label[3:]}: {name}",
                str(r["n"]),
                _num(p["correct"], 1),
                _num(p["minor_error"], 1),
                _num(p["critical_error"], 1),
            )
    console.print(rates)


@ls_app.command("export")
def labelstudio_export(
    kind: KindOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for config.xml and tasks.json.")],
    store: StoreOpt = DEFAULT_STORE,
    project: ProjectOpt = None,
    data: DataOpt = None,
) -> None:
    """Write a Label Studio labeling config (XML) and task JSON (images inline as data URIs)."""
    from editcaption.review.labelstudio import export_labelstudio
    from editcaption.review.store import Store

    try:
        with Store(store, create=False) as s:
            n = export_labelstudio(s, kind, out, project=project, data_dir=data)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"{n} {kind} tasks → {out}/tasks.json; labeling config → {out}/config.xml")


@ls_app.command("import")
def labelstudio_import(
    source: Annotated[Path, typer.Option("--from", help="Label Studio JSON export of annotated tasks.")],
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Store Label Studio annotations as answers (annotators are matched or created by e-mail name)."""
    from editcaption.review.labelstudio import import_labelstudio
    from editcaption.review.store import Store

    try:
        with Store(store, create=False) as s:
            summary = import_labelstudio(s, source)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"stored {summary['stored']} annotations; skipped {summary['skipped'] or 'none'}")


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
