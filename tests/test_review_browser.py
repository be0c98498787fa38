"""The review app driven in headless Chromium (Playwright, Debian's chromium binary).

An annotator logs in and answers three refine, three prefer and three judge tasks, mostly with the
keyboard shortcuts (and skip, undo, zoom, overlay); an admin then downloads the exports from the
admin page, and the files must hold exactly those answers. Screenshots of each page are taken on
every run (into the test's temp folder); `EDITCAPTION_SCREENSHOTS=docs/screenshots` (`make screenshots`)
writes them where the docs show them, so a plain test run leaves the tracked files alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from review_servers import running_app, write_review_queue

from editcaption.review.app import ReviewAppConfig
from editcaption.review.importers import import_tasks
from editcaption.review.store import Store

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAIRS = 3


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("review-browser")
    store = f"sqlite:///{root / 'review.db'}"
    run = root / "runs" / "demo"
    write_review_queue(run / "review_queue.parquet", PAIRS, size=(512, 320))
    with Store(store) as s:
        s.add_user("alice", "alice-password")
        s.add_user("root", "root-password", admin=True)
        for kind in ("refine", "prefer", "judge"):
            import_tasks(s, run, kind, project="demo", annotators=["alice"])
    with running_app(ReviewAppConfig(store=store)) as base:
        yield {"store": store, "base": base}


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("EDITCAPTION_SCREENSHOTS")
    return Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def _login(page: Page, base: str, name: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Your queue")


def _shot(page: Page, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _task_id(page: Page) -> int:
    return int(page.locator("form#answer").get_attribute("action").rsplit("/", 1)[1])


@pytest.mark.slow
def test_annotate_with_keyboard_and_export(
    site: dict, browser: Browser, screenshots: Path, tmp_path: Path
) -> None:
    base = site["base"]
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("input[name=name]", "alice")
    page.fill("input[name=password]", "wrong-password")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("Wrong name or password")
    _shot(page, screenshots, "login")
    _login(page, base, "alice", "alice-password")

    # --- refine: edit + tick with keys, reject with a key, skip, undo, accept with Ctrl+Enter while typing
    page.click("#next-refine")
    expect(page.locator("textarea#instruction")).to_have_value("Move the square 1 steps to the right.")
    expect(page.locator("#img-source")).to_have_js_property("complete", True)
    assert page.locator("#img-source").evaluate("img => img.naturalWidth") == 512  # full resolution
    page.keyboard.press("+")
    expect(page.locator("#zoom-level")).to_have_text("125%")
    page.keyboard.press("0")
    expect(page.locator("#zoom-level")).to_have_text("100%")
    page.keyboard.press("t")
    expect(page.locator(".overlay")).to_be_visible()
    expect(page.locator(".panes")).to_be_hidden()
    page.keyboard.press("]")
    expect(page.locator("#overlay-target")).to_have_css("opacity", "0.6")
    _shot(page, screenshots, "refine-overlay")
    page.keyboard.press("t")
    expect(page.locator(".panes")).to_be_visible()
    _shot(page, screenshots, "refine")
    first_refine = _task_id(page)
    page.keyboard.press("i")
    expect(page.locator("textarea#instruction")).to_be_focused()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("Move the square to the viewer's right.")
    page.keyboard.press("Escape")
    page.keyboard.press("q")  # ticks "orientation" fixed
    expect(page.locator("input[name=fixed][value=orientation]")).to_be_checked()
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: f"/task/{first_refine}" not in url and "/task/" in url)
    second_refine = _task_id(page)
    page.keyboard.press("n")  # reject the second pair
    page.wait_for_url(lambda url: f"/task/{second_refine}" not in url and "/task/" in url)
    third_refine = _task_id(page)
    page.keyboard.press("s")  # skip the third
    expect(page.locator(".message")).to_contain_text("Nothing left")
    page.keyboard.press("u")  # undo the skip: back on the third
    page.wait_for_url(f"**/task/{third_refine}")
    page.click("textarea#instruction")
    page.keyboard.press("End")
    page.keyboard.type(" Keep the background.")
    page.keyboard.press("Control+Enter")
    expect(page.locator(".message")).to_contain_text("Nothing left")

    # --- prefer: all by keyboard, one by mouse
    page.click("#next-prefer")
    _shot(page, screenshots, "prefer")
    prefer_ids = []
    for choose, error, severity in (("b", "q", "c"), ("a", "w", "z"), ("a", "e", "x")):
        prefer_ids.append(_task_id(page))
        if choose == "a" and error == "w":  # the mouse works too
            page.click("input[name=chosen][value=a]")
            page.click("input[name=error_type][value=viewpoint]")
            page.click("input[name=severity][value=minor]")
            page.click("button#submit")
        else:
            for key in (choose, error, severity, "Enter"):
                page.keyboard.press(key)
        page.wait_for_url(lambda url, last=prefer_ids[-1]: f"/task/{last}" not in url)
    expect(page.locator(".message")).to_contain_text("Nothing left")

    # --- judge: a missing error type is refused by the server with the reason
    page.click("#next-judge")
    _shot(page, screenshots, "judge")
    judge_ids = [_task_id(page)]
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: f"/task/{judge_ids[0]}" not in url)
    judge_ids.append(_task_id(page))
    page.keyboard.press("3")
    page.keyboard.press("Enter")
    expect(page.locator(".reason")).to_contain_text("needs at least one error type")
    page.go_back()
    page.keyboard.press("3")
    page.keyboard.press("q")
    page.keyboard.press("w")
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: f"/task/{judge_ids[1]}" not in url)
    judge_ids.append(_task_id(page))
    for key in ("2", "e", "Enter"):
        page.keyboard.press(key)
    expect(page.locator(".message")).to_contain_text("Nothing left")
    _shot(page, screenshots, "home")

    # --- admin downloads the exports
    page.click("text=Log out")
    _login(page, base, "root", "root-password")
    page.goto(f"{base}/admin")
    expect(page.locator("table.progress")).to_contain_text("alice")
    _shot(page, screenshots, "admin")
    files = {}
    for kind, fmt in (("sft", "parquet"), ("preference", "parquet"), ("judgment", "jsonl")):
        with page.expect_download() as info:
            page.click(f"#export-{kind}-{fmt}")
        files[kind] = tmp_path / f"{kind}.{fmt}"
        info.value.save_as(files[kind])
    context.close()

    texts = [
        m["content"][-1]["text"]
        for row in pq.read_table(files["sft"]).to_pylist()
        for m in row["messages"]
        if m["role"] == "assistant"
    ]
    assert texts == [
        "Move the square to the viewer's right.",
        "Move the square 3 steps to the right. Keep the background.",
    ]

    with Store(site["store"]) as store:
        alice = store.user_id("alice")
        payloads = [store.task(alice, aid).payload for aid in prefer_ids]
    prefs = {r["pair_id"]: r for r in pq.read_table(files["preference"]).to_pylist()}
    assert len(prefs) == PAIRS
    for n, (choose, error, severity) in enumerate(
        (("b", "orientation", "critical"), ("a", "viewpoint", "minor"), ("a", "attribute", "major"))
    ):
        row = prefs[f"pair-{n:05d}"]
        other = "a" if choose == "b" else "b"
        assert row["chosen"] == payloads[n][f"instruction_{choose}"]
        assert row["rejected"] == payloads[n][f"instruction_{other}"]
        assert (row["error_type"], row["severity"], row["annotators"]) == (error, severity, ["alice"])

    verdicts = [json.loads(line) for line in files["judgment"].read_text().splitlines()]
    assert [(v["pair_id"], v["verdict"], v["error_types"], v["judge"]) for v in verdicts] == [
        ("pair-00000", "correct", [], "human:alice"),
        ("pair-00001", "critical_error", ["orientation", "viewpoint"], "human:alice"),
        ("pair-00002", "minor_error", ["attribute"], "human:alice"),
    ]
