"""SentencePiece-style vocabularies (`tokenizer.ggml.model == "llama"`): Llama-2, Mistral, Gemma, ...

Spaces are spelled "▁", a dummy "▁" goes in front of the text, and characters without a
token fall back to byte tokens <0x00>..<0xFF>. Built as transformers builds it from the
same file (a BPE with byte fallback whose merges are ranked by the merged token's score),
since transformers is our reference. Where that differs from llama.cpp:
  - the dummy prefix goes only in front of the whole text, not after each special token;
  - a text starting with a space gets no second "▁";
  - decoding drops the one leading space that the dummy prefix put there.
"""
from __future__ import annotations

import re

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from lila.errors import ModelFormatError
from lila.tokenizer.vocab import Vocab

SPACE = "\u2581"
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
# Gemma's files list merges in the token order rather than by score, store tokens of
# several spaces as spaces, and add no dummy prefix (transformers' gemma_tokenizer).
GEMMA_ARCHITECTURES = frozenset({"gemma", "gemma2", "gemma3"})


def dummy_prefix(vocab: Vocab) -> bool:
    if vocab.add_space_prefix is not None:
        return vocab.add_space_prefix
    return vocab.architecture not in GEMMA_ARCHITECTURES


def build_spm(vocab: Vocab) -> Tokenizer:
    gemma = vocab.architecture in GEMMA_ARCHITECTURES
    tokens = vocab.tokens
    if gemma:
        # The text reaches the model with its spaces as "▁", so that merges can build these
        # tokens. The file also marks them user-defined; Tokenizer leaves them to the merges.
        tokens = [SPACE * len(t) if t and t.isspace() and " " in t else t for t in tokens]
    table = {token: i for i, token in enumerate(tokens)}
    if vocab.merges is not None:
        merges = vocab.merge_pairs()
    else:
        ranks = {t: -i for i, t in enumerate(tokens)} if gemma else dict(zip(tokens, vocab.scores))
        merges = merges_from_scores(table, ranks)
    # transformers leaves unk_token out; with byte fallback it only matters in a vocabulary
    # without byte tokens, where sentencepiece and llama.cpp give <unk> rather than nothing.
    unk = tokens[vocab.unk_id] if vocab.unk_id is not None else None
    try:
        model = models.BPE(table, merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    except Exception as e:  # tokenizers reports a merge of unknown tokens as a plain Exception
        raise ModelFormatError(f"the sentencepiece merges do not fit the vocabulary: {e}") from None
    tokenizer = Tokenizer(model)
    prefix = dummy_prefix(vocab)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPACE, prepend_scheme="first" if prefix else "never", split=False)
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer


def merges_from_scores(table: dict[str, int], ranks: dict[str, float]) -> list[tuple[str, str]]:
    """The merges a vocabulary implies: every way to cut a token into two tokens, ranked
    exactly as transformers' generate_merges ranks them, so that both tokenize alike:
    best merged score, then longer left piece, then longer right piece, then the merged
    token's place in `ranks`. (Two cuts of one token differ in length, so generate_merges'
    last key, the pieces' ids, never decides.) This loop is most of the time it takes to
    load a sentencepiece vocabulary: ~0.2 s for 49k tokens."""
    found = []
    for place, (merged, score) in enumerate(ranks.items()):
        n = len(merged)
        for k in range(1, n):
            left, right = merged[:k], merged[k:]
            if left in table and right in table:
                found.append((-score, -k, k - n, place, left, right))
    found.sort()  # the keys before `left` never tie: (place, k) is one cut
    return [(left, right) for *_, left, right in found]


def spm_token_bytes(token: str, is_added: bool) -> bytes:
    """The bytes one token stands for: <0xNN> that byte (whatever its type says, as the
    reference decoder reads it), "▁" a space; added tokens are their text."""
    if is_added:
        return token.encode("utf-8")
    if m := _BYTE_TOKEN.fullmatch(token):
        return bytes([int(m.group(1), 16)])
    return token.replace(SPACE, " ").encode("utf-8")
