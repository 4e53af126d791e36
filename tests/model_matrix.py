"""Tiny random-initialised HF folders of every architecture family TransformerLens 4 loads.

Each family is a transformers config with 3 layers, 4 query heads (grouped-query or multi-query
where the family has it), d_model 64 and the test tokenizer of ``model_fixtures``. Weights are
scaled up (x4 on matrices) so attention patterns are peaked and patching effects are large; tests
assert that the values they compare have real spread. Nothing downloads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.model_fixtures import make_tokenizer

BASE = dict(num_hidden_layers=3, num_attention_heads=4, hidden_size=64, intermediate_size=128,
            max_position_embeddings=64)
GQA = dict(BASE, num_key_value_heads=2)

# family -> (transformers config class, keyword arguments, what it exercises)
FAMILIES: dict[str, tuple[str, dict, str]] = {
    "gpt2": ("GPT2Config", dict(n_layer=3, n_head=4, n_embd=64, n_positions=64),
             "learned positions, LayerNorm, joint QKV"),
    "gpt_neo": ("GPTNeoConfig", dict(num_layers=3, num_heads=4, hidden_size=64,
                                     max_position_embeddings=64, window_size=8,
                                     attention_types=[[["global", "local"], 1], [["global"], 1]]),
                "local attention; read-only pattern hook"),
    "gpt_neox": ("GPTNeoXConfig", dict(BASE, intermediate_size=256, rotary_pct=0.25),
                 "Pythia: parallel attention+MLP, partial rotary, no BOS by default"),
    "gptj": ("GPTJConfig", dict(n_layer=3, n_head=4, n_embd=64, n_positions=64, rotary_dim=8),
             "parallel block with one LayerNorm, interleaved rotary"),
    "opt": ("OPTConfig", dict(num_hidden_layers=3, num_attention_heads=4, hidden_size=64,
                              ffn_dim=256, max_position_embeddings=64, word_embed_proj_dim=64),
            "read-only pattern hook, ReLU"),
    "bloom": ("BloomConfig", dict(n_layer=3, n_head=4, hidden_size=64), "ALiBi, no BOS"),
    "llama": ("LlamaConfig", GQA, "RMSNorm, rotary, SwiGLU, grouped-query attention 4/2"),
    "mistral": ("MistralConfig", dict(GQA, sliding_window=None), "Llama-like, GQA"),
    "gemma": ("GemmaConfig", dict(BASE, num_key_value_heads=1, head_dim=16),
              "multi-query attention, scaled embeddings, GeGLU"),
    "gemma2": ("Gemma2Config", dict(GQA, head_dim=16, sliding_window=16),
               "post-norms, logit and attention soft-capping, alternating sliding window"),
    "gemma3": ("Gemma3TextConfig", dict(GQA, head_dim=16, sliding_window=16),
               "post-norms, q/k norms, two rotary bases"),
    "qwen2": ("Qwen2Config", GQA, "QKV biases, GQA, no BOS"),
    "qwen3": ("Qwen3Config", dict(GQA, head_dim=16), "q/k norms, GQA, no BOS"),
    "phi": ("PhiConfig", dict(BASE, intermediate_size=256, partial_rotary_factor=0.5),
            "parallel block, partial rotary, no BOS"),
    "phi3": ("Phi3Config", dict(BASE, num_key_value_heads=4, pad_token_id=0),
             "joint QKV and joint gate/up projections"),
    "falcon": ("FalconConfig", dict(num_hidden_layers=3, num_attention_heads=4, hidden_size=64,
                                    new_decoder_architecture=False, multi_query=True,
                                    parallel_attn=True, alibi=False, bias=False),
               "parallel block, multi-query attention"),
    "stablelm": ("StableLmConfig", dict(BASE, num_key_value_heads=4), "LayerNorm + rotary"),
    "gpt_bigcode": ("GPTBigCodeConfig", dict(n_layer=3, n_head=4, n_embd=64, n_positions=64,
                                              multi_query=True), "multi-query attention"),
    "olmo": ("OlmoConfig", dict(BASE, pad_token_id=0), "non-parametric LayerNorm"),
    "olmo2": ("Olmo2Config", dict(BASE, pad_token_id=0), "post-norms only, q/k norms"),
    "xglm": ("XGLMConfig", dict(num_layers=3, attention_heads=4, d_model=64, ffn_dim=128,
                                max_position_embeddings=64),
             "unhooked sinusoidal positions, read-only pattern hook"),
    # further families whose adapters TransformerLens 4 ships
    "granite": ("GraniteConfig", GQA, "scaled residual and logits"),
    "cohere": ("CohereConfig", GQA, "parallel block, logit scale, interleaved rotary"),
    "starcoder2": ("Starcoder2Config", GQA, "GQA, LayerNorm + rotary"),
    "smollm3": ("SmolLM3Config", GQA, "layers without rotary (NoPE)"),
    "nemotron": ("NemotronConfig", GQA, "LayerNorm1p, squared ReLU"),
    "apertus": ("ApertusConfig", GQA, "xIELU activation, q/k norms"),
    "arcee": ("ArceeConfig", GQA, "ReLU² MLP"),
    "glm": ("GlmConfig", dict(GQA, head_dim=16), "adjacent-pair rotary"),
    "glm4": ("Glm4Config", dict(GQA, head_dim=16), "post-norms"),
    "exaone4": ("Exaone4Config", GQA, "post-norms, q/k norms"),
    "ernie4_5": ("Ernie4_5Config", dict(GQA, head_dim=16), "adjacent-pair rotary"),
    "hunyuan": ("HunYuanDenseV1Config", dict(GQA, head_dim=16), "q/k norms after rotary"),
    "mpt": ("MptConfig", dict(n_layers=3, n_heads=4, d_model=64, max_seq_len=64), "ALiBi"),
    "olmo3": ("Olmo3Config", GQA, "post-norms, sliding window"),
    "ministral3": ("Ministral3Config", dict(GQA, head_dim=16), "llama-4 query scaling"),
}
# The families the issue names; the rest run a lighter set of checks.
CORE = ("gpt2", "gpt_neo", "gpt_neox", "gptj", "opt", "bloom", "llama", "mistral", "gemma",
        "gemma2", "gemma3", "qwen2", "qwen3", "phi", "phi3", "falcon", "stablelm", "gpt_bigcode",
        "olmo", "olmo2", "xglm")
EXTRA = tuple(f for f in FAMILIES if f not in CORE)


# 12-layer, d_model 768 shapes for the speed benchmarks (bench/bench_patching.py --arch).
BENCH_SHAPES = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024),
    "gpt_neox": dict(num_hidden_layers=12, num_attention_heads=12, hidden_size=768,
                     intermediate_size=3072, max_position_embeddings=2048, rotary_pct=0.25),
    "llama": dict(num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                  hidden_size=768, intermediate_size=2048, max_position_embeddings=2048),
}


def make_family_folder(family: str, folder: Path, seed: int = 0, scale: float = 4.0,
                       tokenizer_dir: Path | None = None, config: dict | None = None) -> Path:
    """Write a random ``family`` model (config, model.safetensors, tokenizer) into ``folder``;
    ``config`` overrides the family's test-sized settings."""
    import torch
    import transformers

    cls_name, kwargs, _ = FAMILIES[family]
    kwargs = {**kwargs, **(config or {})}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        make_tokenizer(folder)
    else:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file():
                shutil.copy(f, folder / f.name)
    n_vocab = len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])
    config = getattr(transformers, cls_name)(vocab_size=n_vocab, **kwargs)
    config.bos_token_id = config.eos_token_id = config.pad_token_id = 0
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(scale)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder
