"""A tiny ArmoRM-shaped reward model, copied into a saved model folder as its custom code.

Like ArmoRM-Llama3-8B-v0.1's modeling_custom.py: a Llama backbone; the hidden state at each
row's last token goes through a regression layer (K objectives, ``output.rewards``); a gating
layer reads the hidden state at the last assistant-header token and weights the objectives
into ``output.score``. Loaded through config.json's ``auto_map`` with trust_remote_code=True.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel, PreTrainedModel
from transformers.utils import ModelOutput


class TinyArmoConfig(LlamaConfig):
    model_type = "tiny_armorm"

    def __init__(self, num_objectives=5, gating_token_id=4, **kwargs):
        self.num_objectives = num_objectives
        self.gating_token_id = gating_token_id
        super().__init__(**kwargs)


@dataclass
class CustomOutput(ModelOutput):
    rewards: Optional[torch.FloatTensor] = None  # (b, K)
    gating_output: Optional[torch.FloatTensor] = None  # (b, K)
    score: Optional[torch.FloatTensor] = None  # (b,)
    logits: Optional[torch.FloatTensor] = None  # (b,), as ArmoRM


class TinyArmoRewardModel(PreTrainedModel):
    config_class = TinyArmoConfig
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.regression_layer = nn.Linear(config.hidden_size, config.num_objectives, bias=False)
        self.gating = nn.Linear(config.hidden_size, config.num_objectives)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (b, T, H)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        # ArmoRM: the last token is the one before the first pad (modulo: no pad -> the last position).
        last = (torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1) % input_ids.shape[-1]
        rewards = self.regression_layer(hidden[rows, last])  # (b, K)
        is_gate = torch.eq(input_ids, self.config.gating_token_id).int()
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        gate_at = (is_gate * positions).amax(-1)  # last assistant-header token, 0 if none
        gating = torch.softmax(self.gating(hidden[rows, gate_at]), dim=-1)  # (b, K)
        score = (gating * rewards).sum(-1)
        return CustomOutput(rewards=rewards, gating_output=gating, score=score, logits=score)
