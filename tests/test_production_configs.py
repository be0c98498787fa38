"""Each production job config runs end to end on CPU, on tiny checkpoints of its own architectures.

The shipped file is loaded through the configs' override mechanism (`config.set_overrides`, what the
commands' `--set` does) with only these changed: model paths (to `demo/tiny_families.py` checkpoints of
the same architecture class), sizes (replicas, tensor parallelism, context length, batch and token
budgets, pixel budgets, pairs per benchmark), the CPU device with its dtype and eager mode, and where
the data is (input/output folders, benchmark URIs, the human-verdict source, API base URLs). Prompts,
families, chat-template arguments, sampling, EditScore protocol, filters, checks and judge settings
are the shipped ones.

The GLM API and the eval's API judge are paid services: loopback stand-ins (`api_standins.py`) answer
in their documented shapes. The models are random, so what is asserted is the machinery: every pair
accounted for, every candidate and score recorded with its outcome, the API fields sent and read.
One local Ray session serves the whole module.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from api_standins import ANSWER, GLMStandIn, JudgeStandIn, serve_standin
from published_layouts import write_bytemorph_bench, write_hq_edit

from editcaption.config import load_config, set_overrides

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "ray_jobs" / "configs"
N_PAIRS = 3
MAX_PIXELS = 160 * 128
# vLLM on CPU: the device and what it needs, then the sizes of a tiny run.
CPU_VLLM = {
    "device": "cpu",
    "dtype": "float32",
    "enforce_eager": True,
    "tensor_parallel_size": 1,
    "replicas": 1,
    "max_model_len": 2048,
    "max_num_seqs": 16,
    "max_pixels": MAX_PIXELS,
}


def engine_sets(prefix: str, model: Path, **extra: Any) -> list[str]:
    """`--set` items putting the engine at `prefix` on a tiny model on CPU."""
    values = {"model": str(model), **CPU_VLLM, **extra}
    return [f"{prefix}.{key}={json.dumps(value)}" for key, value in values.items()]


def load(name: str, model: type, sets: list[str]) -> Any:
    path = CONFIGS / name
    return load_config(path, model, set_overrides(yaml.safe_load(path.read_text()), sets))


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> Iterator[None]:
    """One local Ray for the module, started with the API keys the configs name in its environment
    (engine actors read them there); the stand-ins accept any key."""
    import ray

    from editcaption.ray_setup import init_ray

    saved = {k: os.environ.get(k) for k in ("GLM_API_KEY", "GEMINI_API_KEY")}
    os.environ.update(GLM_API_KEY="standin-glm-key", GEMINI_API_KEY="standin-judge-key")
    ray.shutdown()  # the session's shared Ray, if running, lacks these keys in its environment
    init_ray()
    yield
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def pairs(sample_pairs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    for pair in sorted(p for p in sample_pairs_dir.iterdir() if p.is_dir())[:N_PAIRS]:
        shutil.copytree(pair, folder / pair.name)
    return folder


def _table(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def _check_synthesis(summary: dict[str, Any], out: Path, candidates_per_pair: int) -> list[dict[str, Any]]:
    """Every pair accounted for, every candidate recorded with an outcome; returns the candidates."""
    assert summary["pairs"] == N_PAIRS
    assert summary["kept"] + summary["filtered"] + summary["quarantined"] == N_PAIRS
    candidates = _table(out / "candidates.parquet")
    assert len(candidates) == summary["candidates"] == candidates_per_pair * N_PAIRS
    assert all(c["outcome"] for c in candidates)
    assert {"report.md", "summary.json", "sft.parquet", "scores.parquet"} <= {p.name for p in out.iterdir()}
    return candidates


@pytest.mark.timeout(1800)  # seconds on an idle machine; a loaded one starts vLLM slowly
def test_synthesis_glm45v_editscore(tmp_path: Path, pairs: Path, tiny_family_model, tiny_model: Path):
    """GLM-4.5V (Glm4vMoe, thinking on as shipped) writes 4 candidates per pair on vLLM; EditScore's
    Qwen3-VL-8B variant (Qwen3-VL) scores them with the upstream protocol on its own vLLM engine."""
    from editcaption.synthesis.config import SynthesisConfig
    from editcaption.synthesis.job import run_synthesis

    glm = tiny_family_model("glm4.5v")
    sets = [
        f"input={pairs}",
        f"output={tmp_path / 'out'}",
        "sampling.max_tokens=24",
        "editscore.max_tokens=24",
        "pairs_per_batch=2",
        *engine_sets("annotator", glm),
        *engine_sets("scorer", tiny_model),
    ]
    config = load("synthesis-glm45v-editscore.yaml", SynthesisConfig, sets)
    assert config.annotator.chat_template_kwargs == {"enable_thinking": True}
    assert config.annotator.model_family().name == "glm-4.5v"
    assert config.scorer.model_family().name == "editscore-qwen3-vl"
    assert config.editscore.prompt == "upstream" and config.candidates_per_pair == 4
    summary = run_synthesis(config)
    candidates = _check_synthesis(summary, tmp_path / "out", 4)
    assert {c["model"] for c in candidates} == {str(glm)}
    # every request answered: text, or a recorded reason why none (engine error, truncated, empty)
    assert all(c["raw_text"] or c["error"] or c["parse_error"] for c in candidates)
    scored = {c["candidate_id"] for c in candidates if c["parsed"]}
    scores = _table(tmp_path / "out" / "scores.parquet")
    assert {s["candidate_id"] for s in scores} == scored
    assert all(s["scorer"] == str(tiny_model) for s in scores)


@pytest.mark.timeout(1800)  # seconds on an idle machine; a loaded one starts vLLM slowly
def test_synthesis_glm_api(tmp_path: Path, pairs: Path, tiny_model: Path):
    """GLM through its API (the stand-in: thinking on, answer boxed, reasoning in reasoning_content);
    EditScore on vLLM. The boxed answer, without box tokens, is every candidate's instruction."""
    from editcaption.synthesis.config import SynthesisConfig
    from editcaption.synthesis.job import run_synthesis

    with serve_standin(GLMStandIn) as url:
        sets = [
            f"input={pairs}",
            f"output={tmp_path / 'out'}",
            f"annotator.base_url={url}",
            "annotator.replicas=1",
            f"annotator.max_pixels={MAX_PIXELS}",
            "editscore.max_tokens=24",
            *engine_sets("scorer", tiny_model),
        ]
        config = load("synthesis-glm-api.yaml", SynthesisConfig, sets)
        summary = run_synthesis(config)
    candidates = _check_synthesis(summary, tmp_path / "out", 3)
    bodies = GLMStandIn.bodies
    assert len(bodies) == 3 * N_PAIRS
    assert all(b["model"] == "glm-4.5v" and b["thinking"] == {"type": "enabled"} for b in bodies)
    assert all(b["max_tokens"] == config.sampling.max_tokens for b in bodies)
    assert [c["instruction"] for c in candidates] == [ANSWER] * len(candidates)
    assert {c["finish_reason"] for c in candidates} == {"stop"}
    scores = _table(tmp_path / "out" / "scores.parquet")
    assert len(scores) == len(candidates) and all(s["scorer"] == str(tiny_model) for s in scores)


