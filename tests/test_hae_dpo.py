"""HAE-DPO objective: the pure margin, equality with TRL's sigmoid DPO at zero weights, margin effects,
gradients, per-error-type metrics and a short real `train()` on the tiny Qwen3-VL.

Rows are the DPO job's own (`training.data.preference_rows`: the instruction prompt, source and
target images) for the bundled sample pairs with rule-written hard negatives
(`checks.hard_negatives`), so every rejected instruction carries a real error type and severity.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen3VLForConditionalGeneration
from trl import DPOConfig, DPOTrainer

from editcaption.checks.hard_negatives import hard_negatives
from editcaption.schema import ERROR_TYPES, SEVERITIES
from editcaption.training.data import DPO_FEATURES, preference_rows
from editcaption.training.hae_dpo import (
    HAEDPOConfig,
    HAEDPOTrainer,
    HAEPreferenceCollator,
    hae_margin,
    reference_hardness,
)

ZERO = {
    "severity_margins": {},
    "type_margins": {},
    "hardness_weight": 0.0,
}


def half_size_png(path: Path) -> bytes:
    """The image at half its size (a quarter of the image tokens keeps the tests fast)."""
    image = Image.open(path)
    out = io.BytesIO()
    image.resize((image.width // 2, image.height // 2)).save(out, format="PNG")
    return out.getvalue()


def labelled_pairs(sample_pairs_dir: Path, per_type: int = 2) -> Dataset:
    """The DPO job's rows (`training.data`): sample pairs + hard negatives, `per_type` per error type."""
    pairs, counts = [], {}
    for folder in sorted(sample_pairs_dir.iterdir()):
        meta = json.loads((folder / "meta.json").read_text())
        source, target = half_size_png(folder / "source.png"), half_size_png(folder / "target.png")
        for neg in hard_negatives(folder.name, source, target, meta["instruction"]):
            if counts.get(neg["error_type"], 0) < per_type:
                counts[neg["error_type"]] = counts.get(neg["error_type"], 0) + 1
                pairs.append(neg)
    return Dataset.from_list(list(preference_rows(pairs)), features=DPO_FEATURES)


def dpo_args(cls: type, out: Path, **kwargs) -> DPOConfig:
    base = dict(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        max_length=None,
        per_device_train_batch_size=4,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        beta=0.1,
        seed=0,
    )
    return cls(**{**base, **kwargs})


@pytest.fixture(scope="module")
def world(tiny_model: Path, sample_pairs_dir: Path) -> dict:
    """Processor, the labelled dataset, a reference model and a policy nudged away from it (so Δ ≠ 0)."""
    processor = AutoProcessor.from_pretrained(tiny_model)
    dataset = labelled_pairs(sample_pairs_dir)
    assert set(dataset["error_type"]) >= {"orientation", "viewpoint", "attribute"}
    ref = Qwen3VLForConditionalGeneration.from_pretrained(tiny_model, dtype=torch.float32)
    policy = Qwen3VLForConditionalGeneration.from_pretrained(tiny_model, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator))
    return {"processor": processor, "dataset": dataset, "ref": ref, "policy": policy}


def hae_trainer(world: dict, tmp_path: Path, **kwargs) -> HAEDPOTrainer:
    return HAEDPOTrainer(
        model=world["policy"],
        ref_model=world["ref"],
        args=dpo_args(HAEDPOConfig, tmp_path / "hae", **kwargs),
        train_dataset=world["dataset"],
        processing_class=world["processor"],
    )


def first_batch(trainer: HAEDPOTrainer) -> dict:
    return next(iter(trainer.get_train_dataloader()))


