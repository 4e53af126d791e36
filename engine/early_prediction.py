"""The first prediction before PyTorch and TransformerLens are loaded: GPT-2 in numpy.

Importing torch and TransformerLens and booting the bridge take about 6 s of CPU, so a prediction
through TransformerLens cannot be on screen within 5 s of launch on a 2-core machine. For a small
GPT-2-format folder (the bundled model organism) this module reads the safetensors weights and
``tokenizer.json`` and computes, in numpy, the ``PromptResult`` that ``engine.prompt.run_prompt``
gives through TransformerLens: the same tokens and string tokens, the same top-k token ids,
probabilities within 1e-5 and losses within 1e-4 (measured: 4e-6 and 2e-5; the panel shows 0.1%
and three decimals; tests/engine/test_early_prediction.py checks the bundled and random models
against the bridge). It costs about 0.1 s and imports neither torch nor transformers.

It is a preview, not a second engine: the worker shows it while it boots the bridge, then the
prompt runs again through TransformerLens and that result replaces it. Anything this module does not
reproduce exactly returns None, and the prediction waits for the bridge: another architecture or
activation, a sharded, large or non-float32 checkpoint, a tokenizer that adds tokens of its own,
another dtype than float32, a prompt longer than the context, a model from the Hugging Face cache.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from engine.model_sources import ModelSpec, read_json, resolve_folder
from engine.prompt_result import PromptRequest, PromptResult

# Reading the weights and one forward must cost little next to the boot they precede.
MAX_WEIGHT_BYTES = 64 * 2**20


class Unsupported(Exception):
    """This folder or request is not one the preview reproduces exactly (the reason says why)."""


def early_prediction(spec: ModelSpec, request: PromptRequest) -> PromptResult | None:
    """The prediction for ``request`` on ``spec``'s model, or None where only the bridge can
    tell (see the module docstring). Never raises: a folder that cannot be read here is reported
    by the real load that follows, as before."""
    try:
        return predict(checked_folder(spec), request)
    except Exception:  # noqa: BLE001 - the load after it reports every real problem
        return None


def checked_folder(spec: ModelSpec) -> Path:
    """The validated local folder of ``spec``; raises ``Unsupported`` for what is not previewed."""
    if spec.source not in ("bundled", "folder"):
        raise Unsupported("only local folders (a cached model may need a download check first)")
    if spec.dtype != "float32" or spec.n_devices != 1:
        raise Unsupported("the bridge would compute in another dtype or on several devices")
    return resolve_folder(spec, None)


class Gpt2:
    """A GPT-2 checkpoint's weights (float32 numpy) and tokenizer, as Hugging Face defines them."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        config = read_json(folder / "config.json")
        _check_config(config)
        weights = folder / "model.safetensors"
        files = list(folder.glob("*.safetensors"))
        if files != [weights]:
            raise Unsupported("the weights are not one model.safetensors file")
        if weights.stat().st_size > MAX_WEIGHT_BYTES:
            raise Unsupported("the checkpoint is too large to be worth a preview")
        from safetensors.numpy import load_file

        tensors = load_file(str(weights))
        prefix = "transformer." if "transformer.wte.weight" in tensors else ""

        def get(name: str) -> np.ndarray:
            value = tensors.get(prefix + name)
            if value is None:
                raise Unsupported(f"the checkpoint has no {prefix + name}")
            if value.dtype != np.float32:
                raise Unsupported(f"{prefix + name} is {value.dtype}, not float32")
            return value

        self.n_layers = int(config["n_layer"])
        self.n_heads = int(config["n_head"])
        self.n_ctx = int(config["n_positions"])
        self.eps = float(config.get("layer_norm_epsilon", 1e-5))
        self.wte, self.wpe = get("wte.weight"), get("wpe.weight")
        d_model = int(config["n_embd"])
        if self.wte.shape != (int(config["vocab_size"]), d_model) \
                or self.wpe.shape != (self.n_ctx, d_model) or d_model % self.n_heads:
            raise Unsupported("the weights' shapes do not match config.json")
        names = ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                 "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                 "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")
        self.blocks = [[get(f"h.{i}.{n}") for n in names] for i in range(self.n_layers)]
        self.ln_f = (get("ln_f.weight"), get("ln_f.bias"))
        if config.get("tie_word_embeddings", True):
            self.unembed = self.wte  # Hugging Face ties the output embedding to wte
        elif "lm_head.weight" in tensors and tensors["lm_head.weight"].dtype == np.float32:
            self.unembed = tensors["lm_head.weight"]
        else:
            raise Unsupported("untied output embedding missing")
        self.tokenizer, self.bos_id = _tokenizer(folder)

    def tokens(self, text: str, prepend_bos: bool) -> list[int]:
        """What the bridge's ``to_tokens`` gives: BOS, then the text's own tokens."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if prepend_bos else []) + list(ids)

    def decode(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)], skip_special_tokens=False)

    def logits(self, ids: list[int]) -> np.ndarray:
        """[pos, vocab] float32: GPT2LMHeadModel's forward (pre-LayerNorm blocks, gelu_new)."""
        n = len(ids)
        x = self.wte[ids] + self.wpe[:n]
        d = x.shape[1]
        h, dh = self.n_heads, d // self.n_heads
        future = np.triu(np.ones((n, n), dtype=bool), k=1)
        scale = np.float32(1.0 / math.sqrt(dh))
        for (g1, b1, w_qkv, b_qkv, w_o, b_o, g2, b2, w_in, b_in, w_out, b_out) in self.blocks:
            qkv = _layer_norm(x, g1, b1, self.eps) @ w_qkv + b_qkv  # Conv1D: weights [in, out]
            q, k, v = (qkv[:, i * d:(i + 1) * d].reshape(n, h, dh).transpose(1, 0, 2)
                       for i in range(3))
            scores = (q @ k.transpose(0, 2, 1)) * scale
            scores[:, future] = -np.inf
            z = _softmax(scores) @ v  # [head, pos, d_head]
            x = x + z.transpose(1, 0, 2).reshape(n, d) @ w_o + b_o
            x = x + _gelu_new(_layer_norm(x, g2, b2, self.eps) @ w_in + b_in) @ w_out + b_out
        return _layer_norm(x, *self.ln_f, self.eps) @ self.unembed.T


