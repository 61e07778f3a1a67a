"""Tokenizers built from a GGUF file's metadata, and streaming detokenization.

    tok = Tokenizer.from_gguf_metadata(gguf.metadata)
    ids = tok.encode(prompt, parse_special=True)
    stream = StreamDecoder(tok)
    text = "".join(stream.push(i) for i in generated) + stream.flush()

Modules: vocab (reading and checking the metadata), bpe and pretokenizers (byte-level
BPE), spm (sentencepiece-style), tokenizer (the Tokenizer), streaming (StreamDecoder).
"""
from lila.tokenizer.streaming import StreamDecoder
from lila.tokenizer.tokenizer import Tokenizer

__all__ = ["Tokenizer", "StreamDecoder"]
