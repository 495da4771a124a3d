"""``RPOTrainer`` / ``RPOConfig``: TRL 1.16's DPOTrainer with the RPO loss (rpo_loss.py).

What is reused from TRL and what is replaced (TRL 1.16's DPOTrainer has no loss hook: the
loss is an if-chain over ``loss_type`` inside ``_compute_loss``, which also does the forward):

- reused as is: dataset preparation and tokenization (``_prepare_dataset``), its collator
  (wrapped, see below), the reference model (a copy, PEFT's disabled adapter, or
  ``precompute_ref_log_probs``) and its forward (``compute_ref_log_probs``), the fused LM head
  that gives per-token log-probs without the logits, logging (``log`` averages ``_metrics``).
- extended: ``_set_signature_columns_if_needed`` keeps ``chosen_reward`` / ``rejected_reward``
  through ``remove_unused_columns``; the collator is wrapped so the batch carries them as
  float tensors of shape (B,).
- replaced: ``_compute_loss``: the policy forward as TRL does it, then RPO instead of the
  ``loss_type`` chain, an optional SFT term on the chosen response (``sft_weight``), and the
  metrics: TRL's DPO metrics under their names plus ``rpo/*``.
"""

# No `from __future__ import annotations`: recipe checks read RPOConfig's field types as types.
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import DPOConfig, DPOTrainer

from ..errors import ConfigError, InputError
from .rpo_loss import DISTANCES, rpo_distance

REWARD_COLUMNS = ("chosen_reward", "rejected_reward")
_NOT_MODEL_INPUTS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", *REWARD_COLUMNS}


