"""How a byte-level BPE vocabulary splits text into words before merging, by `tokenizer.ggml.pre`.

The merges were learned on words cut by one particular regex; cutting differently
gives different tokens, so each vocabulary needs its own. The names and the families
they fall into are llama.cpp's (`llama-vocab.cpp`); the regexes are the ones in the
models' own tokenizer.json, which is also what transformers uses for these names.

Two places where we follow the model's own tokenizer.json and llama.cpp rather than
transformers' GGUF loader, which uses the plain GPT-2 split for every name it does not
list: "smollm"/"starcoder"-style vocabularies split each digit off first (their
tokenizer.json has a `Digits` pre-tokenizer), and the Llama-3 family looks a word up
whole before merging (`ignore_merges`, as tiktoken does). On vocabularies that were
trained this way the results are the same, since no merge joins digits or rebuilds a
word differently; the tests hold both to transformers.

"default" (what a file without a known pre-tokenizer says) is GPT-2's split here, as in
transformers; llama.cpp uses an older multi-regex split for it.
"""
from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Regex, pre_tokenizers

from lila.errors import UnsupportedError

_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
           r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
          r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
          r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
           r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
           r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class PreTokenizer:
    regex: str | None = None        # None: GPT-2's regex, built into tokenizers' ByteLevel
    split_digits: bool = False      # cut every digit off before the regex runs
    ignore_merges: bool = False     # a word that is a whole token is that token
    add_bos: bool = False           # llama.cpp's default when the file has no add_bos_token

    def build(self) -> pre_tokenizers.PreTokenizer:
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=self.regex is None)
        steps = []
        if self.split_digits:
            steps.append(pre_tokenizers.Digits(individual_digits=True))
        if self.regex is not None:
            steps.append(pre_tokenizers.Split(Regex(self.regex), behavior="isolated"))
        return pre_tokenizers.Sequence([*steps, byte_level]) if steps else byte_level


_GPT2 = PreTokenizer()
_DIGITS = PreTokenizer(split_digits=True)
_LLAMA3_FAMILY = PreTokenizer(_LLAMA3, ignore_merges=True, add_bos=True)

PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    **dict.fromkeys(["default", "gpt-2", "phi-2", "mpt", "olmo"], _GPT2),
    **dict.fromkeys(["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"], _DIGITS),
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "lfm2"],
                    _LLAMA3_FAMILY),
    **dict.fromkeys(["dbrx", "smaug-bpe"], PreTokenizer(_LLAMA3)),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen"], PreTokenizer(_QWEN2)),
    "qwen35": PreTokenizer(_QWEN35),
    **dict.fromkeys(["gpt-4o", "llama4", "minimax-m2"], PreTokenizer(_GPT4O)),
    "tekken": PreTokenizer(_TEKKEN, ignore_merges=True, add_bos=True),
}


def pre_tokenizer(name: str) -> PreTokenizer:
    try:
        return PRE_TOKENIZERS[name]
    except KeyError:
        raise UnsupportedError(
            f"BPE pre-tokenizer {name!r} (tokenizer.ggml.pre) is not supported; Lila knows "
            f"{', '.join(sorted(PRE_TOKENIZERS))}") from None
