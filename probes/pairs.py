"""Contrastive pairs: two texts that differ only in the concept's words.

A pair's two texts share everything after the persona words, token for token,
so any difference in the hidden state at their last token is the model's plan
for continuing them differently (the seeds' "planning" signal).

Example:
    import probes
    pairs = probes.honesty_pairs(n=64, tokenizer=model.tokenizer, chat=True)
    pairs[0].positive[-40:]
    # "...<|im_start|>assistant\\nThe capital of Australia is"
    probes.pairs_from_templates([("a kind", "a cruel")], ["The dog", "My neighbour"])
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

Truncate = Literal["tokens", "words"] | None


@dataclass(frozen=True)
class ContrastivePair:
    """A positive and a negative text (side 0 and side 1 of every capture)."""

    positive: str
    negative: str

    def __iter__(self):
        return iter((self.positive, self.negative))


PairLike = ContrastivePair | tuple[str, str] | Sequence[str]


def as_pairs(pairs: Iterable[PairLike]) -> list[ContrastivePair]:
    """Validate pairs (or ``(positive, negative)`` tuples) into a list of `ContrastivePair`.

    Raises ``ValueError`` for an empty list, a malformed item, or a pair whose
    two texts are identical (it carries no contrast).
    """
    if isinstance(pairs, (str, ContrastivePair)):
        pairs = [pairs]
    if pairs is None or not isinstance(pairs, Iterable):
        raise ValueError(f"pairs={pairs!r}: pass a list of ContrastivePair or (positive, negative) tuples, e.g. probes.honesty_pairs().")
    result: list[ContrastivePair] = []
    for index, item in enumerate(pairs):
        if isinstance(item, ContrastivePair):
            pair = item
        elif isinstance(item, str) or not isinstance(item, Sequence) or len(item) != 2:
            raise ValueError(
                f"pair {index} is {item!r}: each pair must be a ContrastivePair or a (positive, negative) tuple of two strings."
            )
        else:
            pair = ContrastivePair(*item)
        if not isinstance(pair.positive, str) or not isinstance(pair.negative, str):
            raise ValueError(
                f"pair {index}: both texts must be strings, got {type(pair.positive).__name__} and {type(pair.negative).__name__}."
            )
        if pair.positive == pair.negative:
            raise ValueError(
                f"pair {index} has identical positive and negative texts ({pair.positive[:60]!r}...): "
                "it carries no contrast. Make the two texts differ in the concept's words."
            )
        result.append(pair)
    if not result:
        raise ValueError("No pairs given: pass at least one ContrastivePair or (positive, negative) tuple, e.g. probes.honesty_pairs().")
    return result


def load_concept(name: str) -> dict[str, Any]:
    """A shipped concept data file (``probes/data/{name}.json``): template, personas, suffixes."""
    try:
        text = resources.files("probes.data").joinpath(f"{name}.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        shipped = sorted(p.name[:-5] for p in resources.files("probes.data").iterdir() if p.name.endswith(".json"))
        raise ValueError(f"No shipped concept {name!r}; shipped: {', '.join(shipped)}.") from None
    return json.loads(text)


def prompting_personas(concept: str) -> tuple[str, str]:
    """The concept's (positive, negative) persona system prompts for the prompting baseline.

    Example:
        >>> prompting_personas("sentiment")[0]
        'You are a cheerful person who sees the good in everything and loves describing it.'
    """
    data = load_concept(concept)
    if "prompting" not in data:
        raise ValueError(f"Concept {concept!r} names no prompting personas: add a 'prompting': [positive, negative] entry to its file.")
    positive, negative = data["prompting"]
    return positive, negative


def suffix_prefixes(suffix: str, truncate: Truncate, tokenizer: Any = None, min_length: int = 1) -> list[str]:
    """The suffix itself, or all its growing prefixes (by tokens or by words)."""
    if truncate is None:
        return [suffix]
    if truncate == "words":
        words = suffix.split(" ")
        return [" ".join(words[:i]) for i in range(min_length, len(words) + 1)]
    if truncate == "tokens":
        if tokenizer is None:
            raise ValueError("truncate='tokens' needs tokenizer=model.tokenizer.")
        ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
        prefixes = [tokenizer.decode(ids[:i]) for i in range(min_length, len(ids) + 1)]
        return list(dict.fromkeys(p for p in prefixes if p.strip()))
    raise ValueError(f"truncate={truncate!r}: use None, 'words' or 'tokens'.")


def render(instruction: str, continuation: str, tokenizer: Any = None, chat: bool = False, system: str | None = None) -> str:
    """One text: the instruction, then the continuation.

    With ``chat=True`` the instruction is the user turn of the tokenizer's chat
    template and the continuation opens the assistant turn, left unfinished.
    """
    if not chat:
        return f"{instruction} {continuation}"
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("chat=True needs a tokenizer with a chat template (tokenizer=model.tokenizer).")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": instruction}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt + continuation


def pairs_from_templates(
    persona_pairs: Sequence[tuple[str, str]],
    suffixes: Sequence[str],
    template: str = "Pretend you're {persona} person making statements about the world.",
    *,
    tokenizer: Any = None,
    chat: bool = False,
    system: str | None = None,
    truncate: Truncate = None,
    min_length: int = 1,
    n: int | None = None,
    seed: int = 0,
) -> list[ContrastivePair]:
    """Build minimal pairs from persona pairs × suffixes.

    Args:
        persona_pairs: ``(positive words, negative words)`` such as ``("an honest", "a dishonest")``.
        suffixes: shared continuations; identical on both sides.
        template: instruction with a ``{persona}`` slot.
        tokenizer, chat, system: render with the chat template (see `render`).
        truncate: ``"tokens"`` or ``"words"`` expands each suffix into its growing
            prefixes of at least ``min_length`` units, as in the seeds.
        n: keep a seeded random sample of this many pairs (all by default).

    Example:
        >>> pairs_from_templates([("a happy", "a sad")], ["I think the", "Today"], template="You are {persona} poet.")
        [ContrastivePair(positive='You are a happy poet. I think the', negative='You are a sad poet. I think the'), ...]
    """
    if "{persona}" not in template:
        raise ValueError('template needs a {persona} slot, e.g. "Pretend you\'re {persona} person."')
    if not persona_pairs or not suffixes:
        raise ValueError("persona_pairs and suffixes must both be non-empty.")
    pairs = []
    for positive_words, negative_words in persona_pairs:
        for suffix in suffixes:
            for continuation in suffix_prefixes(suffix, truncate, tokenizer, min_length):
                pairs.append(
                    ContrastivePair(
                        render(template.format(persona=positive_words), continuation, tokenizer, chat, system),
                        render(template.format(persona=negative_words), continuation, tokenizer, chat, system),
                    )
                )
    if n is not None:
        if n < 1:
            raise ValueError(f"n={n}: ask for at least one pair.")
        pairs = random.Random(seed).sample(pairs, min(n, len(pairs)))
    return as_pairs(pairs)


def concept_pairs(concept: str, n: int | None = None, **options: Any) -> list[ContrastivePair]:
    """Pairs for a shipped concept (``honesty``, ``sentiment``); options as in `pairs_from_templates`."""
    data = load_concept(concept)
    return pairs_from_templates([tuple(p) for p in data["personas"]], data["suffixes"], data["template"], n=n, **options)


def honesty_pairs(n: int | None = None, **options: Any) -> list[ContrastivePair]:
    """Honest vs dishonest persona pairs over the shipped statement openings.

    Example:
        pairs = honesty_pairs(n=128, tokenizer=model.tokenizer, chat=True)
    """
    return concept_pairs("honesty", n=n, **options)


def sentiment_pairs(n: int | None = None, **options: Any) -> list[ContrastivePair]:
    """Cheerful vs gloomy persona pairs over the shipped description openings."""
    return concept_pairs("sentiment", n=n, **options)