@dataclass
class RPOConfig(DPOConfig):
    """DPOConfig plus RPO's knobs. ``beta`` is DPO's (the implicit reward's scale).

    DPO's own loss options (``loss_type``, ``loss_weights``, ``ld_alpha``, ``f_divergence_type``,
    ``use_weighting``, ``label_smoothing``) do not apply and are refused when set.
    """

    eta: float = field(default=1.0, metadata={"help": "Scale of the reward model's gap: t = eta * (r_chosen - r_rejected)."})
    distance: str = field(default="bwd_kl", metadata={"help": f"Distance between beta*d and t: one of {DISTANCES}."})
    sft_weight: float = field(default=0.0, metadata={"help": "Weight of the SFT term: minus the chosen response's log-prob."})
    average_log_probs: bool = field(
        default=False, metadata={"help": "Use each response's mean token log-prob instead of the sum (d and the SFT term)."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_rpo_options({name: getattr(self, name) for name in RPO_DEFAULTS})


# RPO's fields, and DPO's loss options that RPO replaces (refused unless left at these defaults).
RPO_DEFAULTS = {"eta": 1.0, "distance": "bwd_kl", "sft_weight": 0.0, "beta": 0.1, "loss_type": ["sigmoid"], "loss_weights": None,
                "ld_alpha": None, "f_divergence_type": "reverse_kl", "use_weighting": False, "label_smoothing": 0.0}
_REPLACED = ("loss_type", "loss_weights", "ld_alpha", "f_divergence_type", "use_weighting", "label_smoothing")


def check_rpo_options(values: dict[str, Any]) -> None:
    """RPOConfig's checks on plain values (a recipe's ``training`` section is checked with these before anything loads)."""
    values = {**RPO_DEFAULTS, **values}
    if values["distance"] not in DISTANCES:
        raise ConfigError(f"distance={values['distance']!r} is not one of {DISTANCES}")
    for name in ("eta", "beta"):
        if not math.isfinite(values[name]) or values[name] <= 0:
            raise ConfigError(f"{name}={values[name]!r} must be a finite number > 0")
    if not math.isfinite(values["sft_weight"]) or values["sft_weight"] < 0:
        raise ConfigError(f"sft_weight={values['sft_weight']!r} must be a finite number >= 0")
    for name in _REPLACED:
        value = list(values[name]) if name == "loss_type" and isinstance(values[name], (list, tuple)) else values[name]
        if value != RPO_DEFAULTS[name] and not (name == "loss_type" and value == "sigmoid"):
            raise ConfigError(f"{name}={value!r} is a DPO loss option; RPOConfig replaces that loss "
                              f"(choose distance={DISTANCES}, eta, sft_weight), so leave {name} unset")


class RPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is RPO's: it fits ``beta * d`` to ``eta * (r_c - r_l)``.

    The datasets need TRL's preference columns (``prompt``, ``chosen``, ``rejected``) plus
    ``chosen_reward`` and ``rejected_reward`` (finite numbers: the reward model's scores, as
    ``rewardbridge pairs`` writes them). Logged each step, beside TRL's DPO metrics:
    ``rpo/loss``, ``rpo/sft_loss``, ``rpo/target_gap`` (mean t), ``rpo/implicit_gap``
    (mean beta*d) and ``rpo/agreement`` (share of pairs where sign(beta*d) == sign(t)).

    Example::

        trainer = RPOTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", args=RPOConfig(output_dir="out", beta=0.1),
                             train_dataset=load_dataset("json", data_files="pairs.jsonl", split="train"))
        trainer.train()
    """

    _tag_names = ["trl", "dpo", "rpo", "rewardbridge"]
    _name = "RPO"

    def __init__(self, model, ref_model=None, args: RPOConfig | None = None, data_collator=None, train_dataset=None,
                 eval_dataset=None, processing_class=None, **kwargs):
        if args is None:
            args = RPOConfig(output_dir="rpo-output")
        if not isinstance(args, RPOConfig):
            raise ConfigError(f"RPOTrainer needs args=RPOConfig(...), got {type(args).__name__} "
                              "(RPOConfig is DPOConfig plus eta, distance, sft_weight, average_log_probs)")
        check_reward_columns(train_dataset, "train_dataset")
        for name, dataset in (eval_dataset.items() if isinstance(eval_dataset, dict) else [("eval_dataset", eval_dataset)]):
            check_reward_columns(dataset, name)
        super().__init__(model, ref_model=ref_model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        # After TRL's __init__: its reference precompute used the plain collator, which needs no rewards.
        self.data_collator = RewardColumnsCollator(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, *[c for c in REWARD_COLUMNS if c not in self._signature_columns]]

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        args = self.args
        model_inputs = {k: v for k, v in inputs.items() if k not in REWARD_COLUMNS}
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NOT_MODEL_INPUTS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        seq_len = shift_mask.size(1)
        # The fused head gives 0 outside the completion; prompt-learning PEFT prepends virtual tokens.
        per_token_logps = outputs.log_probs[:, -seq_len:]
        logps = per_token_logps.sum(dim=1)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model if self.ref_model is not None else self.model,
                                                                  model_inputs)
        ref_logps = torch.cat([ref_chosen, ref_rejected]).to(logps.device, logps.dtype)
        if args.average_log_probs:
            lengths = shift_mask.sum(dim=1).clamp(min=1).to(logps.dtype)
            logps, ref_logps = logps / lengths, ref_logps / lengths
        chosen_logps, rejected_logps = logps.chunk(2)
        ref_chosen, ref_rejected = ref_logps.chunk(2)
        chosen_logratios, rejected_logratios = chosen_logps - ref_chosen, rejected_logps - ref_rejected
        implicit = args.beta * (chosen_logratios - rejected_logratios).float()
        target = args.eta * (inputs["chosen_reward"] - inputs["rejected_reward"]).to(implicit.device, torch.float32)
        preference_loss = rpo_distance(implicit, target, args.distance).mean()
        sft_loss = -chosen_logps.float().mean()
        loss = preference_loss + args.sft_weight * sft_loss if args.sft_weight else preference_loss
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(outputs.aux_loss).mean().item())

        metrics = self._metrics[mode]
        gather = self.accelerator.gather_for_metrics
        implicit_all, target_all = gather(implicit.detach()), gather(target.detach())
        metrics["rpo/loss"].append(gather(preference_loss.detach()).mean().item())
        metrics["rpo/sft_loss"].append(gather(sft_loss.detach()).mean().item())
        metrics["rpo/target_gap"].append(target_all.mean().item())
        metrics["rpo/implicit_gap"].append(implicit_all.mean().item())
        metrics["rpo/agreement"].append((torch.sign(implicit_all) == torch.sign(target_all)).float().mean().item())
        self._log_dpo_metrics(mode, outputs, inputs, shift_mask, chosen_logratios, rejected_logratios, chosen_logps, rejected_logps)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss

    def _log_dpo_metrics(self, mode, outputs, inputs, shift_mask, chosen_logratios, rejected_logratios, chosen_logps, rejected_logps):
        """TRL's DPO metrics under their names, computed as TRL 1.16's ``_compute_loss`` does."""
        metrics, gather = self._metrics[mode], self.accelerator.gather_for_metrics
        seq_len = shift_mask.size(1)
        tokens = gather(shift_mask.sum()).sum()
        entropy = gather((outputs.entropy[:, -seq_len:].detach() * shift_mask).sum()).sum()
        metrics["entropy"].append((entropy / tokens).item() if tokens > 0 else 0.0)
        if mode == "train":
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item() // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        chosen_mask, rejected_mask = shift_mask.chunk(2)
        chosen_logits, rejected_logits = outputs.mean_logits[:, -seq_len:].chunk(2)
        for name, values, mask in (("chosen", chosen_logits, chosen_mask), ("rejected", rejected_logits, rejected_mask)):
            total, count = gather(values[mask.bool()].sum()).sum().item(), gather(mask.sum()).sum().item()
            metrics[f"logits/{name}"].append(total / count if count > 0 else 0.0)
        chosen_top1, _ = outputs.is_top1[:, -seq_len:].chunk(2)
        correct, count = gather((chosen_top1 & chosen_mask.bool()).sum()).sum(), gather(chosen_mask.sum()).sum()
        metrics["mean_token_accuracy"].append((correct / count).item() if count > 0 else 0.0)
        chosen_rewards = gather(self.beta * chosen_logratios.detach())
        rejected_rewards = gather(self.beta * rejected_logratios.detach())
        metrics["rewards/chosen"].append(chosen_rewards.mean().item())
        metrics["rewards/rejected"].append(rejected_rewards.mean().item())
        metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
        metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())


class RewardColumnsCollator:
    """TRL's preference collator, plus ``chosen_reward`` / ``rejected_reward`` as float tensors of shape (B,)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        for column in REWARD_COLUMNS:
            values = [example.get(column) for example in examples]
            for value in values:
                _check_reward(value, column, "a batch row")
            batch[column] = torch.tensor(values, dtype=torch.float32)
        return batch


def check_reward_columns(dataset, name: str) -> None:
    """Both reward columns present, every value a finite number (map-style datasets: all rows now)."""
    if dataset is None:
        return
    columns = getattr(dataset, "column_names", None) or []
    missing = [c for c in REWARD_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"{name} has no {' or '.join(missing)} column (it has {columns}); RPO needs each response's "
                         "reward-model score: make pairs with `rewardbridge pairs`, or use DPOTrainer for pairs without scores")
    if hasattr(dataset, "__len__"):
        for column in REWARD_COLUMNS:
            for index, value in enumerate(dataset[column]):
                _check_reward(value, column, f"{name} row {index}")


def _check_reward(value: Any, column: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: {column}={value!r} is not a finite number; every pair needs both responses' "
                         "reward-model scores (drop pairs whose scoring failed)")
