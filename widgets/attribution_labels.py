"""What the attribution panel's bar labels name: layers, heads, lens points and components."""

from __future__ import annotations

LENS_HELP = {
    "pre": "the residual stream entering layer {l}",
    "mid": "after layer {l}'s attention, before its MLP",
}


def layer_of_label(label: str) -> tuple[int, int] | None:
    """(layer, head) that a bar label names; head -1 is a whole layer; None for embeddings.

    "L3H7" -> (3, 7); "3_attn_out", "3_mlp_out", "3_mid" -> (3, -1); "3_pre" -> (2, -1) (the
    stream just after layer 2); "final_post" -> None (the caller maps it to the last layer).
    """
    if label.startswith("L") and "H" in label:
        layer, _, head = label[1:].partition("H")
        if layer.isdigit() and head.isdigit():
            return int(layer), int(head)
    first = label.split("_", 1)[0]
    if first.isdigit():
        layer = int(first)
        if label.endswith("_pre"):
            return (layer - 1, -1) if layer > 0 else None
        return layer, -1
    return None


def lens_description(label: str, n_layers: int) -> str:
    if label == "final_post":
        return "the final residual stream (the model's own prediction)"
    first, _, kind = label.partition("_")
    if first.isdigit() and kind in LENS_HELP:
        if label == "0_pre":
            return "embeddings only (input to layer 0)"
        return LENS_HELP[kind].format(l=int(first))
    return label


def component_description(label: str) -> str:
    if label == "embed":
        return "token embedding"
    if label == "pos_embed":
        return "positional embedding"
    first, _, kind = label.partition("_")
    if kind == "attn_out":
        return f"layer {first} attention output (all heads + b_O)"
    if kind == "mlp_out":
        return f"layer {first} MLP output"
    return label
