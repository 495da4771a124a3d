"""A tiny BERT pair reward model, copied into a saved model folder as its custom code.

Shaped like nicholasKluge/RewardModel: a BERT encoder reads ``[CLS] question [SEP] answer
[SEP]``; a linear head on the [CLS] state, squashed to [-1, 1] by tanh, times ``alpha``
(the card calls ``model(**tokens, alpha=10)``). Returns a tensor of shape (b, 1).
"""

import torch
from torch import nn
from transformers import BertConfig, BertModel, PreTrainedModel


class PairRewardConfig(BertConfig):
    model_type = "tiny_pair_reward"


class RewardModel(PreTrainedModel):
    config_class = PairRewardConfig
    base_model_prefix = "bert"

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, alpha=1):
        cls = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]  # (b, H)
        return torch.tanh(self.head(cls)) * alpha  # (b, 1)
