"""The final model in Hugging Face format, ready for vLLM and the serve config.

Under ZeRO-3 every rank holds a slice of each weight, so the full weights are gathered (a collective:
all ranks call `save_final_model`) and rank 0 writes them in the training dtype. LoRA runs write the
adapter and, on request, the base model with the adapter merged in: vLLM cannot apply an adapter to
the vision tower and serves the merged checkpoint as a plain one. Qwen3-VL-MoE expert weights are
written in the published layout vLLM loads, not in the transposed one transformers 5 keeps in memory.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from editcaption.io.fs import is_uri, open_fs
from editcaption.training.config import TrainJobConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, Trainer

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
# Fused expert tensors that transformers holds as [experts, out, in] and checkpoints store as [experts, in, out].
_FUSED_EXPERTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


def published_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with fused MoE expert weights in the [experts, in, out] layout of published
    Qwen3-VL-MoE checkpoints.

    transformers 5 holds them as [experts, out, in] and transposes published tensors on load, but its
    save does not transpose back (the reverse op's shape check sees the model's own shape). vLLM reads
    the published layout, so that is the one written.
    """
    return {
        name: tensor.transpose(1, 2).contiguous() if name.endswith(_FUSED_EXPERTS) else tensor
        for name, tensor in state_dict.items()
    }


def save_pretrained(
    model: PreTrainedModel, out: str | Path, state_dict: dict[str, Any] | None = None
) -> None:
    """`model.save_pretrained`, with MoE experts in the layout vLLM reads."""
    from editcaption.training.model import is_moe

    state_dict = model.state_dict() if state_dict is None else state_dict
    if is_moe(model):
        model.save_pretrained(out, state_dict=published_layout(state_dict), save_original_format=False)
    else:
        model.save_pretrained(out, state_dict=state_dict)


def save_final_model(trainer: Trainer, cfg: TrainJobConfig) -> None:
    """Write the trained model and processor to `cfg.output`; every rank must call it."""
    is_main = trainer.accelerator.is_main_process
    local = Path(tempfile.mkdtemp(prefix="editcaption-final-")) if is_uri(cfg.output) else Path(cfg.output)
    if cfg.finetune == "lora":
        adapter = local / ADAPTER_DIR
        trainer.save_model(str(adapter))  # gathers the adapter under ZeRO-3 on all ranks, rank 0 writes
        if is_main and cfg.lora.merge:
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            # Training is over: load the base whole on this rank. Left set, the ZeRO-3 config would make
            # `from_pretrained` partition it, a collective the other ranks (at the barrier) never join.
            unset_hf_deepspeed_config()
            merge_lora(cfg.model, str(adapter), local, bf16=cfg.bf16)
    else:
        if trainer.is_deepspeed_enabled:
            state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed)
        else:
            state_dict = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        if is_main:
            save_pretrained(trainer.accelerator.unwrap_model(trainer.model), local, state_dict)
    if is_main:
        trainer.processing_class.save_pretrained(local)
        if is_uri(cfg.output):
            fs, path = open_fs(cfg.output)
            fs.put(str(local), path, recursive=True)
            shutil.rmtree(local, ignore_errors=True)
        log.info("final model written to %s", cfg.output)
    trainer.accelerator.wait_for_everyone()


def merge_lora(base: str, adapter: str, out: str | Path, bf16: bool = True) -> Path:
    """Load `base`, merge the LoRA `adapter` into it and save the result (with `base`'s processor)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.bfloat16 if bf16 else torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    save_pretrained(merged, out)
    AutoProcessor.from_pretrained(base).save_pretrained(out)
    return Path(out)