def test_margin_on_hand_computed_numbers() -> None:
    """m = min(cap, w_sev[s] + w_type[t] + λ·softplus(ℓr − ℓc)), unlabelled pairs get no label term."""
    hardness = reference_hardness(
        ref_chosen_logps=torch.tensor([-10.0, -20.0, -6.0]),
        ref_rejected_logps=torch.tensor([-20.0, -10.0, -6.0]),
        chosen_lengths=torch.tensor([5, 5, 3]),
        rejected_lengths=torch.tensor([5, 5, 2]),
    )
    # per token: (-4 - -2) = -2, (-2 - -4) = +2, (-3 - -2) = -1
    expected_h = torch.tensor([math.log1p(math.exp(-2)), math.log1p(math.exp(2)), math.log1p(math.exp(-1))])
    torch.testing.assert_close(hardness, expected_h)
    summed = reference_hardness(
        torch.tensor([-6.0]),
        torch.tensor([-6.0]),
        torch.tensor([3]),
        torch.tensor([2]),
        length_normalized=False,
    )
    torch.testing.assert_close(summed, torch.tensor([math.log(2.0)]))

    margin = hae_margin(
        severity_ids=torch.tensor([0, 2, -1]),
        type_ids=torch.tensor([0, 2, -1]),
        hardness=expected_h,
        severity_weights=torch.tensor([0.25, 0.5, 1.0]),
        type_weights=torch.tensor([0.5, 0.5, 0.25, 0.0]),
        hardness_weight=0.5,
        margin_cap=1.5,
    )
    torch.testing.assert_close(
        margin,
        torch.tensor(
            [
                0.25 + 0.5 + 0.5 * expected_h[0].item(),  # minor orientation, easy pair: 0.813
                1.5,  # critical attribute + hard pair: 1.0 + 0.25 + 0.5 * 2.127 = 2.31 → cap
                0.5 * expected_h[2].item(),  # unlabelled: hardness only
            ]
        ),
    )


def test_margins_ordered_by_severity_type_and_hardness() -> None:
    weights = dict(
        severity_weights=torch.tensor([0.25, 0.5, 1.0]),
        type_weights=torch.tensor([0.5, 0.4, 0.25, 0.0]),
        hardness_weight=0.5,
        margin_cap=10.0,
    )
    zeros = torch.zeros(3)
    by_severity = hae_margin(torch.tensor([0, 1, 2]), torch.tensor([3, 3, 3]), zeros, **weights)
    assert by_severity[0] < by_severity[1] < by_severity[2]
    by_type = hae_margin(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 2, 3]), torch.zeros(4), **weights)
    assert by_type.tolist() == sorted(by_type.tolist(), reverse=True) and len(set(by_type.tolist())) == 4
    gaps = torch.tensor([-3.0, 0.0, 3.0])  # ℓ_ref(rejected) − ℓ_ref(chosen): π_ref more and more wrong
    hardness = reference_hardness(torch.zeros(3), gaps, torch.ones(3), torch.ones(3))
    by_hardness = hae_margin(
        torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), hardness, **weights
    )
    assert by_hardness[0] < by_hardness[1] < by_hardness[2]


def test_config_validates_and_parses(tmp_path: Path) -> None:
    parsed = HAEDPOConfig(
        output_dir=str(tmp_path), use_cpu=True, severity_margins='{"critical": 2}', type_margins={}
    )
    assert parsed.severity_margins == {"minor": 0.0, "major": 0.0, "critical": 2.0}
    assert parsed.type_margins == dict.fromkeys(ERROR_TYPES, 0.0) and parsed.uses_margin
    with pytest.raises(ValueError, match="unknown keys \\['fatal'\\]"):
        HAEDPOConfig(output_dir=str(tmp_path), use_cpu=True, severity_margins={"fatal": 1.0})
    with pytest.raises(ValueError, match="hardness_weight must be >= 0"):
        HAEDPOConfig(output_dir=str(tmp_path), use_cpu=True, hardness_weight=-1.0)
    with pytest.raises(ValueError, match="margins are defined for loss_type"):
        HAEDPOConfig(output_dir=str(tmp_path), use_cpu=True, loss_type="hinge")
    with pytest.raises(ValueError, match="margins are defined for loss_type"):
        HAEDPOConfig(
            output_dir=str(tmp_path), use_cpu=True, loss_type="sigmoid", f_divergence_type="js_divergence"
        )
    rpo = HAEDPOConfig(
        output_dir=str(tmp_path), use_cpu=True, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.2]
    )
    assert rpo.uses_margin
    plain = HAEDPOConfig(output_dir=str(tmp_path), use_cpu=True, loss_type="hinge", **ZERO)
    assert not plain.uses_margin and not plain.needs_labels
    assert set(SEVERITIES) == set(parsed.severity_margins)
    # TrainingArguments.to_dict masks fields named *_token as secrets; ours must stay readable in logs.
    assert parsed.to_dict()["hardness_length_normalized"] is True
    with pytest.raises(ValueError, match="not a JSON object"):
        HAEDPOConfig(output_dir=str(tmp_path), use_cpu=True, type_margins="orientation=1")


