r"""HAE-DPO: Hardness-Adaptive Error-Aware DPO, TRL's sigmoid DPO with a per-pair margin.

The EditCaption paper names the three ingredients (severity, failure-mode type, reference hardness) but
not a formula, so this one is ours. For a pair (x, y_c, y_r) whose rejected instruction y_r carries an
error type t and a severity s:

    loss  = mean_i  −log σ(β·Δ_i − m_i)
    Δ     = [log π(y_c|x) − log π_ref(y_c|x)] − [log π(y_r|x) − log π_ref(y_r|x)]
    m     = min(m_max,  w_sev[s] + w_type[t] + λ_h · h)
    h     = softplus( ℓ_ref(y_r) − ℓ_ref(y_c) ),   ℓ_ref(y) = log π_ref(y|x) / |y|

Δ is TRL's (summed completion log-probs). h is how strongly the frozen reference prefers the rejected
answer, per token: pairs it already gets right (ℓ_ref(y_c) ≫ ℓ_ref(y_r)) give h ≈ 0, a tie gives log 2,
and h grows linearly once π_ref prefers y_r. Per token, because a refined chosen instruction is often
longer than the rejected one, and summed log-probs would then call a pair "hard" for its length alone;
per-token values also keep h in the same few-nats range whatever the caption length, so λ_h means the
same thing across datasets (``hardness_length_normalized=False`` uses sums). m is a constant for the policy
(π_ref is frozen), so it moves the sigmoid's target, not its gradient direction: a pair must be won by
β·Δ > m before its loss fades. With every weight 0 (or m_max = 0), m = 0 and the loss is TRL's.

How TRL's code is reused: m enters as a shift of the rejected answer's reference log-prob,
β·Δ − m = β·([c − r_c] − [r − (r_r − m/β)]), so the trainer computes π_ref's log-probs with TRL's
``compute_ref_log_probs``, shifts them, and hands them to TRL's own ``_compute_loss`` through its
precomputed-reference path. The policy forward, Δ, the loss, the MoE router loss and every stock metric
are TRL's code; with m = 0 the loss is bit-for-bit TRL's. TRL's reward metrics would see the shift, so
they are rewritten from the unshifted per-pair values, and per-error-type statistics are added.

With ``precomputed_reference`` the rows carry π_ref's summed log-probs (``ref_chosen_logps``,
``ref_rejected_logps``, written by ``training/reference.py``'s Ray Data pass): no reference model is
loaded or run, and the loss and h read the stored values. TRL itself refuses to precompute for vision
data, and would otherwise load a reference from the policy's path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from trl import DPOConfig, DPOTrainer

from editcaption.schema import ERROR_TYPES, SEVERITIES

LABEL_COLUMNS = ("error_type", "severity")
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")  # TRL's own batch keys for them
UNLABELLED = -1


@dataclass
class HAEDPOConfig(DPOConfig):
    r"""DPO configuration plus the HAE-DPO margin weights (all 0 ⇒ TRL's sigmoid DPO).

    Margins are in units of β·Δ (nats of the DPO logit). A margin of 1 raises a fresh pair's loss from
    log 2 ≈ 0.69 to softplus(1) ≈ 1.31.
    """

    severity_margins: dict[str, float] | str | None = field(
        default_factory=lambda: {"minor": 0.25, "major": 0.5, "critical": 1.0},
        metadata={
            "help": "Margin added per severity of the rejected instruction (minor/major/critical), as a "
            "dict or its JSON string; a missing key or None means 0. Default 0.25/0.5/1.0: a critical "
            "error must be beaten by a full nat more than a flawless tie, a minor one by a quarter."
        },
    )
    type_margins: dict[str, float] | str | None = field(
        default_factory=lambda: {"orientation": 0.5, "viewpoint": 0.5, "attribute": 0.25, "other": 0.0},
        metadata={
            "help": "Margin added per failure-mode type of the rejected instruction "
            "(orientation/viewpoint/attribute/other), as a dict or its JSON string; a missing key or None "
            "means 0. Default favours the "
            "direction and camera errors the paper singles out (0.5), attributes 0.25, other 0."
        },
    )
    hardness_weight: float = field(
        default=0.5,
        metadata={
            "help": "λ_h, the margin per nat of reference hardness h = softplus(ℓ_ref(rejected) − "
            "ℓ_ref(chosen)). Default 0.5: a tie adds ≈0.35, a pair π_ref gets wrong by 2 nats/token adds ≈1."
        },
    )
    hardness_length_normalized: bool = field(
        default=True,
        metadata={
            "help": "Whether h compares per-token mean log-probs (default, length-independent) rather than "
            "summed log-probs."
        },
    )
    precomputed_reference: bool = field(
        default=False,
        metadata={
            "help": "Whether rows carry the reference model's summed completion log-probs in "
            "`ref_chosen_logps` and `ref_rejected_logps` (written by editcaption.training.reference). Then "
            "no reference model is loaded or run: the loss and the hardness term read the stored values."
        },
    )
    margin_cap: float = field(
        default=3.0,
        metadata={
            "help": "m_max, the largest margin any pair gets. Default 3.0: the sum of the defaults can reach "
            "≈3.5 on a hard critical orientation pair; the cap keeps any pair's target reward gap reachable "
            "(β·Δ = 3 is already σ = 0.95 for plain DPO). 0 disables the margin."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.severity_margins = _weights("severity_margins", self.severity_margins, SEVERITIES)
        self.type_margins = _weights("type_margins", self.type_margins, ERROR_TYPES)
        for name in ("hardness_weight", "margin_cap"):
            if getattr(self, name) < 0:
                raise ValueError(f"HAEDPOConfig.{name} must be >= 0, got {getattr(self, name)}.")
        if self.precomputed_reference and (self.sync_ref_model or self.precompute_ref_log_probs):
            raise ValueError(
                "HAEDPOConfig.precomputed_reference reads fixed stored reference log-probs: it excludes "
                "sync_ref_model and TRL's own precompute_ref_log_probs."
            )
        if self.ld_alpha is not None:
            raise ValueError(
                "HAEDPOConfig does not support ld_alpha (its per-pair metrics use summed log-probs); "
                "use trl.DPOTrainer for LD-DPO."
            )
        # The margin is a shift of π_ref(rejected): exact for sigmoid on reverse-KL log-ratios; TRL's `sft`
        # term (RPO) reads only the chosen answer, so it may ride along. Other losses would change meaning.
        loss_ok = "sigmoid" in self.loss_type and set(self.loss_type) <= {"sigmoid", "sft"}
        if self.uses_margin and not (loss_ok and self.f_divergence_type == "reverse_kl"):
            raise ValueError(
                "HAE-DPO margins are defined for loss_type ['sigmoid'] (optionally with 'sft') and "
                f"f_divergence_type='reverse_kl'; got loss_type={self.loss_type}, "
                f"f_divergence_type={self.f_divergence_type!r}. Set all margin weights to 0 (or "
                "margin_cap=0) to train another loss."
            )

    @property
    def uses_margin(self) -> bool:
        """Whether any pair can get a non-zero margin."""
        weights = [*self.severity_margins.values(), *self.type_margins.values(), self.hardness_weight]
        return self.margin_cap > 0 and any(w > 0 for w in weights)

    @property
    def needs_labels(self) -> bool:
        """Whether rows must carry `error_type` and `severity` (some label weight is non-zero)."""
        weights = [*self.severity_margins.values(), *self.type_margins.values()]
        return self.margin_cap > 0 and any(w > 0 for w in weights)


def _weights(
    name: str, value: dict[str, float] | str | None, vocabulary: tuple[str, ...]
) -> dict[str, float]:
    """A weight per vocabulary word (missing words weigh 0); unknown words and negatives are errors."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"HAEDPOConfig.{name} is not a JSON object: {value!r} ({error}).") from error
    value = value or {}
    if not isinstance(value, dict):
        raise ValueError(f"HAEDPOConfig.{name} must map {list(vocabulary)} to weights, got {value!r}.")
    unknown = sorted(set(value) - set(vocabulary))
    if unknown:
        raise ValueError(f"HAEDPOConfig.{name} has unknown keys {unknown}; allowed: {list(vocabulary)}.")
    weights = {word: float(value.get(word, 0.0)) for word in vocabulary}
    negative = {word: w for word, w in weights.items() if w < 0}
    if negative:
        raise ValueError(f"HAEDPOConfig.{name} must be >= 0, got {negative}.")
    return weights


def reference_hardness(
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    length_normalized: bool = True,
) -> torch.Tensor:
    """h = softplus(ℓ_ref(rejected) − ℓ_ref(chosen)): how strongly π_ref prefers the rejected answer."""
    if length_normalized:
        ref_chosen_logps = ref_chosen_logps / chosen_lengths.clamp(min=1)
        ref_rejected_logps = ref_rejected_logps / rejected_lengths.clamp(min=1)
    return F.softplus(ref_rejected_logps - ref_chosen_logps)


def hae_margin(
    severity_ids: torch.Tensor,
    type_ids: torch.Tensor,
    hardness: torch.Tensor,
    severity_weights: torch.Tensor,
    type_weights: torch.Tensor,
    hardness_weight: float,
    margin_cap: float,
) -> torch.Tensor:
    """m = min(cap, w_sev[s] + w_type[t] + λ_h·h); an unlabelled pair (id −1) gets no label term."""
    severity_term = torch.where(severity_ids >= 0, severity_weights[severity_ids.clamp(min=0)], 0.0)
    type_term = torch.where(type_ids >= 0, type_weights[type_ids.clamp(min=0)], 0.0)
    return (severity_term + type_term + hardness_weight * hardness).clamp(max=margin_cap)


def _label_id(example: dict[str, Any], column: str, vocabulary: tuple[str, ...], required: bool) -> int:
    value = example.get(column)
    if value is None:
        if required:
            raise ValueError(
                f"HAE-DPO row has no {column!r}; the configured margins need it (one of {list(vocabulary)}). "
                "Set the label weights to 0 to train on unlabelled pairs."
            )
        return UNLABELLED
    if value not in vocabulary:
        raise ValueError(f"HAE-DPO row has {column}={value!r}; expected one of {list(vocabulary)}.")
    return vocabulary.index(value)


@dataclass
class HAEPreferenceCollator:
    """Wraps TRL's preference collator: strips the label columns, adds them back as id tensors."""

    inner: Callable[[list[dict[str, Any]]], dict[str, Any]]
    require_labels: bool = True
    reference: bool = False  # rows carry stored reference log-probs (REFERENCE_COLUMNS)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        severity = [_label_id(ex, "severity", SEVERITIES, self.require_labels) for ex in examples]
        error_type = [_label_id(ex, "error_type", ERROR_TYPES, self.require_labels) for ex in examples]
        reference = [_reference(ex) for ex in examples] if self.reference else []
        own = {*LABEL_COLUMNS, *REFERENCE_COLUMNS}
        batch = self.inner([{k: v for k, v in ex.items() if k not in own} for ex in examples])
        batch["hae_severity"] = torch.tensor(severity, dtype=torch.long)
        batch["hae_error_type"] = torch.tensor(error_type, dtype=torch.long)
        for k, column in enumerate(REFERENCE_COLUMNS):
            if reference:
                batch[column] = torch.tensor([values[k] for values in reference], dtype=torch.float32)
        return batch


def _reference(example: dict[str, Any]) -> tuple[float, float]:
    values = [example.get(column) for column in REFERENCE_COLUMNS]
    if any(v is None for v in values):
        raise ValueError(
            "HAE-DPO with precomputed_reference: a row has no "
            f"{' / '.join(REFERENCE_COLUMNS)}; run editcaption.training.reference.precompute_reference "
            "on the rows first (the DPO job does with precompute_reference: true)."
        )
    return float(values[0]), float(values[1])


@contextmanager
def _no_reference_model():
    """While DPOTrainer is built: give no ref_model and TRL loads one from the policy's path (it would
    skip that only for its own precompute, which it refuses for vision data); with stored log-probs
    there must be none, so its loader returns None here."""
    from trl.trainer import dpo_trainer

    load = dpo_trainer.create_model_from_path
    dpo_trainer.create_model_from_path = lambda *args, **kwargs: None
    try:
        yield
    finally:
        dpo_trainer.create_model_from_path = load


class HAEDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer with the HAE-DPO margin (module docstring); rows add `error_type` and `severity`."""

    def __init__(self, model: Any, ref_model: Any = None, args: HAEDPOConfig | None = None, **kwargs: Any):
        if args is None:
            args = HAEDPOConfig(output_dir="hae-dpo")
        if not isinstance(args, HAEDPOConfig):
            raise TypeError(f"HAEDPOTrainer needs an HAEDPOConfig, got {type(args).__name__}.")
        if args.precomputed_reference:
            if ref_model is not None:
                raise ValueError(
                    "HAEDPOConfig.precomputed_reference: pass no ref_model, the rows hold its log-probs."
                )
            with _no_reference_model():
                super().__init__(model, ref_model=None, args=args, **kwargs)
        else:
            super().__init__(model, ref_model=ref_model, args=args, **kwargs)
        if not isinstance(self.data_collator, HAEPreferenceCollator):
            self.data_collator = HAEPreferenceCollator(
                self.data_collator, require_labels=args.needs_labels, reference=args.precomputed_reference
            )
        self._severity_weights = torch.tensor([args.severity_margins[s] for s in SEVERITIES])
        self._type_weights = torch.tensor([args.type_margins[t] for t in ERROR_TYPES])

    def _set_signature_columns_if_needed(self) -> None:
        # TRL's vision path keeps only prompt/chosen/rejected/images…; labels must reach the collator.
        super()._set_signature_columns_if_needed()
        ours = [*LABEL_COLUMNS, *(REFERENCE_COLUMNS if self.args.precomputed_reference else ())]
        missing = [c for c in ours if c not in self._signature_columns]
        self._signature_columns = [*self._signature_columns, *missing]

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        severity_ids = inputs.pop("hae_severity")
        type_ids = inputs.pop("hae_error_type")
        if self.precompute_ref_logps or self.args.precomputed_reference:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_source = self.ref_model if self.ref_model is not None else self.model
            ref_chosen, ref_rejected = self.compute_ref_log_probs(ref_source, inputs)
        chosen_lengths, rejected_lengths = inputs["completion_mask"].sum(dim=1).chunk(2, dim=0)
        hardness = reference_hardness(
            ref_chosen.float(),
            ref_rejected.float(),
            chosen_lengths,
            rejected_lengths,
            length_normalized=self.args.hardness_length_normalized,
        )
        device = hardness.device
        margin = hae_margin(
            severity_ids.to(device),
            type_ids.to(device),
            hardness,
            self._severity_weights.to(device),
            self._type_weights.to(device),
            self.args.hardness_weight,
            self.args.margin_cap,
        )
        inputs["ref_chosen_logps"] = ref_chosen
        inputs["ref_rejected_logps"] = ref_rejected - (margin / self.beta).to(ref_rejected.dtype)

        with self._capture_policy_logps(model) as captured, self._reference_given():
            result = super()._compute_loss(model, inputs, return_outputs)

        chosen_logps, rejected_logps = captured[0].chunk(2, dim=0)
        chosen_rewards = self.beta * (chosen_logps - ref_chosen).float()
        rejected_rewards = self.beta * (rejected_logps - ref_rejected).float()
        self._log_hae_metrics(mode, chosen_rewards, rejected_rewards, margin, hardness, type_ids.to(device))
        return result

    @contextmanager
    def _reference_given(self):
        """Run TRL's loss on the reference log-probs placed in the batch (its precomputed-reference path)."""
        previous = self.precompute_ref_logps
        self.precompute_ref_logps = True
        try:
            yield
        finally:
            self.precompute_ref_logps = previous

    @contextmanager
    def _capture_policy_logps(self, model: Any):
        """Keep the per-pair summed log-probs of the policy forward TRL runs (the first call only)."""
        captured: list[torch.Tensor] = []

        def hook(_module: Any, _args: Any, kwargs: dict[str, Any], output: Any) -> None:
            if captured or not kwargs.get("fused_lm_head"):
                return
            # TRL's reduction: the last seq_len − 1 positions (prompt-learning PEFT prepends some), summed.
            seq_len = kwargs["labels"].size(1) - 1
            captured.append(output.log_probs[:, -seq_len:].detach().sum(dim=1))

        handle = self.accelerator.unwrap_model(model).register_forward_hook(hook, with_kwargs=True)
        try:
            yield captured
        finally:
            handle.remove()

    def _log_hae_metrics(
        self,
        mode: str,
        chosen_rewards: torch.Tensor,
        rejected_rewards: torch.Tensor,
        margin: torch.Tensor,
        hardness: torch.Tensor,
        type_ids: torch.Tensor,
    ) -> None:
        """Unshifted reward metrics (replacing TRL's last entries) and margin statistics per error type."""
        local = torch.stack(
            [chosen_rewards, rejected_rewards, margin.float(), hardness.float(), type_ids.float()]
        )
        chosen, rejected, margin, hardness, type_ids = self.accelerator.gather(local.T.contiguous()).T
        reward_margin = chosen - rejected
        metrics = self._metrics[mode]
        metrics["rewards/rejected"][-1] = rejected.mean().item()
        metrics["rewards/margins"][-1] = reward_margin.mean().item()
        metrics["rewards/accuracies"][-1] = (reward_margin > 0).float().mean().item()
        metrics["hae/margin"].append(margin.mean().item())
        metrics["hae/hardness"].append(hardness.mean().item())
        metrics["hae/margin_satisfied"].append((reward_margin > margin).float().mean().item())
        for index, name in enumerate(ERROR_TYPES):
            selected = type_ids == index
            if selected.any():
                metrics[f"hae/{name}/margin"].append(margin[selected].mean().item())
                metrics[f"hae/{name}/accuracy"].append((reward_margin[selected] > 0).float().mean().item())
                metrics[f"hae/{name}/reward_margin"].append(reward_margin[selected].mean().item())
