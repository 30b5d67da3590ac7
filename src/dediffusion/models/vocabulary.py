"""Which of a decoder's tokens the encoder may write, from the tokens' spellings alone.

Tokenizers mark word boundaries differently (CLIP BPE ends a word with ``</w>``, GPT-2 BPE starts one
with ``Ġ``, SentencePiece with ``▁``, WordPiece continues one with ``##``); `strip_markers` gives the
bare word, so settings name words as people write them.

`round_trip_ids` finds the tokens that are words on their own: a token whose bare spelling the
tokenizer reads back as exactly that one token. An encoder that writes only those writes text whose
words are separated by spaces and that re-tokenizes to the ids it wrote; subword pieces (CLIP tokens
without ``</w>``, WordPiece ``##`` continuations) and tokens the tokenizer would split never qualify.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

TOKEN_MARKERS = ("</w>", "Ġ", "▁", "##")


def strip_markers(token: str) -> str:
    """`token` without its word-boundary markers."""
    for marker in TOKEN_MARKERS:
        token = token.replace(marker, "")
    return token


def vocabulary_mask(
    strings: Sequence[str],
    special_ids: Sequence[int],
    exclude_punctuation: bool = True,
    allow: Sequence[str] = (),
    deny: Sequence[str] = (),
    source: str = "",
    tokenize: Callable[[list[str]], list[list[int]]] | None = None,
) -> torch.Tensor:
    """Bool (V,): which tokens the encoder may write.

    Special tokens are always excluded; tokens with no letter or digit are excluded when
    `exclude_punctuation`; with `tokenize` (texts -> ids without special tokens) only whole words are
    kept (`round_trip_ids`); `allow` (if given) keeps only the listed words, `deny` removes words.
    Words match a token with or without its word-boundary marker ('red' matches 'red</w>').
    """
    bare = [strip_markers(s) for s in strings]
    mask = torch.tensor([bool(s) for s in strings])
    mask[list(special_ids)] = False
    if exclude_punctuation:
        mask &= torch.tensor([any(c.isalnum() for c in b) for b in bare])
    if tokenize is not None:
        mask &= round_trip_ids(strings, tokenize)
    for words, keep in ((allow, True), (deny, False)):
        if not words:
            continue
        hits = torch.tensor([s in words or b in words for s, b in zip(strings, bare)])
        missing = sorted(set(words) - {s for s, h in zip(strings, hits) if h} - {b for b, h in zip(bare, hits) if h})
        if missing:
            raise ValueError(f"tokens {missing[:10]} are not in the decoder vocabulary ({source})")
        mask = mask & hits if keep else mask & ~hits
    if not mask.any():
        raise ValueError("the vocabulary mask excludes every token: loosen tokens.allow/deny")
    return mask


def round_trip_ids(strings: Sequence[str], tokenize: Callable[[list[str]], list[list[int]]]) -> torch.Tensor:
    """Bool (V,): token i's bare spelling tokenizes to exactly [i] (see the module docstring)."""
    bare = [strip_markers(s) for s in strings]
    read_back = tokenize(bare)
    return torch.tensor([ids == [i] and bool(b.strip()) for i, (ids, b) in enumerate(zip(read_back, bare))])
