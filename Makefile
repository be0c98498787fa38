# Every target that runs code first runs `setup`, so each is one command on a fresh machine.
PY := .venv/bin/python
TINY := .cache/tiny-qwen3vl
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export VLLM_CPU_KVCACHE_SPACE := 1

.PHONY: setup demo miniature test test-extra test-miniature test-production test-cluster test-fast lint format bench screenshots clean

setup:  ## install the CPU stack into .venv (idempotent)
	bash scripts/setup.sh

$(TINY)/config.json: | setup
	.venv/bin/editcaption fixtures build --out $(TINY)

demo: setup  ## Stage 1 synthesis with the committed miniature models, graded against ground truth (runs/demo)
	.venv/bin/editcaption quickstart

miniature: setup  ## the whole paper in the miniature world with the committed models (<= 15 min)
	.venv/bin/editcaption demo --out runs/miniature

# Serial: on 7 Dec's slow 2-core machine the same tests took 32:23 serially and 38:41 on two xdist workers
# (each worker's Ray, vLLM and DeepSpeed processes slowed the other's 2-4x; `-n 2 --dist loadfile` won on faster machines).
test: setup  ## the whole test suite (what CI runs), without the opt-in cluster, production and miniature scenarios
	$(PY) -m pytest -q -ra --durations=25 -m "not production_extra and not miniature_extra and not ci_extra"

test-extra: setup  ## the tests CI leaves out for time whose path another CI test covers (marker ci_extra)
	$(PY) -m pytest -q -ra --durations=0 -m ci_extra

test-miniature: setup  ## the miniature claims on freshly trained models (the demo's seed 0 against the study) and the toy retrain
	$(PY) -m pytest -q -ra --durations=0 tests/test_miniature_demo.py tests/test_miniature_retrain.py

test-production: setup  ## the production configs CI leaves out (Serve with three engines, the GLM-4.5V caption job)
	$(PY) -m pytest -q -ra --durations=0 tests/test_production_configs.py tests/test_production_serve_configs.py

test-cluster: setup  ## only the several-node Ray cluster tests, serially (make test runs them too; docs/cluster.md)
	$(PY) -m pytest -q -ra --durations=0 -m cluster

test-fast: setup  ## skip tests that start vLLM, Ray clusters or servers
	$(PY) -m pytest -q -m "not slow"

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

MINIATURE := editcaption/data/miniature/annotator

bench: setup $(TINY)/config.json  ## every benchmark (engines, synthesis, checks, eval, serve, train, review, cluster) → benchmarks/results/*.json
	$(PY) benchmarks/engines.py --model $(TINY) --out benchmarks/results/engines.json
	# synthesis and eval on the miniature annotator: its replies end where a sentence ends, as captions do
	# (the random tiny model's all run to max_tokens, another load)
	$(PY) benchmarks/synthesis.py --model $(MINIATURE) --out benchmarks/results/synthesis.json
	$(PY) benchmarks/checks.py --model $(TINY) --out benchmarks/results/checks.json
	$(PY) benchmarks/eval.py --model $(MINIATURE) --out benchmarks/results/eval.json
	$(PY) benchmarks/serve.py --model $(TINY) --out benchmarks/results/serve.json
	$(PY) benchmarks/train.py --model $(TINY) --out benchmarks/results/train.json
	$(PY) benchmarks/review.py --out benchmarks/results/review.json
	$(PY) benchmarks/cluster.py --node-loss --out benchmarks/results/cluster.json

screenshots: setup  ## redraw docs/screenshots/ (review app pages) with the browser test
	EDITCAPTION_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/test_review_browser.py

clean:
	rm -rf .cache runs .pytest_cache .ruff_cache
