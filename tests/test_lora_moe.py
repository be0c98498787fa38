"""LoRA reaches the experts of an MoE model: transformers 5.19 keeps Qwen3-VL-MoE's experts as fused 3-D
parameters, which no `target_modules` entry can wrap, so the training config targets them with PEFT's
`target_parameters`; on the tiny Qwen3-VL-MoE the expert adapters get gradients, train, and merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from editcaption.training.config import LoraSettings, TrainJobConfig
from editcaption.training.model import expert_parameters, lora_config

TWO_IMAGES = [
    {
        "role": "user",
        "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Describe the edit."}],
    }
]


def job(model: Path, **lora) -> TrainJobConfig:
    return TrainJobConfig(
        model=str(model), input="x", output="y", name="n", finetune="lora", bf16=False, lora=lora
    )


def test_explicit_parameters_need_no_dropout():
    assert LoraSettings().target_parameters == "auto"
    with pytest.raises(ValidationError, match="dropout: 0"):
        LoraSettings(target_parameters=["mlp.experts.gate_up_proj"])
    assert LoraSettings(target_parameters=["mlp.experts.down_proj"], dropout=0).target_parameters


def test_auto_targets_experts_of_moe_models_only(tiny_model: Path, tiny_moe_model: Path):
    from transformers import AutoModelForImageTextToText

    moe = AutoModelForImageTextToText.from_pretrained(tiny_moe_model)
    dense = AutoModelForImageTextToText.from_pretrained(tiny_model)
    assert expert_parameters(moe, "auto") == ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
    assert expert_parameters(dense, "auto") == [] and expert_parameters(moe, []) == []
    assert lora_config(job(tiny_model), dense).target_parameters is None
    assert lora_config(job(tiny_moe_model, dropout=0), moe).target_parameters == [
        "mlp.experts.gate_up_proj",
        "mlp.experts.down_proj",
    ]
    with pytest.raises(ValueError, match=r"lora\.dropout: 0"):
        lora_config(job(tiny_moe_model), moe)  # default dropout 0.05 cannot wrap parameters
    assert lora_config(job(tiny_moe_model, target_parameters=[]), moe).target_parameters is None


def _expert_adapters(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in model.named_modules() if type(m).__name__ == "ParamWrapper"}


def test_expert_adapters_train_and_merge(tiny_moe_model: Path, tmp_path: Path):
    """Two SFT steps through TRL: every layer's fused gate_up and down expert tensors carry a LoRA
    adapter, the adapters' B matrices move off their zero init, the base experts stay frozen, and
    merging writes the learned delta into the experts."""
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    base = AutoModelForImageTextToText.from_pretrained(tiny_moe_model)
    layers = base.config.text_config.num_hidden_layers
    before = {n: p.detach().clone() for n, p in base.named_parameters() if ".mlp.experts." in n}
    assert len(before) == 2 * layers
    cfg = job(tiny_moe_model, dropout=0, r=4, alpha=8)
    images = [Image.new("RGB", (128, 96), c) for c in ("red", "blue")]
    rows = [
        {
            "images": images,
            "messages": [*TWO_IMAGES, {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
        }
        for answer in ("Move the red circle to the viewer's left.", "Make the square blue.") * 2
    ]
    args = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=5e-2,
        use_cpu=True,
        bf16=False,
        max_length=None,
        report_to="none",
        save_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=base,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoProcessor.from_pretrained(tiny_moe_model),
        peft_config=lora_config(cfg, base),
    )
    wrapped = _expert_adapters(trainer.model)
    assert {m.parameter_name for m in wrapped.values()} == {"gate_up_proj", "down_proj"}
    assert len(wrapped) == 2 * layers
    lora_b = {n: p for n, p in trainer.model.named_parameters() if ".mlp.experts." in n and "lora_B" in n}
    assert lora_b and all(p.requires_grad and not p.detach().any() for p in lora_b.values())
    trainer.train()
    assert all(p.detach().abs().sum() > 0 for p in lora_b.values()), "every expert adapter trained"
    frozen = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in trainer.model.named_parameters()
        if ".mlp.experts." in n and "lora_" not in n
    }
    assert all(not p.requires_grad for p in frozen.values())
    assert all(torch.equal(frozen[n].detach(), w) for n, w in before.items())

    merged = trainer.model.merge_and_unload()
    after = {n: p.detach() for n, p in merged.named_parameters() if ".mlp.experts." in n}
    assert set(after) == set(before)
    assert all(not torch.equal(after[n], before[n]) for n in before), (
        "the learned delta reached every expert tensor"
    )
