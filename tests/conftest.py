"""Shared fixtures: the tiny offline Qwen3-VL models are built once per test session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# vLLM on CPU needs a KV-cache size; spawned engine processes read it from the environment.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dense Qwen3-VL (model + tokenizer + processor) in a session temp folder."""
    from editcaption.demo.tiny_models import build_tiny_qwen3vl

    out = tmp_path_factory.mktemp("tiny-qwen3vl")
    build_tiny_qwen3vl(out, seed=0, moe=False)
    return out


@pytest.fixture(scope="session")
def tiny_moe_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3-VL-MoE, same tokenizer and processor."""
    from editcaption.demo.tiny_models import build_tiny_qwen3vl

    out = tmp_path_factory.mktemp("tiny-qwen3vl-moe")
    build_tiny_qwen3vl(out, seed=0, moe=True)
    return out


@pytest.fixture(scope="session")
def tiny_family_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`tiny_family_model("glm4.5v")`: the tiny checkpoint of a production architecture
    (`editcaption.demo.tiny_families.FAMILIES`), built at most once per session."""
    from editcaption.demo.tiny_families import build_tiny_model

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_model(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return built[family]

    return get


@pytest.fixture(scope="session")
def _ray_until_session_end():
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_shared(_ray_until_session_end):
    """One local Ray for every in-process job of the session (a start costs 5-10 s): jobs and commands
    leave a Ray they did not start running (`ray_setup.shutdown_if_started`). A module that needs a Ray
    of its own (other resources, other environment) shuts the shared one down first; the next module
    that asks for this fixture starts it again, and the session's end stops it."""
    from editcaption.ray_setup import init_ray

    init_ray()


@pytest.fixture(scope="session")
def sample_pairs_dir() -> Path:
    """The bundled sample pairs shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "editcaption" / "data" / "sample_pairs"


# The slowest modules first (seconds under `make test` on 2 cores, 7 Dec, with the ci_extra tests out:
# about 480, 420, 380, 310, 290, 265, 260), so that with `-n 2 --dist loadfile` (one module per worker at a
# time; `make test` itself runs serially) none of them starts last and leaves the other worker idle.
SLOWEST_FIRST = [
    "test_train_ray.py",
    "test_synthesis.py",
    "test_ray_cluster.py",
    "test_engines.py",
    "test_production_configs.py",
    "test_eval_job.py",
    "test_quickstart.py",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module keeps its order
