"""Contrastive pairs: validation, shipped data, minimality of rendered pairs."""

from __future__ import annotations

import pytest

import probes
from probes.pairs import load_concept
from tests.tiny import byte_tokenizer


def test_tuples_and_pairs_are_accepted_alike():
    pairs = probes.as_pairs([("a", "b"), probes.ContrastivePair("c", "d")])
    assert pairs == [probes.ContrastivePair("a", "b"), probes.ContrastivePair("c", "d")]
    positive, negative = pairs[0]
    assert (positive, negative) == ("a", "b")


@pytest.mark.parametrize(
    "bad, message", [([], "No pairs"), ([("x", "x")], "identical"), ([("a", "b", "c")], "pair 0"), ([(1, "b")], "strings")]
)
def test_bad_pairs_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        probes.as_pairs(bad)


def test_shipped_data_sizes():
    honesty = load_concept("honesty")
    assert len(honesty["suffixes"]) >= 200 and len(set(honesty["suffixes"])) == len(honesty["suffixes"])
    assert len(honesty["personas"]) >= 4
    sentiment = load_concept("sentiment")
    assert len(sentiment["suffixes"]) >= 50 and len(sentiment["personas"]) >= 4
    with pytest.raises(ValueError, match="shipped: honesty, sentiment"):
        load_concept("nope")


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def assert_minimal(pairs, tokenizer, data):
    """Each pair: the negative is the positive with only the persona words swapped, and
    the shared suffix is identical token for token at the end of both texts."""
    n_suffixes = len(data["suffixes"])
    for index in range(0, len(pairs), 37):
        pair = pairs[index]
        positive_words, negative_words = data["personas"][index // n_suffixes]
        suffix = data["suffixes"][index % n_suffixes]
        assert pair.positive.endswith(suffix) and pair.negative.endswith(suffix)
        assert pair.positive.replace(f"you're {positive_words} ", f"you're {negative_words} ", 1) == pair.negative
        pos, neg = tokenizer(pair.positive)["input_ids"], tokenizer(pair.negative)["input_ids"]
        assert common_prefix_length(pos[::-1], neg[::-1]) >= len(tokenizer(suffix, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("chat", [False, True])
def test_pairs_differ_only_in_persona_words_and_share_the_suffix_tokens(chat):
    tokenizer = byte_tokenizer()
    data = load_concept("honesty")
    pairs = probes.honesty_pairs(tokenizer=tokenizer, chat=chat)
    assert len(pairs) == len(data["personas"]) * len(data["suffixes"])
    assert_minimal(pairs, tokenizer, data)
    if chat:  # the text ends inside an unfinished assistant turn
        assert pairs[0].positive.split("<|assistant|>")[1] == data["suffixes"][0]


@pytest.mark.slow
def test_pairs_are_minimal_under_the_embedded_chat_template(smollm):
    data = load_concept("honesty")
    pairs = probes.honesty_pairs(tokenizer=smollm.tokenizer, chat=True)
    assert pairs[0].positive.endswith("<|im_start|>assistant\n" + data["suffixes"][0])
    assert_minimal(pairs, smollm.tokenizer, data)


def test_truncation_grows_suffix_prefixes():
    pairs = probes.pairs_from_templates([("a happy", "a sad")], ["the dog ran home"], "You are {persona} poet.", truncate="words")
    assert [p.positive for p in pairs] == [
        "You are a happy poet. the",
        "You are a happy poet. the dog",
        "You are a happy poet. the dog ran",
        "You are a happy poet. the dog ran home",
    ]
    by_token = probes.pairs_from_templates(
        [("a happy", "a sad")], ["the dog"], "{persona}", truncate="tokens", tokenizer=byte_tokenizer(), min_length=5
    )
    assert [p.negative for p in by_token] == ["a sad the d", "a sad the do", "a sad the dog"]


def test_sample_is_seeded_and_bounded():
    assert probes.honesty_pairs(n=10, seed=1) == probes.honesty_pairs(n=10, seed=1)
    assert probes.honesty_pairs(n=10, seed=1) != probes.honesty_pairs(n=10, seed=2)
    assert len(probes.sentiment_pairs(n=5)) == 5
    with pytest.raises(ValueError, match="chat template"):
        probes.honesty_pairs(n=2, chat=True)
