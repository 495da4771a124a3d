"""Readouts: what is read from a reward model's output, each as its model card's usage code does.

Each readout is called with ``(model, input_ids, attention_mask)`` for one micro-batch of
b rows and returns ``(value, attributes)``: the reward, shape (b,) (None for a
multi-attribute head without a single reward), and named columns, each shape (b,).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError


@dataclass
class ClassifierReadout:
    """AutoModelForSequenceClassification: the reward is ``logits[:, 0]`` (Skywork card).

    With ``attributes`` (names of a multi-output head, in output order), each column is
    returned by name; a one-output head also keeps its value as the reward.
    """

    attributes: tuple[str, ...] | None = None

    def __call__(self, model, input_ids, attention_mask) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()  # (b, K)
        if not self.attributes and logits.shape[-1] == 1:
            return logits[:, 0], {}
        if logits.shape[-1] != len(self.attributes or ()):
            raise ConfigError(
                f"the reward model has {logits.shape[-1]} outputs but attributes names {len(self.attributes or ())}: "
                f"{list(self.attributes or ())}; pass one name per output, in output order"
            )
        named = {name: logits[:, k] for k, name in enumerate(self.attributes)}
        return (logits[:, 0] if logits.shape[-1] == 1 else None), named


@dataclass
class CausalLogitReadout:
    """AutoModelForCausalLM: the reward is a next-token logit after the last token.

    ``token_ids == (t,)``: ``logits[last, t]`` (Llama-3.1-Nemotron-70B-Reward-HF: t = 0).
    ``token_ids == (yes, no)``: ``logits[last, yes] - logits[last, no]``, a yes/no judge.
    """

    token_ids: tuple[int, ...]

    def __call__(self, model, input_ids, attention_mask) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        last = attention_mask.sum(dim=1) - 1  # (b,) position of each row's last real token
        # Ask the model for logits at the few distinct last positions only (rows are sorted by
        # length), not at every position: the vocabulary projection dominates for short rows.
        positions, row_to_position = torch.unique(last, return_inverse=True)
        kwargs = {"logits_to_keep": positions} if _accepts_logits_to_keep(type(model)) else {}
        logits = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        if not kwargs:
            row_to_position = last
        rows = torch.arange(len(last), device=logits.device)
        chosen = logits[rows, row_to_position.to(logits.device)][:, list(self.token_ids)].float()  # (b, 1 or 2)
        value = chosen[:, 0] if len(self.token_ids) == 1 else chosen[:, 0] - chosen[:, 1]
        return value, {}


@dataclass
class PairRegressionReadout:
    """nicholasKluge/RewardModel: the model reads a (question, answer) pair and returns the reward.

    Card: ``model(**tokenizer(question, answer, return_token_type_ids=False), alpha=10).item()``;
    ``alpha`` multiplies a score trained to lie in [-1, 1]. The output is read as a tensor
    (b,) or (b, 1), or as ``.logits[:, 0]`` for a plain cross-encoder classifier.
    """

    alpha: float = 1.0
    sep_token_id: int | None = None  # set: a standard cross-encoder, which reads the pair's segment ids
    reads_pairs: ClassVar[bool] = True  # LocalScorer encodes (question, answer), not rendered text

    def __call__(self, model, input_ids, attention_mask, token_type_ids=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``token_type_ids`` (b, t): what tokenizer(question, answer) returned ([CLS] q [SEP] -> 0, a [SEP] -> 1),
        taken from the pair, never found by searching for [SEP] (a literal one in the question would move them)."""
        kwargs = {"alpha": self.alpha} if _accepts(type(model), "alpha") else {}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        value = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
        if value is None:
            value = out[0]  # a tuple-like ModelOutput
        return value.float().reshape(len(input_ids), -1)[:, 0], {}


@dataclass
class CustomReadout:
    """Custom-code reward models, ArmoRM style: ``output.score`` is the reward, shape (b,) or (b, 1);
    ``output.rewards`` (b, K), when present, are named objectives returned as attributes.

    ``attributes`` names the K objectives in order (default ``objective_0 ... objective_{K-1}``).
    """

    attributes: tuple[str, ...] | None = None

    def __call__(self, model, input_ids, attention_mask) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model(input_ids=input_ids, attention_mask=attention_mask)
        if getattr(out, "score", None) is None:
            raise ConfigError(
                f"kind='custom' reads output.score, but {type(model).__name__} returned {type(out).__name__} "
                "without it; use kind='pair_regression' for a (question, answer) model whose forward returns the reward, "
                "or kind='classifier' for one that returns logits"
            )
        b = len(input_ids)
        named = {}
        rewards = getattr(out, "rewards", None)
        if rewards is not None:
            rewards = rewards.float().reshape(b, -1)  # (b, K)
            names = self.attributes or tuple(f"objective_{k}" for k in range(rewards.shape[-1]))
            if len(names) != rewards.shape[-1]:
                raise ConfigError(
                    f"the reward model has {rewards.shape[-1]} objectives in output.rewards but attributes names "
                    f"{len(names)}: {list(names)}; pass one name per objective, in output order"
                )
            named = {name: rewards[:, k] for k, name in enumerate(names)}
        return out.score.float().reshape(b, -1)[:, 0], named


def _accepts(model_class: type, argument: str) -> bool:
    return argument in inspect.signature(model_class.forward).parameters


@functools.lru_cache(maxsize=None)
def _accepts_logits_to_keep(model_class: type) -> bool:
    """Asked once per model class, not on every micro-batch."""
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def readout_for(resolved, model):
    """The readout of a resolved local model (``resolve.py``): what is read from its output, per its card.

    Built once the weights are loaded: whether the forward takes ``alpha`` is a fact of the
    model's own code.
    """
    kind, options = resolved.kind, resolved.options
    if kind == "causal_logit":
        return CausalLogitReadout(resolved.token_ids)
    if kind == "pair_regression":
        if options.alpha != 1.0 and not _accepts(type(model), "alpha"):
            raise ConfigError(
                f"alpha={options.alpha} but {type(model).__name__}.forward takes no alpha; pass alpha=1 (its output is read as is)"
            )
        # A standard encoder (no custom code) reads segment ids as tokenizer(question, answer) gives them; the
        # nicholasKluge card passes return_token_type_ids=False, so custom code gets none.
        segments = (not resolved.config.get("auto_map") and resolved.config.get("type_vocab_size", 0) > 1
                    and _accepts(type(model), "token_type_ids") and resolved.tokenizer.sep_token_id is not None)
        return PairRegressionReadout(alpha=float(options.alpha), sep_token_id=resolved.tokenizer.sep_token_id if segments else None)
    if kind == "custom":
        return CustomReadout(options.attributes)
    return ClassifierReadout(options.attributes)