def test_collator_rejects_bad_and_missing_labels(world: dict) -> None:
    calls = []
    collator = HAEPreferenceCollator(lambda examples: calls.append(examples) or {}, require_labels=True)
    batch = collator([{"prompt": "p", "error_type": "viewpoint", "severity": "major"}])
    assert batch["hae_error_type"].tolist() == [1] and batch["hae_severity"].tolist() == [1]
    assert calls[0] == [{"prompt": "p"}]  # labels never reach TRL's collator
    with pytest.raises(ValueError, match="severity='fatal'; expected one of"):
        collator([{"error_type": "other", "severity": "fatal"}])
    with pytest.raises(ValueError, match="no 'severity'"):
        collator([{"error_type": "other"}])
    lenient = HAEPreferenceCollator(lambda examples: {}, require_labels=False)
    assert lenient([{"prompt": "p"}])["hae_error_type"].tolist() == [-1]


def test_zero_weights_equal_trl_sigmoid_dpo(world: dict, tmp_path: Path) -> None:
    """Same weights, same batch: HAE-DPO with every weight 0 gives the stock DPOTrainer's loss and rewards."""
    hae = hae_trainer(world, tmp_path, **ZERO)
    stock = DPOTrainer(
        model=world["policy"],
        ref_model=world["ref"],
        args=dpo_args(DPOConfig, tmp_path / "stock"),
        train_dataset=world["dataset"],
        processing_class=world["processor"],
    )
    batch = first_batch(hae)
    plain = {k: v for k, v in batch.items() if not k.startswith("hae_")}
    world["policy"].eval()
    with torch.no_grad():
        hae_loss = hae.compute_loss(world["policy"], dict(batch))
        stock_loss = stock.compute_loss(world["policy"], plain)
    assert abs(stock_loss.item() - math.log(2)) > 1e-3  # Δ ≠ 0: the comparison is not trivially at log 2
    assert torch.equal(hae_loss, stock_loss), (hae_loss.item(), stock_loss.item())  # TRL's own arithmetic
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert hae._metrics["eval"][key][-1] == pytest.approx(stock._metrics["eval"][key][-1], abs=1e-6)
    assert hae._metrics["eval"]["hae/margin"][-1] == 0.0


def test_margin_loss_matches_formula_and_grows(world: dict, tmp_path: Path) -> None:
    """Loss = mean softplus(m − β·Δ) with Δ from separate forwards, and larger weights give a larger loss."""
    trainer = hae_trainer(world, tmp_path, severity_margins={"minor": 0.5, "major": 1.0, "critical": 2.0})
    batch = first_batch(trainer)
    world["policy"].eval()
    with torch.no_grad():
        pol_c, pol_r = trainer.compute_ref_log_probs(world["policy"], dict(batch))
        ref_c, ref_r = trainer.compute_ref_log_probs(world["ref"], dict(batch))
        beta_delta = 0.1 * ((pol_c - ref_c) - (pol_r - ref_r))
        hardness = reference_hardness(ref_c, ref_r, *batch["completion_mask"].sum(1).chunk(2))
        severity = torch.tensor([0.5, 1.0, 2.0])[batch["hae_severity"]]
        types = torch.tensor([0.5, 0.5, 0.25, 0.0])[batch["hae_error_type"]]
        margin = (severity + types + 0.5 * hardness).clamp(max=3.0)
        expected = F.softplus(margin - beta_delta).mean()
        loss = trainer.compute_loss(world["policy"], dict(batch))
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
        assert trainer._metrics["eval"]["hae/margin"][-1] == pytest.approx(margin.mean().item(), rel=1e-5)

        losses = []
        for scale in (0.0, 1.0, 2.0):
            trainer._severity_weights = scale * torch.tensor([0.5, 1.0, 2.0])
            losses.append(trainer.compute_loss(world["policy"], dict(batch)).item())
    assert losses == sorted(losses) and losses[0] < losses[-1] - 0.1


