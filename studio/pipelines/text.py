"""Text side of the generators: the TinyWorld word tokenizer and the prompt embeddings every
backend shares (the pipeline and the TinyWorld pre-training pad the same way)."""

from __future__ import annotations

import re

from studio.util import TOKENIZER_LOCK


def normalize_prompt_words(text: str) -> list[str]:
    """The TinyWorld tokenizer's view of a prompt: lower-case words, punctuation dropped."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def build_word_tokenizer(vocabulary: list[str], max_length: int):
    """A word-level tokenizer (``PreTrainedTokenizerFast``) with T5's specials: <pad>=0, </s>=1, <unk>=2."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in vocabulary:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex("[^a-z0-9]+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length
    )


def embed_prompts(tokenizer, text_encoder, prompts: list[str], max_sequence_length: int):
    """Text embeddings (B, L, D), zero beyond each prompt's tokens (Wan's convention).

    Shared by the pipeline and the TinyWorld pre-training, so both see the same padding.
    """
    prompts = [" ".join(p.split()) for p in prompts]
    with TOKENIZER_LOCK:
        inputs = tokenizer(
            prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )
    device = next(text_encoder.parameters()).device
    ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
    hidden = text_encoder(ids, mask).last_hidden_state
    return hidden * mask[..., None].to(hidden.dtype)