@pytest.mark.production_extra  # ray.data.llm's own engine processes: the slowest start, beyond CI's budget
@pytest.mark.timeout(1800)  # seconds on an idle machine; a loaded one starts vLLM slowly
def test_caption_glm45v(tmp_path: Path, pairs: Path, tiny_family_model):
    """GLM-4.5V through `ray.data.llm` (vLLM's own engine processes), 4 candidates per pair."""
    from editcaption.synthesis.caption import CaptionJobConfig, run_caption_job

    glm = tiny_family_model("glm4.5v")
    sets = [
        f"input={pairs}",
        f"output={tmp_path / 'out'}",
        "sampling.max_tokens=24",
        "engine.batch_size=4",
        *engine_sets("engine", glm),
    ]
    config = load("caption-glm45v.yaml", CaptionJobConfig, sets)
    summary = run_caption_job(config)
    assert summary["pairs"] == summary["pairs_captioned"] == N_PAIRS
    candidates = _table(tmp_path / "out" / "candidates")
    assert len(candidates) == summary["candidates"] == 4 * N_PAIRS
    assert {c["model"] for c in candidates} == {str(glm)}
    assert all(c["raw_text"] or c["error"] or c["parse_error"] for c in candidates)


def _samples(sample_pairs_dir: Path) -> list[dict[str, Any]]:
    out = []
    for folder in sorted(p for p in sample_pairs_dir.iterdir() if p.is_dir())[:8]:
        meta = json.loads((folder / "meta.json").read_text())
        source, target = (folder / "source.png").read_bytes(), (folder / "target.png").read_bytes()
        out.append({"id": folder.name, "source": source, "target": target, **meta})
    return out