def test_gradients_finite_and_per_type_metrics(world: dict, tmp_path: Path) -> None:
    trainer = hae_trainer(world, tmp_path, hardness_weight=1.0)
    batch = first_batch(trainer)
    policy = world["policy"]
    policy.train()
    policy.zero_grad()
    loss = trainer.compute_loss(policy, dict(batch))
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    policy.zero_grad()
    metrics = trainer._metrics["train"]
    present = {ERROR_TYPES[i] for i in batch["hae_error_type"].tolist()}
    assert present and {f"hae/{t}/margin" for t in present} <= set(metrics)
    assert not {f"hae/{t}/margin" for t in set(ERROR_TYPES) - present} & set(metrics)
    assert metrics["hae/hardness"][-1] > 0


def test_two_training_steps_log_hae_metrics(tiny_model: Path, world: dict, tmp_path: Path) -> None:
    """A real `train()` from the model path (TRL loads the reference itself), with gradient checkpointing."""
    trainer = HAEDPOTrainer(
        model=str(tiny_model),
        args=dpo_args(
            HAEDPOConfig,
            tmp_path / "train",
            max_steps=2,
            learning_rate=1e-3,
            gradient_checkpointing=True,
            hardness_weight=0.0,
            model_init_kwargs={"dtype": torch.float32},
        ),
        train_dataset=world["dataset"],
        processing_class=world["processor"],
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(math.isfinite(entry["loss"]) for entry in logs)
    seen = set().union(*logs)
    assert {"rewards/accuracies", "rewards/margins", "hae/margin", "hae/hardness"} <= seen
    per_type = {
        key for key in seen if key.startswith("hae/") and key.endswith("/margin") and key != "hae/margin"
    }
    assert per_type, seen
    assert any("hae/orientation/margin" in entry for entry in logs)
    # No hardness term: each type's mean margin is its label weights, orientation (critical) the largest.
    for entry in logs:
        if "hae/orientation/margin" in entry:
            assert entry["hae/orientation/margin"] == pytest.approx(1.0 + 0.5)


def test_peft_reference_is_adapter_off(tiny_model: Path, world: dict, tmp_path: Path) -> None:
    """LoRA without a ref model: π_ref is the adapter-off base, so at init (B = 0) loss = mean softplus(m)."""
    from peft import LoraConfig

    trainer = HAEDPOTrainer(
        model=Qwen3VLForConditionalGeneration.from_pretrained(tiny_model, dtype=torch.float32),
        args=dpo_args(HAEDPOConfig, tmp_path / "lora", hardness_weight=0.0, gradient_checkpointing=True),
        train_dataset=world["dataset"],
        processing_class=world["processor"],
        peft_config=LoraConfig(r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)"),
    )
    assert trainer.ref_model is None
    batch = first_batch(trainer)
    severity = torch.tensor([0.25, 0.5, 1.0])[batch["hae_severity"]]
    types = torch.tensor([0.5, 0.5, 0.25, 0.0])[batch["hae_error_type"]]
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    torch.testing.assert_close(loss, F.softplus(severity + types).mean(), rtol=1e-5, atol=1e-6)
    loss.backward()
    lora_grads = [p.grad for n, p in trainer.model.named_parameters() if "lora_" in n and p.grad is not None]
    assert lora_grads and all(torch.isfinite(g).all() for g in lora_grads)


def test_moe_router_loss_kept_and_zero_weights_equal_trl(
    tiny_moe_model: Path, world: dict, tmp_path: Path
) -> None:
    """Tiny Qwen3-VL-MoE with the router loss on: TRL adds it in its own loss, and HAE-DPO keeps it."""
    policy = AutoModelForImageTextToText.from_pretrained(tiny_moe_model, dtype=torch.float32)
    ref = AutoModelForImageTextToText.from_pretrained(tiny_moe_model, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator))
    common = dict(
        model=policy, ref_model=ref, train_dataset=world["dataset"], processing_class=world["processor"]
    )
    hae = HAEDPOTrainer(
        args=dpo_args(HAEDPOConfig, tmp_path / "hae", router_aux_loss_coef=0.01, **ZERO), **common
    )
    stock = DPOTrainer(args=dpo_args(DPOConfig, tmp_path / "stock", router_aux_loss_coef=0.01), **common)
    assert hae.aux_loss_enabled and stock.aux_loss_enabled
    batch = first_batch(hae)
    policy.eval()
    with torch.no_grad():
        hae_loss = hae.compute_loss(policy, dict(batch))
        stock_loss = stock.compute_loss(policy, {k: v for k, v in batch.items() if not k.startswith("hae_")})
    assert torch.equal(hae_loss, stock_loss), (hae_loss.item(), stock_loss.item())
    assert hae._metrics["eval"]["aux_loss"][-1] == stock._metrics["eval"]["aux_loss"][-1] > 0


