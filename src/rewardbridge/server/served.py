"""The reward model a server serves: the scorer a trainer uses, plus the ZeRO-3 ranks that follow rank 0."""

from __future__ import annotations

import copy
from typing import Any

from ..conversation import Conversation
from ..errors import ConfigError
from ..protocols.base import TEXT
from ..scorers.base import Scores


class _PreRendered:
    """A renderer for text that is already what the model reads (Triton sentences, OpenRLHF queries).

    A decoder's text is tokenized as it is (as OpenRLHF's serve_rm: ``add_special_tokens=False``); an
    encoder's gets its [CLS] ... [SEP] unless the text already opens with them, as in-process scoring
    gives them (``Renderer.add_special_tokens``), so a text route scores what ``load_reward`` scores.
    """

    def __init__(self, tokenizer=None, encoder: bool = False):
        self.lead = None
        if encoder and tokenizer is not None:
            ids = tokenizer("", add_special_tokens=True)["input_ids"]
            self.lead = tokenizer.convert_ids_to_tokens(ids[0]) if ids else None

    def render(self, conversation: Conversation) -> str:
        return conversation.prompt

    def add_special_tokens(self, conversation: Conversation) -> bool:
        return self.lead is not None and not conversation.prompt.lstrip().startswith(self.lead)


class ServedModel:
    """The reward model being served: ``score(kind, items) -> Scores`` (values combined by weights).

    Args:
        source, options: as for ``load_reward`` (normalization belongs to the trainer).
        broadcast: ZeRO-3 rank 0: hand each batch to the other ranks before scoring it.
        resolved: ``check_serve_options``'s answer, when the caller already has it.
    """

    def __init__(self, source: str, options: dict, broadcast: bool = False, resolved: Any = None):
        from ..reward_fn import RewardFunction
        from ..scorers import build_scorer

        resolved = resolved or check_serve_options(source, options)
        self.reward = RewardFunction(resolved.source, resolved.options, scorer=build_scorer(resolved))
        self.chat_scorer = self.reward.scorer
        self.text_scorer = copy.copy(self.chat_scorer)
        if hasattr(self.text_scorer, "renderer"):
            self.text_scorer.renderer = _PreRendered(resolved.tokenizer, getattr(resolved.renderer, "encoder", False))
        # A (question, answer) pair model cannot read rendered text: the text routes refuse it (app.py).
        self.reads_pairs = bool(getattr(getattr(self.chat_scorer, "readout", None), "reads_pairs", False))
        self.broadcast = broadcast
        model = getattr(self.chat_scorer, "model", None)
        if model is not None:
            from ..scorers.zero3 import partitioned_param_bytes  # imports no deepspeed

            # Under ZeRO-3: this rank's shard only (/ready reports it).
            self.parameter_bytes = partitioned_param_bytes(model)
        else:
            self.parameter_bytes = None

    def score(self, kind: str, items: list) -> Scores:
        if self.broadcast:
            broadcast((kind, items))
        return self._score(kind, items)

    def _score(self, kind: str, items: list) -> Scores:
        if kind == TEXT:
            scores = self.text_scorer.score([Conversation(text, "") for text in items])
        else:
            scores = self.chat_scorer.score(items)
        values = None
        if self.reward.options.attribute_weights is not None or scores.values is not None:
            values = self.reward.combine(scores)
        return Scores(values=values, attributes=scores.attributes, num_truncated=scores.num_truncated)

    @property
    def columns(self) -> int:
        """Triton's ``rewards`` width: 1, or the attribute count when there is no single reward."""
        opts = self.reward.options
        if opts.attribute_weights is None and opts.attributes and len(opts.attributes) > 1:
            return len(opts.attributes)
        return 1


def check_serve_options(source: str, options: dict):
    """Resolve what will be served (``resolve.py``: every weight-free check), refusing what a server
    cannot honour, before the model loads; returns the ``Resolved``."""
    from ..options import RewardOptions
    from ..resolve import resolve

    opts = RewardOptions.from_kwargs(**options)  # unknown names and bad values fail here, early
    if opts.normalize != "none":
        raise ConfigError(
            "--option normalize=... is per prompt over a trainer's batch; a server scores requests, so normalize in the "
            "trainer: load_reward(url, protocol=..., normalize=...)"
        )
    return resolve(source, **options)  # protocol=, timeout=, ... on a local model and a missing folder fail here


def broadcast(message: Any) -> Any:
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def follow_rank0(model: ServedModel) -> None:
    """Ranks > 0 under ZeRO-3: score every batch rank 0 broadcasts, until it sends None."""
    while True:
        message = broadcast(None)
        if message is None:
            return
        kind, items = message
        try:
            model._score(kind, items)
        except Exception:  # noqa: BLE001: rank 0 met the same error and answers it; keep following
            continue