@pytest.mark.timeout(1800)  # seconds on an idle machine; a loaded one starts vLLM slowly
def test_eval_paper_protocol(tmp_path: Path, pairs: Path, sample_pairs_dir: Path):
    """The paper protocol: three Qwen3-VL captioners on vLLM (one engine serves the three identical
    tiny ones), the API judge (stand-in) with 3 passes and pairwise comparison, flip consistency, on
    Eval-N (a folder), ByteMorph-Bench and HQ-Edit as published (Parquet), with human verdicts.

    The captioners are the committed miniature annotator (a tiny Qwen3-VL trained to write
    instructions): a random-weight model never ends a reply within max_tokens, every caption would be
    `truncated`, and the judge would get nothing to grade."""
    from editcaption.demo.retrain import COMMITTED
    from editcaption.evaluation.job import EvalConfig, evaluate

    annotator = COMMITTED / "annotator"

    samples = _samples(sample_pairs_dir)
    bm = write_bytemorph_bench(tmp_path / "bm-bench", samples)
    hq = write_hq_edit(tmp_path / "hq-edit", samples)
    human = [
        {
            "pair_id": s["id"], "instruction": s["instruction"], "model": "ours-8b-sft", "benchmark": "eval-400",
            "judge": "human:ann", "verdict": "correct", "error_types": [], "overall": None,
        }
        for s in samples[:N_PAIRS]
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(human), tmp_path / "human.parquet")
    with serve_standin(JudgeStandIn) as url:
        sets = [
            f"output={tmp_path / 'out'}",
            f"limit={N_PAIRS}",
            f"benchmarks.0.uri={pairs}",
            f"benchmarks.1.uri={bm}",
            f"benchmarks.2.uri={hq}",
            f"human={json.dumps({'parquet': str(tmp_path / 'human.parquet')})}",
            f"judge.engine.base_url={url}",
            "judge.engine.replicas=1",
            f"judge.engine.max_pixels={MAX_PIXELS}",
            "judge.sampling.max_tokens=256",
            *(item for i in range(3) for item in engine_sets(f"captioners.{i}.engine", annotator)),
            *(f"captioners.{i}.sampling.max_tokens=24" for i in range(3)),
        ]
        config = load("eval-paper-protocol.yaml", EvalConfig, sets)
        assert config.judge.num_pass == 3 and config.judge.pairwise and config.checks.flip_consistency
        metrics = evaluate(config, progress=False)
    meta = metrics["meta"]
    assert meta["pairs_evaluated"] == 3 * N_PAIRS and meta["pairs_quarantined"] == 0
    instructions = _table(tmp_path / "out" / "instructions.parquet")
    assert len(instructions) == 3 * 3 * N_PAIRS
    assert {r["benchmark"] for r in instructions} == {"eval-400", "bytemorph-bench", "hq-edit"}
    categories = {r["category"] for r in instructions if r["benchmark"] == "bytemorph-bench"}
    assert categories and all(c[0].isdigit() and "_" in c for c in categories), "edit_type is the category"
    captioned = [r for r in instructions if r["instruction"]]
    assert captioned, "the miniature annotator's captions parse, so there is something to judge"
    assert JudgeStandIn.bodies and {b["model"] for b in JudgeStandIn.bodies} == {"gemini-2.5-pro"}
    judgments = _table(tmp_path / "out" / "judgments.parquet")
    assert len(judgments) == len(captioned) and all(j["verdict"] for j in judgments)  # 3 passes merged
    assert {"report.md", "report.html", "metrics.json"} <= {p.name for p in (tmp_path / "out").iterdir()}