def test_hae_dpo_widens_the_raised_types_reward_margins_beyond_plain_dpo_on_the_same_batches(
    tmp_path: Path,
) -> None:
    """What makes HAE-DPO HAE, checked without a trained-model statistic: from the same model (the
    committed miniature annotator), on the same batches in the same order (same seed), HAE-DPO's
    implicit reward margin β·Δ on the error types its margins raise ends up wider than plain DPO's.
    Plain DPO is the DPO job's own ablation (`objective: sigmoid` runs this trainer with
    `dpo.NO_MARGIN`), so both log the same per-type metrics; a HAE-DPO job that silently trained with
    zero margins would log plain DPO's margins and fail here.

    Plain SGD without gradient clipping: there a pair's margin scales its step, which is the margin's
    whole effect. Under Adam with clipping (the jobs' optimizer) every update has about the same size,
    so a margin only moves weight between pairs: the type with the largest margin (orientation) gains
    on plain DPO and the smaller-margin types can give way (measured: viewpoint 0.82 vs 1.05)."""
    from editcaption.demo.records import preference_records
    from editcaption.demo.retrain import COMMITTED
    from editcaption.demo.world import WorldConfig, generate
    from editcaption.training.dpo import NO_MARGIN

    annotator = COMMITTED / "annotator"
    rows = list(preference_rows(preference_records(list(generate(12, WorldConfig(seed=5))))))
    dataset = Dataset.from_list(rows, features=DPO_FEATURES)
    processor = AutoProcessor.from_pretrained(annotator)

    def run(name: str, **weights) -> list[dict]:
        trainer = HAEDPOTrainer(
            model=str(annotator),
            args=dpo_args(
                HAEDPOConfig,
                tmp_path / name,
                max_steps=6,
                per_device_train_batch_size=8,
                optim="sgd",
                max_grad_norm=0.0,
                lr_scheduler_type="constant",
                learning_rate=2e-3,
                model_init_kwargs={"dtype": torch.float32},
                **weights,
            ),
            train_dataset=dataset,
            processing_class=processor,
        )
        trainer.train()
        return [entry for entry in trainer.state.log_history if "loss" in entry]

    def run_mean(logs: list[dict], error_type: str) -> float:
        values = [
            e[f"hae/{error_type}/reward_margin"] for e in logs if f"hae/{error_type}/reward_margin" in e
        ]
        assert values, (error_type, logs)
        return sum(values) / len(values)

    hae = run("hae", hardness_weight=0.0)  # label margins only: severity 0.25-1.0 plus type 0-0.5
    plain = run("plain", **NO_MARGIN)
    assert all(e["hae/margin"] == 0.0 for e in plain) and all(e["hae/margin"] > 0.0 for e in hae)
    # The same batches: at step 1 both policies are the start model, so every per-type value agrees.
    first = {k: v for k, v in hae[0].items() if k.startswith("hae/") and k.endswith("/reward_margin")}
    assert first and all(plain[0][k] == pytest.approx(v, abs=1e-5) for k, v in first.items())
    for error_type in ("orientation", "viewpoint", "attribute"):
        assert run_mean(hae[1:], error_type) > run_mean(plain[1:], error_type), (error_type, hae, plain)
