"""Tokenizers built offline for the random-weight presets: the byte-level alphabet plus each
family's special tokens. With random weights, what matters is that the token sequence has the
real structure (prompt, image tokens, separators), not the vocabulary."""

from __future__ import annotations

QWEN2_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
PALIGEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]
MODERNVBERT_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<pad>", "<unk>", "<fake_token_around_image>", "<image>",
                        "<end_of_utterance>", "<global-img>"] + [f"<row_{i + 1}_col_{j + 1}>" for i in range(6)
                                                                 for j in range(6)]


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-to-symbol table in byte order (0..255): a fixed vocabulary order.

    (``ByteLevel.alphabet()`` returns the same symbols in hash order, different per process.)
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def byte_level_tokenizer(specials: list[str], tokenizer_class=None, **named):
    """A fast tokenizer over the byte-level alphabet plus ``specials`` (offline), as
    ``tokenizer_class`` (default ``PreTrainedTokenizerFast``); ``named``: its special-token roles."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode())}
    assert set(vocab) == set(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return (tokenizer_class or PreTrainedTokenizerFast)(tokenizer_object=tok, **named)


def byte_level_qwen2_tokenizer():
    """Qwen2's tokenizer class over the byte-level alphabet plus Qwen2-VL's special tokens."""
    from transformers import Qwen2TokenizerFast

    return byte_level_tokenizer(QWEN2_SPECIAL_TOKENS, Qwen2TokenizerFast, pad_token="<|endoftext|>",
                                eos_token="<|im_end|>")
