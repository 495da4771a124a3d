"""Rule-based rewards: plain picklable callables TRL can call beside a reward model."""

import pickle

import pytest

from rewardbridge.rules import WordLimit

# (completion, max_words, reward): 1.0 iff 0 < words <= max_words.
CASES = [
    ("Paris.", 3, 1.0),
    ("The capital is Paris.", 4, 1.0),       # 4 words, limit 4
    ("The capital is Paris, France.", 4, 0.0),  # 5 words > 4
    ("   ", 4, 0.0),                          # empty answers earn nothing
    ([{"role": "assistant", "content": "two words"}], 2, 1.0),  # chat completions too
]


@pytest.mark.parametrize("completion,max_words,expected", CASES)
def test_word_limit(completion, max_words, expected):
    assert WordLimit(max_words)(prompts=["q"], completions=[completion]) == [expected]


def test_word_limit_is_a_named_picklable_callable():
    rule = pickle.loads(pickle.dumps(WordLimit(7)))
    assert rule.__name__ == "word_limit_7" and rule(prompts=["q"], completions=["a b"]) == [1.0]
    with pytest.raises(ValueError, match="max_words must be at least 1"):
        WordLimit(0)
