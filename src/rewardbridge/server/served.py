"""The reward model a server serves: the scorer a trainer uses, plus the ZeRO-3 ranks that follow rank 0."""

from __future__ import annotations

import copy
from typing import Any

from ..conversation import Conversation
from ..errors import ConfigError
from ..protocols.base import PLAIN, TEXT
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


class _PlainText(_PreRendered):
    """vLLM's /classify text: tokenized with the tokenizer's special tokens, as vLLM does (a BOS),
    but a text that already starts with the BOS (rendered by a chat template) does not get a second."""

    def __init__(self, tokenizer: Any):
        bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
        # Only a tokenizer that adds a BOS itself (Llama's, not every one) would double a rendered text's.
        adds_bos = bos_id is not None and tokenizer("x", add_special_tokens=True)["input_ids"][:1] == [bos_id]
        self.bos = bos if adds_bos else None

    def render(self, conversation: Conversation) -> str:
        text = conversation.prompt
        return text[len(self.bos):] if self.bos and text.startswith(self.bos) else text

    def add_special_tokens(self, conversation: Conversation) -> bool:
        return True


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
        self.plain_scorer = copy.copy(self.chat_scorer)
        if hasattr(self.text_scorer, "renderer"):
            self.text_scorer.renderer = _PreRendered(resolved.tokenizer, getattr(resolved.renderer, "encoder", False))
            self.plain_scorer.renderer = _PlainText(getattr(self.chat_scorer, "tokenizer", None))
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
            broadcast(("_score", kind, items))
        return self._score(kind, items)

    def score_requests(self, kind: str, groups: list[list]) -> list[Any]:
        """One round of several requests' rows: per request its ``Scores``, or the exception its own
        rows raise (a template or tokenizer refusing them, a NaN score), found without scoring the
        round again; an error no request can be blamed for raises (the batcher splits the round)."""
        if self.broadcast:
            broadcast(("_score_requests", kind, groups))
        return self._score_requests(kind, groups)

    def _score_requests(self, kind: str, groups: list[list]) -> list[Any]:
        from ..errors import InputError, RewardBridgeError
        from ..scorers.local import DATA_ERRORS, check_finite

        scorer = self._scorer(kind)
        # Not a local model (a judge, a pair scorer), or a (question, answer) model whose segment ids
        # tokenize() does not return: one call for all (the batcher splits the round on an error).
        if not hasattr(scorer, "score_ids") or self.reads_pairs:
            whole = self._score(kind, [item for group in groups for item in group])
            return _split(whole, [len(group) for group in groups])
        conversations = [[Conversation(text, "") for text in group] if kind in (TEXT, PLAIN) else group for group in groups]
        tokenized: list[Any] = []
        try:  # one tokenizer call for the round; per request only to find whose rows fail (or to count truncation)
            ids, truncated = scorer.tokenize([c for group in conversations for c in group])
            if truncated:
                raise InputError("recount per request")
            start = 0
            for group in groups:
                tokenized.append((ids[start:start + len(group)], 0))
                start += len(group)
        except (RewardBridgeError, *DATA_ERRORS):
            tokenized = []
            for group in conversations:
                try:
                    tokenized.append(scorer.tokenize(group))
                except (RewardBridgeError, *DATA_ERRORS) as error:
                    tokenized.append(error if isinstance(error, RewardBridgeError) else InputError(f"{type(error).__name__}: {error}"))
        good = [t for t in tokenized if not isinstance(t, BaseException)]
        raw = scorer.score_ids([row for rows, _ in good for row in rows], check=False) if good else None
        out, start = [], 0
        for entry in tokenized:
            if isinstance(entry, BaseException):
                out.append(entry)
                continue
            rows, truncated = entry
            part = Scores(values=raw.values[start:start + len(rows)] if raw.values is not None else None,
                          attributes={name: column[start:start + len(rows)] for name, column in raw.attributes.items()},
                          num_truncated=truncated)
            start += len(rows)
            try:
                check_finite(part.values, part.attributes)  # a NaN fails its own request only
                out.append(self._combined(part))
            except RewardBridgeError as error:
                out.append(error)
        return out

    def _score(self, kind: str, items: list) -> Scores:
        if kind in (TEXT, PLAIN):
            scores = self._scorer(kind).score([Conversation(text, "") for text in items])
        else:
            scores = self.chat_scorer.score(items)
        return self._combined(scores)

    def _scorer(self, kind: str) -> Any:
        return {TEXT: self.text_scorer, PLAIN: self.plain_scorer}.get(kind, self.chat_scorer)

    def _combined(self, scores: Scores) -> Scores:
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


def _split(scores: Scores, sizes: list[int]) -> list[Scores]:
    out, start = [], 0
    for n in sizes:
        out.append(Scores(values=scores.values[start:start + n] if scores.values is not None else None,
                          attributes={name: column[start:start + n] for name, column in scores.attributes.items()}))
        start += n
    return out


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
    """Ranks > 0 under ZeRO-3: score every batch rank 0 broadcasts, until it sends None.

    A launcher's SIGTERM or a Ctrl-C reaches every rank; these ranks ignore it, since rank 0's
    drain of its in-flight requests needs them, and rank 0 then releases them. (A rank 0 that
    dies outright fails the broadcast here, so nothing is left waiting; torchrun kills a rank
    that outlives its stop timeout.)
    """
    import signal

    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, signal.SIG_IGN)
    while True:
        message = broadcast(None)
        if message is None:
            return
        method, kind, payload = message
        try:
            getattr(model, method)(kind, payload)
        except Exception:  # noqa: BLE001: rank 0 met the same error and answers it; keep following
            continue