def predict(folder: Path, request: PromptRequest) -> PromptResult:
    """``run_prompt``'s result for ``request``, computed from the checkpoint in ``folder``."""
    text = request.prompt
    if text is None or not text.strip():
        raise Unsupported("an empty prompt is the bridge's error to report")
    model = Gpt2(folder)
    # None: the bridge's default for GPT-2 (cfg.default_prepend_bos is True).
    prepend_bos = True if request.prepend_bos is None else bool(request.prepend_bos)
    ids = model.tokens(text, prepend_bos)
    if not ids or len(ids) > model.n_ctx:
        raise Unsupported("longer than the context: the bridge reports or truncates it")
    if max(ids) >= model.wte.shape[0]:
        raise Unsupported("the tokenizer has ids beyond the embedding")
    logits = model.logits(ids)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    lp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    k = max(1, min(int(request.top_k), lp.shape[-1]))
    top_ids = np.argsort(-lp, axis=-1, kind="stable")[:, :k].astype(np.int64)
    top_lp = np.take_along_axis(lp, top_ids, axis=-1)
    token_ids = np.asarray(ids, dtype=np.int64)
    loss = -lp[np.arange(len(ids) - 1), token_ids[1:]]
    return PromptResult(
        prompt=text,
        str_tokens=tuple(model.decode(i) for i in ids),
        token_ids=token_ids,
        top_ids=top_ids,
        top_tokens=tuple(tuple(model.decode(i) for i in row) for row in top_ids),
        top_probs=np.exp(top_lp).astype(np.float32),
        loss_per_token=loss.astype(np.float32),
    )


def _check_config(config: dict) -> None:
    """Only what ``Gpt2.logits`` computes exactly as GPT2LMHeadModel does."""
    if config.get("model_type") != "gpt2" or config.get("architectures") != ["GPT2LMHeadModel"]:
        raise Unsupported("not a GPT2LMHeadModel")
    expected = {"activation_function": "gelu_new", "scale_attn_weights": True,
                "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
                "add_cross_attention": False}
    for key, value in expected.items():
        if config.get(key, value) != value:
            raise Unsupported(f"{key} is {config.get(key)!r}")


def _tokenizer(folder: Path):
    """``tokenizer.json`` through the ``tokenizers`` library (what the bridge's fast tokenizer
    runs), where the bridge's BOS handling reduces to "BOS id, then the text's tokens"."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise Unsupported("no tokenizer.json")
    settings = read_json(folder / "tokenizer_config.json") \
        if (folder / "tokenizer_config.json").is_file() else {}
    if settings.get("add_bos_token") or settings.get("add_eos_token") \
            or settings.get("clean_up_tokenization_spaces"):
        raise Unsupported("the tokenizer adds tokens or rewrites the decoded text")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    probe = "a b"
    if tokenizer.encode(probe).ids != tokenizer.encode(probe, add_special_tokens=False).ids:
        raise Unsupported("the tokenizer's post-processor adds tokens")
    ids = {}
    for role in ("bos_token", "eos_token"):
        token = settings.get(role)
        token = token.get("content") if isinstance(token, dict) else token
        ids[role] = tokenizer.token_to_id(token) if isinstance(token, str) else None
        if ids[role] is None:
            raise Unsupported(f"no {role} in the vocabulary (the bridge would add one)")
    return tokenizer, int(ids["bos_token"])


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _gelu_new(x: np.ndarray) -> np.ndarray:
    c = np.float32(math.sqrt(2.0 / math.pi))
    return np.float32(0.5) * x * (1 + np.tanh(c * (x + np.float32(0.044715) * x ** 3)))
