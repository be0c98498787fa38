"""DPO with precomputed reference log-probs: the Ray Data pass stores TRL's numbers, and training from
them gives TRL's on-the-fly loss (HAE-DPO's margins and hardness included) on the same batches, with no
reference model held.

The rows are the DPO job's own (`training.data.preference_rows` of the sample pairs with rule-written
hard negatives, images halved as in test_hae_dpo.py); the pass runs on a local Ray, one actor.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from test_hae_dpo import dpo_args, labelled_pairs
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

from editcaption.training.data import load_rows
from editcaption.training.dpo import DPOJobConfig
from editcaption.training.hae_dpo import HAEDPOConfig, HAEDPOTrainer, HAEPreferenceCollator
from editcaption.training.reference import REFERENCE_COLUMNS, precompute_reference


def test_collator_needs_the_stored_values_when_told_to_read_them() -> None:
    collator = HAEPreferenceCollator(lambda examples: {"seen": examples}, reference=True)
    row = {"prompt": "p", "error_type": "viewpoint", "severity": "major"}
    batch = collator([{**row, "ref_chosen_logps": -3.5, "ref_rejected_logps": -1.25}])
    assert batch["ref_chosen_logps"].tolist() == [-3.5] and batch["ref_rejected_logps"].tolist() == [-1.25]
    assert batch["seen"] == [{"prompt": "p"}]  # neither labels nor stored values reach TRL's collator
    with pytest.raises(ValueError, match="precompute_reference"):
        collator([{**row, "ref_chosen_logps": -3.5}])


def test_config_refuses_a_moving_reference(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sync_ref_model"):
        HAEDPOConfig(output_dir=str(tmp_path), use_cpu=True, precomputed_reference=True, sync_ref_model=True)


@pytest.mark.slow
def test_stored_reference_gives_trls_loss_without_a_reference_model(
    ray_shared, tiny_model: Path, sample_pairs_dir: Path, tmp_path: Path
) -> None:

    dataset = labelled_pairs(sample_pairs_dir)
    prepared = tmp_path / "prepared" / "dpo.parquet"
    prepared.parent.mkdir()
    dataset.to_parquet(str(prepared))  # as the job's `write_rows` leaves them: HF features, image bytes
    cfg = DPOJobConfig(
        model=str(tiny_model),
        input=str(prepared),
        output=str(tmp_path / "model"),
        name="ref",
        storage_path=str(tmp_path / "runs"),
        bf16=False,
        per_device_train_batch_size=3,  # other batches than training's: padding must not matter
        workers={"num_workers": 1, "cpus_per_worker": 1},
    )
    uri, stats = precompute_reference(cfg, str(prepared))
    assert stats["rows"] == len(dataset)
    stored = load_rows(uri, str(tmp_path / "cache"))
    assert set(REFERENCE_COLUMNS) <= set(stored.column_names)
    assert stored["pair_id"] == dataset["pair_id"]  # same rows, same order

    processor = AutoProcessor.from_pretrained(tiny_model)
    ref = Qwen3VLForConditionalGeneration.from_pretrained(tiny_model, dtype=torch.float32)
    policy = Qwen3VLForConditionalGeneration.from_pretrained(tiny_model, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator))
    margins = {"hardness_weight": 1.0, "severity_margins": {"minor": 0.5, "major": 1.0, "critical": 2.0}}
    on_the_fly = HAEDPOTrainer(
        model=policy,
        ref_model=ref,
        args=dpo_args(HAEDPOConfig, tmp_path / "otf", **margins),
        train_dataset=dataset,
        processing_class=processor,
    )
    precomputed = HAEDPOTrainer(
        model=policy,
        args=dpo_args(HAEDPOConfig, tmp_path / "pre", precomputed_reference=True, **margins),
        train_dataset=stored,
        processing_class=processor,
    )
    assert precomputed.ref_model is None

    policy.eval()
    batches = zip(on_the_fly.get_train_dataloader(), precomputed.get_train_dataloader(), strict=True)
    compared = 0
    for live, kept in batches:
        assert torch.equal(live["input_ids"], kept["input_ids"])  # the same batch on both sides
        with torch.no_grad():
            trl_chosen, trl_rejected = on_the_fly.compute_ref_log_probs(ref, dict(live))
            torch.testing.assert_close(kept["ref_chosen_logps"], trl_chosen, rtol=0, atol=1e-4)
            torch.testing.assert_close(kept["ref_rejected_logps"], trl_rejected, rtol=0, atol=1e-4)
            loss_live = on_the_fly.compute_loss(policy, dict(live))
            loss_kept = precomputed.compute_loss(policy, dict(kept))
        assert abs(loss_live.item() - loss_kept.item()) < 1e-5, (loss_live.item(), loss_kept.item())
        for key in ("hae/hardness", "hae/margin", "rewards/margins"):
            assert on_the_fly._metrics["eval"][key][-1] == pytest.approx(
                precomputed._metrics["eval"][key][-1], abs=1e-5
            )
        compared += 1
    assert compared >= 2 and on_the_fly._metrics["eval"]["hae/hardness"][-1] > 0
    assert pq.ParquetFile(uri).metadata.num_rows == len(dataset)
