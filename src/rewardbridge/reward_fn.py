"""The TRL-facing reward callable and ``load_reward``.

TRL calls each entry of ``reward_funcs`` as ``f(prompts=, completions=, completion_ids=,
**kwargs)`` and wants one float (or None) per completion. Any ``nn.Module`` would be taken
for a sequence classifier and called with tensors, so ``RewardFunction`` is a plain class
that holds its scorer; it pickles as ``source`` + options and rebuilds the scorer on first
use in the new process (TRL's async GRPO ships reward functions to a child process).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .conversation import Conversation, text_or_messages, conversations_from_trl
from .errors import ConfigError, InputError, RewardBridgeWarning, warn  # noqa: F401 (RewardBridgeWarning: its old home)
from .normalize import (
    clip_rewards,
    combine_attributes,
    normalize_across_ranks,
)
from .options import RewardOptions
from .reward_names import claim_name, default_name  # noqa: F401 (default_name: its old home)
from .scorers.base import Scorer, Scores

if TYPE_CHECKING:  # torch is imported where it is used: building a remote reward needs none (issue 18)
    import torch

REFERENCE_CACHE_SIZE = 100_000


def load_reward(source: str, **options: Any) -> RewardFunction:
    """Load a reward model as a TRL reward function.

    Args:
        source: a local directory or hub id of a Hugging Face reward model, or a reward
            endpoint: an ``http(s)://`` URL, several as a list or comma-separated (load is
            spread over them and a failed request moves to the next).
        protocol: what a URL speaks: ``"nim"`` (/v1/chat/completions, one conversation per
            request), ``"triton"`` (NeMo-Aligner's KServe v2 ``reward_model``, SteerLM text),
            ``"vllm"`` (/classify), ``"openrlhf"`` (/get_reward), ``"rewardbridge"``
            (``rewardbridge serve``'s /v1/score), or a generative judge over chat completions:
            ``"genrm"`` (compares a prompt's responses in pairs: ``pairs``, ``judges_per_pair``,
            ``length_penalty``, ``on_parse_failure``, ...) or ``"principle"`` (yes/no logprobs:
            ``principle``/``principle_column``, ``token_id``); see docs/genrm.md.
        timeout, max_retries, retry_wait: seconds per request (default 60); retries on
            connection errors, timeouts, 5xx and 429 (default 4), with exponential backoff
            from ``retry_wait`` seconds (default 0.5, jittered, capped at 30 s, a server's
            Retry-After wins); other 4xx are never retried.
        max_concurrency, request_batch_size: requests in flight (default 32); conversations
            per request where the protocol batches (default 64).
        api_key_env: the NAME of the environment variable holding the endpoint's key (sent as
            ``Authorization: Bearer``; default ``NVIDIA_API_KEY`` for nim,
            ``REWARDBRIDGE_API_KEY`` for rewardbridge, ``VLLM_API_KEY`` for vllm). The key is
            read once per call (held while it lasts: a change shows in the next call), never logged or pickled.
        model_name: the endpoint's model (``"model"`` field; Triton's model name), default
            ``"reward_model"``.
        on_error: a request that still fails after its retries raises ``RemoteError``
            (``"raise"``, default) or scores None for its samples (``"skip"``; TRL leaves
            them out, ``<name>/failed_frac`` counts them).
        kind: ``"classifier"`` (sequence classifier, ``logits[:, 0]``), ``"causal_logit"``
            (a next-token logit), ``"attributes"`` (a multi-output head combined by
            ``attribute_weights``), ``"pair_regression"`` (a (question, answer) pair model called
            with ``alpha``, nicholasKluge/RewardModel), ``"custom"`` (custom code whose output has
            ``.score`` and ``.rewards``, ArmoRM); None infers it from presets and the model config.
        alpha: pair_regression: the multiplier the model's forward takes (the card uses 10).
        trust_remote_code: run modelling code shipped with the model (pair_regression, custom);
            never switched on by a preset.
        token_id: causal_logit: the token whose next-token logit is the reward (an id or a
            one-token string), or a (yes, no) pair read as logit(yes) - logit(no).
        attributes / attribute_weights: names of a multi-output head in output order, and
            the weights (a list, or a dict by name) that combine them into one reward.
        max_length: tokens per conversation (default: the model's limit); longer ones follow
            ``truncation``: ``"left"`` drops the oldest tokens, ``"error"`` raises.
        max_tokens_per_batch: padded tokens per forward pass (default by device: 16384 on a
            GPU, 4096 on a CPU, measured by ``benchmarks/token_budget.py``).
        normalize: ``"none"``, or per prompt ``"center"``, ``"zscore"``, ``"rank"``,
            ``"reference"`` (minus the score of ``reference_column``'s response); ``std_floor``
            bounds zscore's divisor; ``clip`` clamps afterwards;
            ``normalize_target="attributes"`` normalizes each attribute before weighting.
        zero3: shard the model across the training processes with DeepSpeed ZeRO-3
            (``True``, a DeepSpeed config dict, or a JSON path such as
            ``configs/deepspeed/zero3_offload_cpu.json``). Load rewards before the trainer.
        render: ``"auto"`` | ``"chat"`` | ``"text"`` | ``"judge"`` | ``"steerlm"``; with
            ``chat_template``, ``judge_prompt`` (``{prompt}``/``{response}``), ``system_prompt``
            (the system turn of a conversation that has none), ``tokenizer`` (a different
            tokenizer directory). Template and prompt options take the text, not a file's name.
        device, dtype: where and how the model runs (``"auto"``: this rank's GPU in bfloat16,
            else CPU in float32). ``gguf_file`` loads a GGUF checkpoint in ``source``.
        name: the metric name in TRL's logs (default from ``source``).

    Example::

        reward = load_reward("Skywork/Skywork-Reward-V2-Llama-3.1-8B", normalize="zscore")
        trainer = GRPOTrainer(model=..., reward_funcs=[reward], ...)
        reward(prompts=["2+2="], completions=[" 4"])  # -> [float]
    """
    from .resolve import resolve
    from .scorers import build_scorer

    resolved = resolve(source, **options)
    return RewardFunction(resolved.source, resolved.options, scorer=build_scorer(resolved))


class RewardFunction:
    """A reward model as a TRL reward function: ``f(prompts=, completions=, **kw) -> list[float | None]``.

    Build it with :func:`load_reward`. ``__name__`` is the metric name TRL logs under
    (``rewards/<name>/mean``); rewardbridge's own metrics are ``<name>/...``.
    """

    def __init__(self, source: str, options: RewardOptions, scorer: Scorer | None = None):
        self.source = source
        self.options = options
        self.__name__ = options.name or default_name(source, options)
        self._scorer = scorer if scorer is not None else _load_scorer(source, options)
        self._reference_cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._warned: set[str] = set()
        claim_name(self)

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:  # after unpickling: rebuild in this process
            self._scorer = _load_scorer(self.source, self.options)
        return self._scorer

    def __getstate__(self) -> dict:
        return {"source": self.source, "options": self.options, "__name__": self.__name__}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._scorer = None
        self._reference_cache = OrderedDict()
        self._warned = set()

    def __repr__(self) -> str:
        return f"RewardFunction({self.source!r}, name={self.__name__!r})"

    def as_ppo_reward_model(self, policy_tokenizer: Any, response_start: str | None = None):
        """This reward as TRL 1.12 ``PPOTrainer(reward_model=...)``: see ``integrations/trl_ppo.py``."""
        from .integrations.trl_ppo import PPORewardModel

        return PPORewardModel(self, policy_tokenizer, response_start)

    def __call__(
        self,
        prompts: Sequence,
        completions: Sequence,
        completion_ids: Sequence | None = None,
        *,
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        try:
            conversations = conversations_from_trl(prompts, completions)  # a bare string, an empty sample: refused here
        except InputError as error:
            # A scorer that gathers whole groups has the other ranks waiting in its collective:
            # it raises this error on every rank together.
            fail = getattr(self.scorer, "raise_together", None)
            if fail is not None:
                fail(error)
            raise
        if self.options.normalize == "reference":
            self._check_reference_column(columns, len(conversations))
        # Called even with no conversations: a ZeRO-3 scorer's forwards are collectives, as is a
        # generative judge's gather of whole groups (which may read dataset columns: principle_column).
        scorer = self.scorer
        scores = scorer.score(conversations, columns) if getattr(scorer, "reads_columns", False) else scorer.score(conversations)
        if len(scores) != len(conversations):
            raise RuntimeError(f"{self.__name__}: the scorer returned {len(scores)} scores for {len(conversations)} conversations")
        if scores.num_truncated:
            self._warn_once(
                "truncated",
                f"{self.__name__}: {scores.num_truncated} of {len(conversations)} conversations were longer than "
                f"max_length={getattr(self.scorer, 'max_length', '?')} tokens and lost their oldest tokens "
                f"(truncation='left'); counted in {self.__name__}/truncated_frac. Raise max_length, or set "
                "truncation='error' to refuse them",
            )
        raw = self.combine(scores)  # (B,)
        rewards, group_stats = self.normalize(raw, scores, conversations, columns)
        rewards = self.check_final(raw, clip_rewards(rewards, self.options.clip).float(), scores)
        if log_metric is not None or log_extra is not None:
            self._log(raw, rewards, scores, group_stats, log_metric, log_extra)
        # NaN (a score that could not be had) goes back as None: TRL leaves it out.
        return [None if math.isnan(r) else r for r in rewards.tolist()]

    def check_final(self, raw: torch.Tensor, rewards: torch.Tensor, scores: Scores | None = None) -> torch.Tensor:
        """The float32 rewards TRL gets, (B,): every finite score must stay finite through attribute weights,
        normalize and clip (1e38 + 1e38 is inf in float32). One that does not is a failure by the
        ``on_error`` rule: ScoreError naming the samples, or under "skip" NaN (None to TRL) and a warning."""
        import torch

        from .errors import ScoreError

        # NaN alone is a score that could not be had (a skipped remote failure, a failed reference): None, as
        # before. Infinity, or a NaN combined from finite scores (1e38 * 4 - 1e38 * 4 is inf - inf), is an overflow.
        overflow = torch.isinf(rewards) | torch.isinf(raw)
        if scores is not None and len(raw):
            columns = ([scores.values] if scores.values is not None else []) + list(scores.attributes.values())
            finite = torch.stack([torch.isfinite(c.float()) for c in columns]).all(dim=0) if columns else torch.ones_like(raw, dtype=torch.bool)
            overflow |= torch.isnan(raw) & finite
        if not len(raw) or not overflow.any():  # one op for the common case, not nonzero + flatten + tolist
            return rewards
        bad = overflow.nonzero().flatten().tolist()
        reason = (f"the scores are finite numbers but the reward is {rewards[bad[0]].item()} after attribute_weights, normalize "
                  "and clip (float32, up to +-3.4e38): a reward must be a finite number. Scale attribute_weights down, or check "
                  "the model's scale")
        message = f"{self.__name__}: sample {bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}: {reason}"
        if self.options.on_error != "skip":
            raise ScoreError(message, samples=bad, reason=reason)
        self._warn_once("overflow", message + " (scored as failed: on_error='skip')")
        rewards = rewards.clone()
        rewards[bad] = math.nan
        return rewards

    def combine(self, scores: Scores) -> torch.Tensor:
        """The scalar reward per conversation, shape (B,): attribute weights when given."""
        import torch

        if len(scores) == 0:
            return torch.empty(0)
        if self.options.attribute_weights is not None:
            return combine_attributes(scores.attributes, self.options.attributes, self.options.weight_vector())
        if scores.values is None:
            raise ConfigError(
                f"{self.__name__}: the model returns attributes {sorted(scores.attributes)} and no single reward; "
                "pass attribute_weights to combine them"
            )
        return scores.values.float()

    def normalize(
        self, raw: torch.Tensor, scores: Scores, conversations: list[Conversation], columns: dict
    ) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """Apply ``options.normalize``; returns rewards (B,) and (groups, zero-spread groups)."""
        import torch

        opts = self.options
        if opts.normalize == "none":
            return raw, None
        if opts.normalize == "reference":
            return raw - self._reference_scores(conversations, columns), None
        # The groups a judge compared in (prompt and principle, TRL's runs), else the prompt.
        keys = scores.groups if scores.groups is not None else [c.prompt_key() for c in conversations]
        if opts.normalize_target == "attributes":
            if len(scores) == 0:
                matrix = torch.empty(0, len(opts.attributes))
            else:
                matrix = torch.stack([scores.attributes[n].float() for n in opts.attributes], dim=-1)  # (B, K)
            result = normalize_across_ranks(keys, matrix, opts.normalize, opts.std_floor)
            rewards = result.values @ torch.tensor(opts.weight_vector())
        else:
            result = normalize_across_ranks(keys, raw, opts.normalize, opts.std_floor)
            rewards = result.values
        if result.num_groups and result.num_singletons == result.num_groups:
            self._warn_once(
                "singletons",
                f"{self.__name__}: normalize={opts.normalize!r} found one response per prompt in every group, so every "
                f"reward is {0.5 if opts.normalize == 'rank' else 0.0}: there is nothing to compare within a prompt. "
                "Generate several responses per prompt (num_generations > 1), or use normalize='reference' or 'none'",
            )
        return rewards, (result.num_groups, result.num_zero_spread)

    def _warn_once(self, key: str, message: str) -> None:
        """Legal but suspicious: say so once per reward function, not on every step."""
        if key not in self._warned:
            self._warned.add(key)
            warn(message)

    def _check_reference_column(self, columns: dict, size: int) -> None:
        column = self.options.reference_column
        if column not in columns:
            raise InputError(
                f"normalize='reference' reads the dataset column {column!r}, but TRL passed only "
                f"{sorted(k for k in columns if k != 'trainer_state')}; set reference_column to one of them"
            )
        if len(columns[column]) != size:
            raise InputError(
                f"reference_column {column!r} has {len(columns[column])} values for {size} completions; "
                "it needs one reference response per completion (TRL repeats dataset columns per completion)"
            )

    def _reference_scores(self, conversations: list[Conversation], columns: dict) -> torch.Tensor:
        """Score of each prompt's reference response, scored once per (prompt, reference) and cached."""
        import torch

        references = columns[self.options.reference_column]
        keyed = [(c.prompt_key(), repr(ref)) for c, ref in zip(conversations, references)]
        missing = {}
        for i, (key, conv, ref) in enumerate(zip(keyed, conversations, references)):
            if key not in self._reference_cache and key not in missing:
                where = f"reference_column {self.options.reference_column!r} value {i}"
                missing[key] = Conversation(conv.prompt, text_or_messages(ref, where, completion=True))
        # Scored even when nothing is missing here: other ranks may be scoring (ZeRO-3 lockstep).
        fresh = self.combine(self.scorer.score(list(missing.values())))
        for key, value in zip(missing, fresh.tolist()):
            if not math.isnan(value):  # a failed reference (on_error='skip') is asked again next step
                self._reference_cache[key] = value
        while len(self._reference_cache) > REFERENCE_CACHE_SIZE:
            self._reference_cache.popitem(last=False)
        fresh_by_key = dict(zip(missing, fresh.tolist()))
        return torch.tensor([self._reference_cache.get(key, fresh_by_key.get(key, math.nan)) for key in keyed], dtype=torch.float32)

    def _log(self, raw, rewards, scores: Scores, group_stats, log_metric, log_extra) -> None:
        import torch

        name, n = self.__name__, max(len(raw), 1)
        metrics = {
            f"{name}/raw_mean": _nanmean(raw),
            f"{name}/raw_std": _nanstd(raw),
            f"{name}/truncated_frac": scores.num_truncated / n,
            f"{name}/failed_frac": float((torch.isnan(raw) | torch.isnan(rewards)).sum()) / n if len(raw) else 0.0,
        }
        for attribute, column in scores.attributes.items():
            metrics[f"{name}/{attribute}_mean"] = _nanmean(column)
        # A remote scorer's transport metrics: retries, latency_ms_p50, latency_ms_p95.
        pop_metrics = getattr(self.scorer, "pop_metrics", None)
        if pop_metrics is not None:
            metrics.update({f"{name}/{key}": value for key, value in pop_metrics().items()})
        if self.options.normalize != "none":
            metrics[f"{name}/normalized_mean"] = _nanmean(rewards)
            metrics[f"{name}/normalized_std"] = _nanstd(rewards)
        if group_stats is not None:
            groups, zero_spread = group_stats
            metrics[f"{name}/zero_spread_frac"] = zero_spread / max(groups, 1)
        if log_metric is not None:
            for key, value in metrics.items():
                if not math.isnan(value):
                    log_metric(key, value)
        if log_extra is not None:
            if self.options.normalize != "none":
                log_extra(f"{name}/raw", raw.tolist())
            for attribute, column in scores.attributes.items():
                log_extra(f"{name}/{attribute}", column.tolist())


def _load_scorer(source: str, options: RewardOptions) -> Scorer:
    """Resolve again and load, e.g. after unpickling. The options already hold what the preset
    filled, and every other value was the user's choice (an explicit default included), so the
    preset fills nothing this time."""
    import dataclasses

    from .resolve import resolve_options
    from .scorers import build_scorer

    return build_scorer(resolve_options(source, options, given={f.name for f in dataclasses.fields(options)}))


def _nanmean(x: torch.Tensor) -> float:
    import torch

    x = x[~torch.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def _nanstd(x: torch.Tensor) -> float:
    import torch

    x = x[~torch.isnan(x)]
    return float(x.std()) if len(x) > 1 else float("nan")
