"""Model presets, the heads, kv_heads and d_k of published transformer models.

`sweep.preset: [llama-3-8b, ...]` expands to these instead of explicit `heads`, `kv_heads` and
`d_k`. Each entry is read from the model's published config.json on the Hugging Face hub:
heads = num_attention_heads (n_head for GPT-2), kv_heads = num_key_value_heads (= heads where
the model has no such key: multi-head attention), d_k = head_dim where given, else
hidden_size / num_attention_heads.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    heads: int
    kv_heads: int
    d_k: int


PRESETS: dict[str, Preset] = {
    # openai-community/gpt2 config.json: n_head 12, n_embd 768 (768 / 12 = 64); no GQA.
    "gpt-2": Preset(heads=12, kv_heads=12, d_k=64),
    # meta-llama/Meta-Llama-3-8B config.json: num_attention_heads 32, num_key_value_heads 8,
    # hidden_size 4096 (4096 / 32 = 128).
    "llama-3-8b": Preset(heads=32, kv_heads=8, d_k=128),
    # meta-llama/Meta-Llama-3-70B config.json: num_attention_heads 64, num_key_value_heads 8,
    # hidden_size 8192 (8192 / 64 = 128).
    "llama-3-70b": Preset(heads=64, kv_heads=8, d_k=128),
    # mistralai/Mistral-7B-v0.1 config.json: num_attention_heads 32, num_key_value_heads 8,
    # hidden_size 4096 (4096 / 32 = 128).
    "mistral-7b": Preset(heads=32, kv_heads=8, d_k=128),
    # Qwen/Qwen2.5-7B config.json: num_attention_heads 28, num_key_value_heads 4,
    # hidden_size 3584 (3584 / 28 = 128).
    "qwen2.5-7b": Preset(heads=28, kv_heads=4, d_k=128),
    # google/gemma-2-9b config.json: num_attention_heads 16, num_key_value_heads 8, head_dim 256
    # (given explicitly: hidden_size 3584 / 16 would be 224).
    "gemma-2-9b": Preset(heads=16, kv_heads=8, d_k=256),
}


def known() -> str:
    return ", ".join(sorted(PRESETS))


def lookup(name: str) -> Preset:
    """The preset called `name`; ValueError naming the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (known: {known()})") from None
