"""A rewardbridge reward as TRL 1.12 ``PPOTrainer``'s ``reward_model``.

PPOTrainer (``trl.experimental.ppo``, trl <= 1.12) never calls ``reward_model(...)``. Its
``get_reward`` (trl/experimental/utils.py) does::

    attention_mask = query_responses != pad_token_id
    output = getattr(model, model.base_model_prefix)(input_ids=ids with pads set to 0,
        attention_mask=..., position_ids=..., return_dict=True, output_hidden_states=True, use_cache=False)
    reward_logits = model.score(output.hidden_states[-1])
    score = reward_logits[row, first_true_indices(query_responses[:, context_length:] == pad) - 1 + context_length]

on the POLICY's token ids: the query left-padded to ``context_length``, the response cut
after the first stop token and filled with pad. :class:`PPORewardModel` decodes those ids
with the policy tokenizer, splits query from response, scores the texts with the reward
(its own tokenizer and template) and puts each score where ``get_reward`` reads it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, InputError, RemoteError
from .policy_text import PolicyTemplate


class PPORewardModel(nn.Module):
    """``reward.as_ppo_reward_model(policy_tokenizer)``: pass it as ``PPOTrainer(reward_model=...)``.

    Args:
        reward: a :class:`~rewardbridge.RewardFunction`.
        policy_tokenizer: the tokenizer PPOTrainer gets as ``processing_class``.
        response_start: text that ends every query (e.g. ``"TL;DR:"``); default: the policy
            chat template's generation prompt. ``get_reward`` never says where the query ends,
            so the adapter finds the last position at which every row of the batch ends with it.

    The module has no parameters: the reward model lives in ``reward``.
    """

    base_model_prefix = "backbone"

    def __init__(self, reward: Any, policy_tokenizer: Any, response_start: str | None = None):
        super().__init__()
        self.backbone = PolicyIdsScorer(reward, policy_tokenizer, response_start)
        # get_reward reads score(hidden_states[-1]); the backbone's last "hidden state" is the score.
        self.score = nn.Identity()

    @property
    def reward(self):
        return self.backbone.reward


class PolicyIdsScorer(nn.Module):
    """The ``base_model_prefix`` module: policy ids (B, T) -> ``hidden_states[-1]`` of shape (B, T, 1).

    Row i holds its score at its last non-pad token (the position ``get_reward`` reads) and
    NaN elsewhere, so a read anywhere else shows up as NaN instead of a plausible number.
    """

    def __init__(self, reward: Any, policy_tokenizer: Any, response_start: str | None = None):
        super().__init__()
        self.reward = reward
        self.policy_tokenizer = policy_tokenizer
        self.template = PolicyTemplate(policy_tokenizer)
        self.marker = response_start if response_start is not None else self.template.generation_prompt()
        if not self.marker:
            raise ConfigError(
                "as_ppo_reward_model: the policy tokenizer has no chat template, so nothing marks where a PPO "
                "query ends; pass response_start='<the text that ends every prompt>' (e.g. 'TL;DR:')"
            )
        self._pieces: dict[int, str] = {}  # token id -> its text, for finding the marker

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any):
        from transformers.modeling_outputs import BaseModelOutputWithPast

        mask = attention_mask.bool()
        context_length = self.context_length(input_ids, mask)
        prompts, completions, read_at = [], [], []
        pad_id = self.policy_tokenizer.pad_token_id
        for row, row_mask in zip(input_ids, mask):
            # get_reward masks every pad id, so with pad == EOS the prompt's own EOS tokens arrive
            # masked (and zeroed): after the left padding, a masked query token is that pad id.
            real = row_mask[:context_length].nonzero()
            start = int(real[0]) if len(real) else context_length
            query = row[start:context_length].clone()
            query[~row_mask[start:context_length]] = pad_id
            # get_reward: the response ends before its first pad (first_true_indices(... == pad) - 1).
            pads = (~row_mask[context_length:]).nonzero()
            end = context_length + (int(pads[0]) if len(pads) else row_mask.numel() - context_length)
            response = row[context_length:end]
            prompt = self.template.prompt_from_text(self.policy_tokenizer.decode(query.tolist(), skip_special_tokens=False))
            text = self.policy_tokenizer.decode(response.tolist(), skip_special_tokens=True)
            prompts.append(prompt)
            completions.append(text if isinstance(prompt, str) else [{"role": "assistant", "content": text}])
            read_at.append(end - 1)
        scores = self.reward(prompts=prompts, completions=completions)
        if any(s is None for s in scores):
            raise RemoteError(
                f"{getattr(self.reward, '__name__', 'reward')} returned no score for {scores.count(None)} of "
                f"{len(scores)} PPO samples; PPOTrainer cannot leave a sample out: use on_error='raise'"
            )
        values = torch.full((*input_ids.shape, 1), float("nan"), device=input_ids.device)
        rows = torch.arange(len(read_at), device=input_ids.device)
        values[rows, torch.tensor(read_at, device=input_ids.device), 0] = torch.tensor(
            scores, dtype=torch.float32, device=input_ids.device
        )
        return BaseModelOutputWithPast(last_hidden_state=values, hidden_states=(values,))

    def context_length(self, input_ids: torch.Tensor, mask: torch.Tensor) -> int:
        """Where the left-padded queries end: the last column at which every row's text ends with ``marker``.

        Matched on decoded text, not token ids (BPE splits ``"Answer:"`` differently after a
        space). A response that repeats the marker does so at its own column, not at every row's.
        """
        common: set[int] | None = None
        for row, row_mask in zip(input_ids.tolist(), mask.tolist()):
            text, ends = "", set()
            for column, (token, real) in enumerate(zip(row, row_mask), start=1):
                if not real:
                    continue
                if token not in self._pieces:
                    self._pieces[token] = self.policy_tokenizer.decode([token], skip_special_tokens=False)
                text += self._pieces[token]
                if text.endswith(self.marker):
                    ends.add(column)
            common = ends if common is None else common & ends
        if not common:
            raise InputError(
                f"as_ppo_reward_model: no position ends every PPO query with {self.marker!r}; tokenize prompts with "
                "the policy's apply_chat_template(..., add_generation_prompt=True), or pass "
                "response_start='<text ending every prompt>'"
            )
        return max(common)
