"""The grouped call on an async engine (`AsyncGroupedCall`) and its engine-time accounting (`BusyClock`).

Pure asyncio with a stand-in predictor (a coroutine that sleeps per request): the scheduling needs no
model. The vLLM async engine itself runs behind this class in the synthesis, eval and engine tests.
"""

from __future__ import annotations

import asyncio
import time

import pyarrow as pa
import pytest

from editcaption.engines import EngineRequest, GroupedStep, VLLMEngineConfig
from editcaption.engines.base import AsyncGroupedCall, BusyClock, EngineResult, result_row
from editcaption.engines.vllm_engine import VLLMEngine


class SleepyPredictor:
    """Answers a request after `seconds[request_id prefix]`; logs when each request starts and ends."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.clock = BusyClock()
        self.log: list[tuple[str, str, float]] = []

    async def answer_timed(self, row: dict) -> tuple[dict, float]:
        entered = self.clock.enter()
        self.log.append(("start", row["request_id"], time.perf_counter()))
        await asyncio.sleep(self.seconds[row["request_id"].split(":")[0]])
        self.log.append(("end", row["request_id"], time.perf_counter()))
        return result_row(row, f"answer to {row['request_id']}"), self.clock.leave(entered)


def _request(request_id: str) -> EngineRequest:
    return EngineRequest(request_id=request_id, images=[], messages=[])


def caption(row: dict) -> list[EngineRequest]:
    return [_request(f"{row['name']}:c{i}") for i in range(2)]


def keep_captions(row: dict, results: list[EngineResult]) -> dict:
    return {**row, "captions": "|".join(r.text for r in results)}


def score(row: dict) -> list[EngineRequest]:
    assert row["captions"]  # round two sees round one's merge
    return [_request(f"{row['name']}:s0")]


def keep_score(row: dict, results: list[EngineResult]) -> dict:
    return {**row, "score": results[0].text}


def _call(seconds: dict[str, float]) -> AsyncGroupedCall:
    steps = [
        GroupedStep(caption, keep_captions, "caption_s", requests_per_row=2),
        GroupedStep(score, keep_score, "score_s"),
    ]
    return AsyncGroupedCall(SleepyPredictor, {"seconds": seconds}, steps)


def test_each_row_starts_its_next_round_without_waiting_for_the_batch() -> None:
    call = _call({"fast": 0.02, "slow": 0.3})
    batch = pa.table({"name": ["slow", "fast"]})
    out = asyncio.run(call(batch)).to_pydict()
    assert out["name"] == ["slow", "fast"]  # rows come back in order
    assert out["captions"] == ["answer to slow:c0|answer to slow:c1", "answer to fast:c0|answer to fast:c1"]
    assert out["score"] == ["answer to slow:s0", "answer to fast:s0"]
    log = call.predictor.log
    fast_scored = next(t for kind, rid, t in log if kind == "start" and rid == "fast:s0")
    slow_captioned = max(t for kind, rid, t in log if kind == "end" and rid.startswith("slow:c"))
    # A synchronous grouped call would score nobody before every caption of the batch is done.
    assert fast_scored < slow_captioned


def test_busy_seconds_add_up_to_the_time_the_engine_had_work() -> None:
    call = _call({"a": 0.1, "b": 0.15})
    out = asyncio.run(call(pa.table({"name": ["a", "b"]}))).to_pydict()
    charged = sum(out["caption_s"]) + sum(out["score_s"])
    # Requests overlapped (two rows, two rounds each): the charges add up to the time the engine had
    # work, not to the summed request durations that per-request timing would report.
    assert charged == pytest.approx(call.predictor.clock.busy_s, rel=1e-9)
    durations = sum(t for kind, _, t in call.predictor.log if kind == "end")
    durations -= sum(t for kind, _, t in call.predictor.log if kind == "start")
    assert charged < durations
    assert all(x > 0 for x in [*out["caption_s"], *out["score_s"]])


def test_busy_clock_shares_time_among_requests_in_flight() -> None:
    now = [0.0]
    clock = BusyClock(now=lambda: now[0])
    first = clock.enter()
    now[0] = 1.0
    second = clock.enter()  # from here on both share the elapsed time
    now[0] = 3.0
    one = clock.leave(first)
    now[0] = 4.0
    two = clock.leave(second)
    now[0] = 9.0  # idle: nobody is charged
    assert (one, two) == (1.0 + 1.0, 1.0 + 1.0)
    assert clock.in_flight == 0 and clock.busy_s == 4.0 == one + two


def test_vllm_batches_are_sized_from_max_num_seqs() -> None:
    engine = VLLMEngine(VLLMEngineConfig(model="/models/x", max_num_seqs=64))
    assert engine.rows_per_batch(3) == 43 and engine.rows_per_batch(1) == 128  # max_num_seqs filled twice
    assert engine.async_predictor() is not None
    sync = VLLMEngine(VLLMEngineConfig(model="/models/x", async_engine=False))
    assert sync.async_predictor() is None


@pytest.mark.slow
def test_in_process_vllm_sends_each_rows_next_round_as_soon_as_its_own_requests_are_answered(tiny_model):
    """The synchronous engine (`async_engine: false`) on the tiny model, in this process: `GroupedCall`
    hands the batch to `VLLMPredictor.answer_rounds`. Row "slow" asks for 48 tokens, the others for 2,
    so the fast rows are scored (round two) before the slow row's caption is back; a request with bad
    image bytes and one longer than the context are answered with their errors and never stall a row;
    a merge that raises leaves the engine empty."""
    import io

    from PIL import Image

    from editcaption.engines import SamplingSettings
    from editcaption.engines.base import GroupedCall
    from editcaption.engines.vllm_engine import VLLMPredictor
    from editcaption.prompts.instruction import instruction_messages

    def png(colour: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), colour).save(buf, format="PNG")
        return buf.getvalue()

    merged: list[str] = []
    tokens = {"slow": 48, "fast1": 2, "fast2": 2, "broken": 2}

    def ask(row: dict, tag: str, max_tokens: int) -> EngineRequest:
        images = (
            [b"not an image", png("blue")]
            if row["name"] == "broken" and tag == "c1"
            else [png("red"), png("blue")]
        )
        messages = instruction_messages()
        if row["name"] == "broken" and tag == "c0":  # the user turn padded past max_model_len
            system, user = messages
            messages = [
                system,
                {**user, "content": [*user["content"], {"type": "text", "text": "word " * 600}]},
            ]
        return EngineRequest(
            request_id=f"{row['name']}:{tag}",
            images=images,
            messages=messages,
            sampling=SamplingSettings(max_tokens=max_tokens, temperature=0.0),
        )

    def caption_requests(row: dict) -> list[EngineRequest]:
        return [ask(row, "c0", tokens[row["name"]]), ask(row, "c1", 2)]

    def keep(row: dict, results: list[EngineResult]) -> dict:
        merged.append(f"{row['name']}:caption")
        return {**row, "errors": "|".join(r.error or "" for r in results), "n": results[0].num_output_tokens}

    def score_requests(row: dict) -> list[EngineRequest]:
        assert row["errors"] is not None  # round two sees round one's merge
        return [ask(row, "s0", 2)]

    def keep_score(row: dict, results: list[EngineResult]) -> dict:
        merged.append(f"{row['name']}:score")
        return {**row, "score": results[0].text}

    config = VLLMEngineConfig(
        model=str(tiny_model), device="cpu", dtype="float32", enforce_eager=True, async_engine=False,
        max_model_len=512, max_num_seqs=8, max_pixels=64 * 64,
    )  # fmt: skip
    steps = [
        GroupedStep(caption_requests, keep, "caption_s", requests_per_row=2),
        GroupedStep(score_requests, keep_score, "score_s"),
    ]
    call = GroupedCall(VLLMPredictor, {"config": config}, steps)

    def fails(row: dict, results: list[EngineResult]) -> dict:
        raise RuntimeError("a merge that fails")

    try:
        started = time.perf_counter()
        out = call(pa.table({"name": ["slow", "fast1", "fast2", "broken"]})).to_pydict()
        wall = time.perf_counter() - started
        # A merge that raises leaves nothing running in the engine for the next batch to trip over.
        with pytest.raises(RuntimeError, match="a merge that fails"):
            call.predictor.answer_rounds(
                [{"name": "slow"}, {"name": "fast1"}], [GroupedStep(caption_requests, fails)]
            )
        assert not call.predictor.llm.llm_engine.has_unfinished_requests()
    finally:
        call.predictor.close()
    assert out["name"] == ["slow", "fast1", "fast2", "broken"]  # rows come back in order
    assert merged.index("fast1:score") < merged.index("slow:caption")
    assert merged.index("fast2:score") < merged.index("slow:caption")
    assert out["n"][0] == 48 and out["errors"][:3] == ["|", "|", "|"]
    broken_long, broken_image = out["errors"][3].split("|")
    assert broken_long.startswith("rejected by the engine") and "maximum context length" in broken_long
    assert broken_image.startswith("bad request")
    assert all(s is not None for s in out["score"])
    charged = sum(out["caption_s"]) + sum(out["score_s"])
    assert all(s > 0 for s in out["caption_s"][:3]) and 0 < charged <= wall
