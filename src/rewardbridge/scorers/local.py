"""A colocated Hugging Face reward model: tokenize, plan micro-batches, run the readout.

``LocalScorer`` holds a loaded model; ``loading.py`` builds one from a resolved source,
``tokens.py`` tokenizes and plans the micro-batches, ``readouts.py`` reads the score.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..conversation import Conversation, Renderer
from ..errors import ConfigError, InputError, ScoreError, warn
from ..options import TRUNCATION_MODES
from .base import Scores
from .tokens import DEFAULT_MAX_TOKENS_PER_BATCH, encode, encode_pairs, pad_right, plan_micro_batches


class LocalScorer:
    """Scores conversations with a Hugging Face model in this process.

    Args:
        model: the reward model, in eval mode, on ``device``.
        tokenizer: the reward model's tokenizer.
        renderer: turns a conversation into the text the model reads.
        readout: ``ClassifierReadout``, ``CausalLogitReadout``, ``PairRegressionReadout`` or ``CustomReadout``.
        max_length: tokens per conversation; longer ones follow ``truncation``.
        max_tokens_per_batch: padded tokens per forward (rows x longest).
        lockstep: every rank runs the same number of forwards (ZeRO-3: a forward is a
            collective); ranks with fewer micro-batches, or none, run 1-token forwards.
        engine: whatever must stay alive for ``model`` to work (the DeepSpeed engine).
    """

    def __init__(
        self,
        model,
        tokenizer,
        renderer: Renderer,
        readout,
        *,
        max_length: int,
        truncation: str = "left",
        max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
        device: torch.device | str = "cpu",
        lockstep: bool = False,
        engine: Any = None,
    ):
        if truncation not in TRUNCATION_MODES:
            raise ConfigError(f"truncation={truncation!r} is not one of {TRUNCATION_MODES}")
        if max_tokens_per_batch < 1:
            raise ConfigError(f"max_tokens_per_batch must be positive, got {max_tokens_per_batch}")
        self.model, self.tokenizer, self.renderer, self.readout = model, tokenizer, renderer, readout
        self.max_length, self.truncation = max_length, truncation
        self.max_tokens_per_batch = max_tokens_per_batch
        self.device = torch.device(device)
        self.lockstep, self.engine = lockstep, engine
        self._warned_turns = False
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0

    def tokenize(self, conversations: Sequence[Conversation]) -> tuple[list[list[int]], int]:
        """Token ids per conversation and how many were truncated."""
        ids, truncated, _ = self._encode(conversations)
        return ids, truncated

    def _encode(self, conversations: Sequence[Conversation]) -> tuple[list[list[int]], int, list[list[int]] | None]:
        """(token ids, number truncated, segment ids for a pair model that reads them, else None)."""
        if not conversations:
            return [], 0, None
        if getattr(self.readout, "reads_pairs", False):
            # The question is the prompt's last user turn, as the card reads (question, answer) only.
            if not self._warned_turns and any(not isinstance(c.prompt, str) and len(c.prompt) > 1 for c in conversations):
                self._warned_turns = True
                warn(
                    "kind='pair_regression' reads (question, answer): a prompt with several turns (or a system turn) is "
                    "read as its last user turn only, the earlier turns are not seen by the model (its card reads one "
                    "question); pass one-turn prompts, or a reward model that renders whole conversations"
                )
            segments = getattr(self.readout, "sep_token_id", None) is not None
            ids, truncated, *rest = encode_pairs(
                [c.prompt_text() for c in conversations], [c.completion_text() for c in conversations],
                self.tokenizer, max_length=self.max_length, truncation=self.truncation, with_segments=segments,
            )
            return ids, truncated, (rest[0] if rest else None)
        texts = [render_sample(self.renderer, c, i) for i, c in enumerate(conversations)]
        add_special = [self.renderer.add_special_tokens(c) for c in conversations]
        try:
            ids, truncated = encode(
                texts, self.tokenizer, add_special_tokens=add_special, max_length=self.max_length, truncation=self.truncation
            )
        except DATA_ERRORS as error:  # text the tokenizer cannot take is the sample's, not the model's (never a 500)
            raise InputError(f"the reward tokenizer cannot encode {_failing_text(self.tokenizer, texts)}: "
                             f"{type(error).__name__}: {error}") from None
        empty = [i for i, row in enumerate(ids) if not row]
        if empty:  # alone it cannot run; in a batch it would read a pad position and score 0.0
            raise InputError(f"sample {empty[0]} renders to no tokens ({texts[empty[0]]!r}): there is nothing to score")
        return ids, truncated, None

    def score(self, conversations: Sequence[Conversation]) -> Scores:
        ids, num_truncated, segments = self._encode(conversations)
        return self.score_ids(ids, num_truncated, segments=segments)

    def score_ids(self, ids: list[list[int]], num_truncated: int = 0, check: bool = True,
                  segments: list[list[int]] | None = None) -> Scores:
        """Scores of token id lists (``tokenize``'s), shape (len(ids),) per column; ``segments``: a pair
        model's segment ids (``_encode``'s); ``check=False`` returns NaN or infinite scores as they are
        (the server checks them per request)."""
        batches: list[list[int] | None] = plan_micro_batches([len(s) for s in ids], self.max_tokens_per_batch)
        if self.lockstep:
            batches += [None] * (self._most_batches_on_any_rank(len(batches)) - len(batches))
        values: torch.Tensor | None = None
        attributes: dict[str, torch.Tensor] = {}
        # ZeRO-3 gathers parameters in place during the forward; inference_mode tensors forbid that.
        with torch.no_grad() if self.lockstep else torch.inference_mode():
            for batch in batches:
                if batch is None:  # keep step with the other ranks' forwards
                    dummy = torch.full((1, 1), self.pad_id, dtype=torch.long, device=self.device)
                    self.readout(self.model, dummy, torch.ones_like(dummy))
                    continue
                input_ids, attention_mask = pad_right([ids[i] for i in batch], self.pad_id)
                extra = {}
                if segments is not None:  # the pair's own segment ids, padded with 0 (masked out anyway)
                    extra["token_type_ids"] = pad_right([segments[i] for i in batch], 0)[0].to(self.device)
                value, named = self.readout(self.model, input_ids.to(self.device), attention_mask.to(self.device), **extra)
                index = torch.tensor(batch)
                if value is not None:
                    values = torch.empty(len(ids)) if values is None else values
                    values[index] = value.float().cpu()
                for name, column in named.items():
                    attributes.setdefault(name, torch.empty(len(ids)))[index] = column.float().cpu()
        if values is None and not attributes:
            values = torch.empty(0)
        if check:
            check_finite(values, attributes)
        return Scores(values=values, attributes=attributes, num_truncated=num_truncated)

    def _most_batches_on_any_rank(self, local: int) -> int:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return local
        count = torch.tensor([local], dtype=torch.long, device=self.device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        return int(count.item())


# What a chat template or tokenizer raises for the data it is given: jinja2's TemplateError
# (raise_exception('...') in a template refusing a role order) subclasses Exception, so it is named.
DATA_ERRORS = (ValueError, TypeError, KeyError, IndexError, UnicodeError, RecursionError)


def render_sample(renderer: Renderer, conversation: Conversation, index: int) -> str:
    """``renderer.render(conversation)``; a template that refuses the data raises InputError naming the
    sample (the server answers 422, which clients do not retry)."""
    try:
        return renderer.render(conversation)
    except InputError as error:
        raise InputError(f"sample {index}: {error}") from None
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001: narrowed just below
        if not isinstance(error, DATA_ERRORS) and type(error).__module__.split(".")[0] != "jinja2":
            raise
        raise InputError(f"sample {index} cannot be rendered by the reward model's chat template "
                         f"({type(error).__name__}: {error}); fix the conversation or pass chat_template=") from None


def _failing_text(tokenizer, texts: list[str]) -> str:
    """'sample i': the first text that fails alone (the batch call says only that one did)."""
    for i, text in enumerate(texts):
        try:
            tokenizer([text])
        except Exception:  # noqa: BLE001: this is the one
            return f"sample {i}"
    return f"one of samples 0-{len(texts) - 1}"


def check_finite(values: torch.Tensor | None, attributes: dict[str, torch.Tensor]) -> None:
    """A NaN or infinite score is a failure, never a reward (TRL would drop NaN silently, and train on inf)."""
    for name, column in ([("reward", values)] if values is not None else []) + list(attributes.items()):
        bad = (~torch.isfinite(column)).nonzero().flatten().tolist()
        if bad:
            fix = "Check the checkpoint (NaN weights?) and dtype (float16 overflows: use dtype='bfloat16' or 'float32')"
            raise ScoreError(
                f"the reward model scored {column[bad[0]].item()} ({name}) for sample {bad[0]}"
                f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}: a score must be a finite number. {fix}",
                samples=bad, reason=f"the reward model scored {column[bad[0]].item()} ({name}): a score must be a finite number. {fix}",
            )
