"""Colocated Hugging Face reward models: readouts and token-budget micro-batching.

A batch of rollouts is skewed: many short responses, a few long ones. One right-padded
forward (TRL's own reward-model path) pays for ``B x max_len`` tokens. Here inputs are
sorted by length and cut into micro-batches whose padded size stays under a token budget,
so a forward pays for little more than the real tokens, and the peak memory is bounded.
Right padding keeps every real position's computation identical to scoring it alone
(causal attention never looks right), so scores match unbatched scoring.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from ..conversation import Conversation, Renderer
from ..errors import ConfigError, InputError
from ..options import TRUNCATION_MODES
from .base import Scores

DEFAULT_MAX_TOKENS_PER_BATCH = 16384
# What one extra forward call costs, in padded-token equivalents: it keeps the planner from
# splitting a batch into many tiny forwards to save a little padding.
FORWARD_OVERHEAD_TOKENS = 256


def default_device() -> torch.device:
    """This process's GPU when there is one (LOCAL_RANK picks it under a launcher), else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"`` is bfloat16 on a GPU and float32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return getattr(torch, dtype)
    except AttributeError:
        raise ConfigError(f"dtype={dtype!r} is not a torch dtype; use 'auto', 'float32', 'bfloat16' or 'float16'") from None


def encode(
    texts: Sequence[str],
    tokenizer: Any,
    *,
    add_special_tokens: bool,
    max_length: int,
    truncation: str = "left",
) -> tuple[list[list[int]], int]:
    """Tokenize texts, fitting each into ``max_length`` tokens.

    ``truncation="left"`` drops the oldest tokens and keeps the end of the response, where
    the score is read; a leading BOS is kept. ``"error"`` raises on the first over-long text.

    Returns:
        (token id lists, number truncated)
    """
    if truncation not in TRUNCATION_MODES:
        raise ConfigError(f"truncation={truncation!r} is not one of {TRUNCATION_MODES}")
    ids = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    num_truncated = 0
    for i, seq in enumerate(ids):
        if len(seq) <= max_length:
            continue
        if truncation == "error":
            raise InputError(
                f"conversation {i} has {len(seq)} tokens > max_length {max_length}; "
                "set truncation='left' or raise max_length"
            )
        keep_bos = bos is not None and seq[0] == bos
        ids[i] = ([bos] if keep_bos else []) + seq[len(seq) - max_length + int(keep_bos):]
        num_truncated += 1
    return ids, num_truncated


def encode_pairs(
    questions: Sequence[str],
    answers: Sequence[str],
    tokenizer: Any,
    *,
    max_length: int,
    truncation: str = "left",
) -> tuple[list[list[int]], int]:
    """Tokenize (question, answer) pairs as the BERT RewardModel card does, fitting ``max_length``.

    ``tokenizer(question, answer, return_token_type_ids=False)``: the tokenizer adds its own
    special tokens (``[CLS] q [SEP] a [SEP]``). An over-long pair loses the question's oldest
    tokens first, then the answer's first tokens, never the answer's end nor a special token.

    Returns:
        (token id lists, number truncated)
    """
    if truncation not in TRUNCATION_MODES:
        raise ConfigError(f"truncation={truncation!r} is not one of {TRUNCATION_MODES}")
    encoded = tokenizer(list(questions), list(answers), return_token_type_ids=False)
    ids = encoded["input_ids"]
    num_truncated = 0
    for i, seq in enumerate(ids):
        if len(seq) <= max_length:
            continue
        if truncation == "error":
            raise InputError(
                f"(question, answer) pair {i} has {len(seq)} tokens > max_length {max_length}; "
                "set truncation='left' or raise max_length"
            )
        owner = encoded.sequence_ids(i)  # per token: 0 question, 1 answer, None special
        excess, drop = len(seq) - max_length, set()
        for part in (0, 1):  # question first (oldest tokens first), then the answer's start
            for position, who in enumerate(owner):
                if excess and who == part:
                    drop.add(position)
                    excess -= 1
        if excess:
            raise ConfigError(f"max_length {max_length} is smaller than the tokenizer's special tokens; raise max_length")
        ids[i] = [token for position, token in enumerate(seq) if position not in drop]
        num_truncated += 1
    return ids, num_truncated


def plan_micro_batches(
    lengths: Sequence[int], max_tokens_per_batch: int, overhead_tokens: int = FORWARD_OVERHEAD_TOKENS
) -> list[list[int]]:
    """Split indices into micro-batches that cost the fewest padded tokens.

    Indices are sorted longest first and cut into contiguous runs; a run costs
    ``rows x longest`` padded tokens plus ``overhead_tokens`` for the forward call itself, and
    must fit ``max_tokens_per_batch`` (a sequence longer than that rides alone). The best cut
    is found exactly by dynamic programming over the sorted lengths, O(n x rows per batch).

    >>> plan_micro_batches([5, 100, 6, 90], max_tokens_per_batch=200)
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    sorted_lengths = [lengths[i] for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest cost of the first j sequences
    cut = [0] * (n + 1)  # cut[j]: where the last run of that cheapest plan starts
    for end in range(1, n + 1):
        # The run start..end-1 has rows = end - start; its longest member is sorted_lengths[start].
        for start in range(end - 1, -1, -1):
            padded = (end - start) * sorted_lengths[start]
            if padded > max_tokens_per_batch and start < end - 1:
                break  # going further back only adds rows and length
            cost = best[start] + padded + overhead_tokens
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches = []
    end = n
    while end > 0:
        batches.append(order[cut[end]:end])
        end = cut[end]
    return batches[::-1]


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns input_ids and attention_mask, both shape (b, longest)."""
    longest = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for row, seq in enumerate(seqs):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


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
    reads_pairs: ClassVar[bool] = True  # LocalScorer encodes (question, answer), not rendered text

    def __call__(self, model, input_ids, attention_mask) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        kwargs = {"alpha": self.alpha} if _accepts(type(model), "alpha") else {}
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
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0

    def tokenize(self, conversations: Sequence[Conversation]) -> tuple[list[list[int]], int]:
        if not conversations:
            return [], 0
        if getattr(self.readout, "reads_pairs", False):
            # The question is the prompt's last user turn (a multi-turn prompt's earlier turns are not read).
            return encode_pairs(
                [c.prompt_text() for c in conversations], [c.completion_text() for c in conversations],
                self.tokenizer, max_length=self.max_length, truncation=self.truncation,
            )
        texts = [self.renderer.render(c) for c in conversations]
        add_special = self.renderer.add_special_tokens(conversations[0])
        return encode(
            texts, self.tokenizer, add_special_tokens=add_special, max_length=self.max_length, truncation=self.truncation
        )

    def score(self, conversations: Sequence[Conversation]) -> Scores:
        ids, num_truncated = self.tokenize(conversations)
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
                value, named = self.readout(self.model, input_ids.to(self.device), attention_mask.to(self.device))
                index = torch.tensor(batch)
                if value is not None:
                    values = torch.empty(len(ids)) if values is None else values
                    values[index] = value.float().cpu()
                for name, column in named.items():
                    attributes.setdefault(name, torch.empty(len(ids)))[index] = column.float().cpu()
        if values is None and not attributes:
            values = torch.empty(0)
        return Scores(values=values, attributes=attributes, num_truncated=num_truncated)

    def _most_batches_on_any_rank(self, local: int) -> int:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return local
        count = torch.tensor([local], dtype=torch.long, device=self.device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        return int(count.item())


def load_local_scorer(source: str, options) -> LocalScorer:
    """Build a :class:`LocalScorer` from a model directory or hub id and ``RewardOptions``.

    Everything that can be checked without the weights (device, kind, custom code, output
    count, token strings, the chat template, the ZeRO-3 config) is checked first: loading a
    70B model takes minutes, and a typo should not cost them.
    """
    from transformers import AutoTokenizer

    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        warnings.warn(
            f"dtype={options.dtype!r} on CPU: most CPUs emulate half precision, often many times slower than "
            "float32; use dtype='auto' (float32 on CPU) unless you measured otherwise",
            stacklevel=3,
        )
    zero3_config = None
    if options.zero3:
        from .zero3 import resolve_config

        zero3_config = resolve_config(options.zero3, dtype)
    common = {"trust_remote_code": options.trust_remote_code, **gguf_kwargs(options.gguf_file)}
    config = config_dict(source, options)
    kind, kind_why = resolve_kind(source, options, config)
    options.check_applies_to_kind(kind)
    model_class = model_class_for(kind, source, options, config)  # refuses custom code before anything loads
    # Several named outputs without attribute_weights still load: `rewardbridge score` labels data with
    # them; as a TRL reward they need weights, which RewardFunction.combine says on the first call.
    check_output_count(config, kind, options.attributes)
    trained = config.get("max_position_embeddings")
    if options.max_length and trained and options.max_length > trained:
        warnings.warn(
            f"max_length={options.max_length} is beyond the model's max_position_embeddings={trained}: "
            "positions past it were never trained and their scores are not to be trusted; lower max_length",
            stacklevel=3,
        )

    tokenizer_kwargs = {"trust_remote_code": options.trust_remote_code}
    if options.gguf_file and not options.tokenizer:
        tokenizer_kwargs["gguf_file"] = options.gguf_file
    tokenizer = from_pretrained_or_explain(AutoTokenizer, options.tokenizer or source, "tokenizer", **tokenizer_kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if kind == "causal_logit":
        token_ids_for(options.token_id, tokenizer)  # a token string that is not one token fails here, not after the load
    renderer = Renderer(
        tokenizer=tokenizer,
        mode=options.render,
        chat_template=options.chat_template,
        judge_prompt=options.judge_prompt,
        **({"system_prompt": options.system_prompt} if options.system_prompt else {}),
    )

    # Only now the weights.
    engine = None
    if zero3_config is not None:
        from .zero3 import load_zero3_model

        engine, model = load_zero3_model(model_class, source, zero3_config, device, dtype=dtype, **common)
    else:
        from .zero3 import deepspeed_config_scope

        with deepspeed_config_scope() as hf_deepspeed:
            hf_deepspeed.unset_hf_deepspeed_config()  # load whole even beside a ZeRO-3 trainer
            model = from_pretrained_or_explain(model_class, source, "model", dtype=dtype, **common)
        model.to(device)
    model.eval().requires_grad_(False)
    if getattr(model.config, "pad_token_id", None) is None:
        # Sequence classifiers find each row's last token by pad_token_id; without it a batch fails.
        model.config.pad_token_id = tokenizer.pad_token_id

    readout = readout_for(kind, options, tokenizer, model)
    explain_choice(source, kind, kind_why, describe_input(readout, renderer))
    return LocalScorer(
        model,
        tokenizer,
        renderer,
        readout,
        max_length=options.max_length or model_max_length(tokenizer, model.config),
        truncation=options.truncation,
        max_tokens_per_batch=options.max_tokens_per_batch or DEFAULT_MAX_TOKENS_PER_BATCH,
        device=device,
        lockstep=zero3_config is not None,
        engine=engine,
    )


def resolve_device(device: str) -> torch.device:
    """``"auto"``: this rank's GPU if there is one, else CPU; a GPU asked for must exist."""
    if device == "auto":
        return default_device()
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r}, but this machine has no CUDA GPU (torch.cuda.is_available() is False); use device='cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r}, but this machine has {torch.cuda.device_count()} GPU(s); use an index below that, or 'auto'")
    return resolved


def from_pretrained_or_explain(auto_class, source: str, what: str, **kwargs):
    """``auto_class.from_pretrained``, with transformers' hub errors turned into what to do."""
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except OSError as error:
        raise ConfigError(
            f"cannot load the {what} of {source!r}: it is not a local folder, and the hub did not provide it "
            f"({' '.join(str(error).split())[:300]}). Pass a local model directory, or a hub id this machine can reach"
        ) from error


def check_output_count(config: dict, kind: str, attributes) -> None:
    """A classifier head's outputs must match ``attributes``; several unnamed outputs are an error.

    Reading output 0 of a multi-output head without a word would score with one attribute
    (or one class logit) and call it the reward.
    """
    if kind not in ("classifier", "attributes"):
        return
    # transformers saves id2label for every classifier; num_labels is derived from it.
    outputs = len(config["id2label"]) if config.get("id2label") else config.get("num_labels", 1)
    if attributes and len(attributes) != outputs:
        raise ConfigError(
            f"the reward model has {outputs} outputs but attributes names {len(attributes)}: "
            f"{list(attributes)}; pass one name per output, in output order"
        )
    if not attributes and outputs > 1:
        raise ConfigError(
            f"the reward model has {outputs} outputs (config.num_labels), and no attributes were given to say which is which; "
            "pass attributes=[names in output order] and attribute_weights to combine them"
        )


# Config classes in these auto_map entries are the model's own code (ArmoRM, the BERT RewardModel).
MODEL_AUTO_CLASSES = ("AutoModelForSequenceClassification", "AutoModel")


def config_dict(source: str, options) -> dict:
    """config.json as a plain dict: read without running any of the model's own code."""
    from transformers import AutoConfig, PretrainedConfig

    if options.gguf_file:  # a GGUF file carries a standard architecture, never custom code
        return from_pretrained_or_explain(AutoConfig, source, "config", gguf_file=options.gguf_file).to_dict()
    try:
        return PretrainedConfig.get_config_dict(source)[0]
    except OSError as error:
        raise ConfigError(
            f"cannot load the config of {source!r}: it is not a local folder with a config.json, and the hub did not "
            f"provide it ({' '.join(str(error).split())[:300]}). Pass a local model directory, or a hub id this machine can reach"
        ) from error


def resolve_kind(source: str, options, config: dict) -> tuple[str, str]:
    """The readout kind and why it was chosen: the option (or a preset), else the model config."""
    if options.kind is not None:
        return options.kind, f"kind={options.kind!r} was given (or set by a preset)"
    from ..presets import explain_kind

    kind, why = explain_kind(config)
    if kind is None:
        raise ConfigError(
            f"cannot tell what kind of reward model {source!r} is ({why}); pass kind= one of "
            "'classifier', 'causal_logit', 'attributes', 'pair_regression', 'custom'"
        )
    return kind, why


def model_class_for(kind: str, source: str, options, config: dict):
    """The transformers Auto class that loads ``kind``; custom code only with ``trust_remote_code``."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    if kind == "causal_logit":
        return AutoModelForCausalLM
    if kind not in ("pair_regression", "custom"):
        return AutoModelForSequenceClassification
    auto_map = config.get("auto_map") or {}
    mapped = [name for name in MODEL_AUTO_CLASSES if name in auto_map]
    if mapped and not options.trust_remote_code:
        raise ConfigError(
            f"{source} needs its own modelling code (config.json auto_map: {auto_map[mapped[0]]}), which runs only "
            "with trust_remote_code=True; read that code, then pass trust_remote_code=True "
            "(--option trust_remote_code=true on the command line)"
        )
    if kind == "custom" and not mapped:
        raise ConfigError(
            f"kind='custom' loads a model's own code, but {source}/config.json maps none of {list(MODEL_AUTO_CLASSES)} "
            "in auto_map; use kind='classifier' for a standard sequence classifier"
        )
    return AutoModelForSequenceClassification if "AutoModelForSequenceClassification" in mapped or not mapped else AutoModel


def readout_for(kind: str, options, tokenizer, model):
    """The readout of ``kind``: what is read from the model's output, per the model card."""
    if kind == "causal_logit":
        return CausalLogitReadout(token_ids_for(options.token_id, tokenizer))
    if kind == "pair_regression":
        if options.alpha != 1.0 and not _accepts(type(model), "alpha"):
            raise ConfigError(
                f"alpha={options.alpha} but {type(model).__name__}.forward takes no alpha; pass alpha=1 (its output is read as is)"
            )
        return PairRegressionReadout(alpha=float(options.alpha))
    if kind == "custom":
        return CustomReadout(options.attributes)
    return ClassifierReadout(options.attributes)


def describe_input(readout, renderer: Renderer) -> str:
    """What the model reads, in words, for the one-time log line about an unknown model."""
    if getattr(readout, "reads_pairs", False):
        return "(question, answer) pair: the prompt's last user turn and the completion"
    if renderer.mode != "auto":
        return f"render={renderer.mode!r} as given"
    if renderer.judge_prompt:
        return "judge: judge_prompt as one user turn"
    if renderer.has_chat_template:
        return "chat: the reward tokenizer's chat template"
    return "text: prompt + completion with the tokenizer's special tokens (the tokenizer has no chat template)"


def explain_choice(source: str, kind: str, kind_why: str, input_why: str) -> None:
    from ..presets import log_unknown_model

    log_unknown_model(source, kind, kind_why, input_why)


def gguf_kwargs(gguf_file: str | None) -> dict:
    """from_pretrained arguments for a GGUF checkpoint, unpacked into a plain dense model.

    Without ``dequantize=True`` transformers may mark the model as quantized, and TRL's
    Trainer then refuses to train it as a policy.
    """
    if not gguf_file:
        return {}
    from transformers import GgufConfig

    return {"gguf_file": gguf_file, "quantization_config": GgufConfig(gguf_file=gguf_file, dequantize=True)}


def token_ids_for(token_id, tokenizer) -> tuple[int, ...]:
    """``0`` -> (0,); ``("Yes", "No")`` -> their single-token ids."""
    wanted = token_id if isinstance(token_id, (tuple, list)) else (token_id,)
    if len(wanted) not in (1, 2):
        raise ConfigError(f"token_id must be one token or a (yes, no) pair, got {token_id!r}")
    ids = []
    for token in wanted:
        if isinstance(token, str):
            pieces = tokenizer.encode(token, add_special_tokens=False)
            if len(pieces) != 1:
                raise ConfigError(
                    f"token_id {token!r} is {len(pieces)} tokens for this tokenizer ({pieces}); pass one token (or its id)"
                )
            token = pieces[0]
        if not 0 <= int(token) < len(tokenizer):
            raise ConfigError(f"token_id {token} is outside the vocabulary (size {len(tokenizer)}); pass an id below that")
        ids.append(int(token))
    return tuple(ids)


def model_max_length(tokenizer, config) -> int:
    """The model's own limit: the tokenizer's, else the position embeddings'."""
    limits = [getattr(config, "max_position_embeddings", None)]
    if getattr(tokenizer, "model_max_length", None) and tokenizer.model_max_length < 10**7:
        limits.append(tokenizer.model_max_length)  # tokenizers without a limit say ~1e30
    limits = [n for n in limits if n]
    return min(limits) if limits else 4096
