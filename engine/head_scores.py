"""Batched attention-head scores that reproduce ``transformer_lens.head_detector`` exactly.

``detect_head`` scores one head at a time on one prompt (one forward pass per call and per prompt).
Here every head of every layer is scored for a whole batch of sequences from one cached set of
attention patterns, with the same arithmetic:

- ``"mul"``: optionally zero the BOS column / the diagonal of the pattern, then
  ``sum(pattern * detection) / sum(pattern)``;
- ``"abs"``: ``1 - round(mean(|pattern - detection|) * seq_len, 3)``, with the BOS column / diagonal
  of the difference zeroed first when excluded;
- a list of prompts is the mean of the per-prompt scores.

The detection patterns are built the same way as ``get_*_detection_pattern``. A small, safe formula
language (``tok(k) == tok(q)``, ``q - k == 1``...) builds custom lower-triangular patterns; it is parsed
with ``ast`` against a whitelist and evaluated with numpy, never with ``eval``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

import numpy as np
import torch

from engine.errors import InputError

# Score name -> what it measures (shown as tooltips and CSV headers).
DETECTOR_KINDS = ("previous", "duplicate", "induction", "current", "first")
TL_HEAD_NAMES = {
    "previous": "previous_token_head",
    "duplicate": "duplicate_token_head",
    "induction": "induction_head",
}
ERROR_MEASURES = ("mul", "abs")

PRESET_FORMULAS = {
    "same token as mine (duplicate)": "tok(k) == tok(q) and k != q",
    "token after an earlier copy of mine (induction)": "k >= 1 and tok(k - 1) == tok(q) and k - 1 != q",
    "previous token (offset 1)": "q - k == 1",
    "first token (BOS)": "k == 0",
    "current token": "k == q",
}


def detection_pattern(tokens: torch.Tensor, kind: str) -> torch.Tensor:
    """The detect_head pattern ``kind`` for each row of ``tokens`` [batch, pos] -> [batch, pos, pos].

    Same cells as ``head_detector.get_{previous_token,duplicate_token,induction}_head_detection_pattern``
    (lower triangular, float32); ``current`` is the diagonal and ``first`` the BOS column.
    """
    tokens = tokens.reshape(-1, tokens.shape[-1])
    b, n = tokens.shape
    dev = tokens.device
    eye = torch.eye(n, dtype=torch.bool, device=dev)
    if kind == "previous":
        pat = torch.zeros(n, n, dtype=torch.bool, device=dev)
        if n > 1:
            pat[1:, :-1] = torch.eye(n - 1, dtype=torch.bool, device=dev)
        pat = pat.expand(b, n, n)
    elif kind == "current":
        pat = eye.expand(b, n, n)
    elif kind == "first":
        pat = torch.zeros(n, n, dtype=torch.bool, device=dev)
        pat[:, 0] = True
        pat = pat.expand(b, n, n)
    elif kind in ("duplicate", "induction"):
        dup = (tokens[:, :, None] == tokens[:, None, :]) & ~eye
        dup = torch.tril(dup)
        if kind == "duplicate":
            pat = dup
        else:  # shift right by one key: the token *after* an earlier copy
            pat = torch.zeros_like(dup)
            pat[:, :, 1:] = dup[:, :, :-1]
    else:
        raise ValueError(f"unknown detection pattern {kind!r}")
    return torch.tril(pat.to(torch.float32))


def detector_scores(
    patterns: torch.Tensor,
    detection: torch.Tensor,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: str = "mul",
) -> torch.Tensor:
    """Score every head of ``patterns`` [batch, heads, q, k] against ``detection`` [batch, q, k].

    Returns [batch, heads] float32 (float64 after the rounding of ``"abs"``), one detect_head score
    per sequence and head.
    """
    if error_measure not in ERROR_MEASURES:
        raise InputError(f"Unknown error measure {error_measure!r}.", "Use 'mul' or 'abs'.")
    a = patterns.float()
    d = detection.to(a.device, torch.float32)[:, None]
    n = a.shape[-1]
    diag = torch.eye(n, dtype=torch.bool, device=a.device)
    if error_measure == "mul":
        if exclude_bos or exclude_current_token:
            a = a.clone()
        if exclude_bos:
            a[..., 0] = 0
        if exclude_current_token:
            a = a.masked_fill(diag, 0)
        return (a * d).sum((-2, -1)) / a.sum((-2, -1))
    diff = (a - d).abs()
    if exclude_bos:
        diff[..., 0] = 0
    if exclude_current_token:
        diff = diff.masked_fill(diag, 0)
    raw = (diff.mean((-2, -1)) * n).cpu()
    # detect_head rounds a Python float to 3 decimals; do exactly that, element by element.
    rounded = [[1 - round(float(v), 3) for v in row] for row in raw.tolist()]
    return torch.tensor(rounded, dtype=torch.float64)


def best_possible_score(detection: torch.Tensor, *, exclude_bos: bool = False,
                        exclude_current_token: bool = False, error_measure: str = "mul") -> float:
    """The detect_head score of a perfect head for ``detection`` [q, k] on this sequence.

    On a natural prompt few positions have an earlier copy of their token, so even a perfect
    induction head scores far below 1 ("The cat sat on the mat. The cat": 2 of 11 rows). The
    perfect head puts each row's attention on the pattern's cells (not on excluded ones); a row
    without any attends where it is not counted if an exclusion allows, else anywhere. Scored by
    :func:`detector_scores`, i.e. by head_detector's own arithmetic.
    """
    d = detection.float().cpu()
    cells = torch.tril(d > 0)  # what each row may attend to and is counted for
    if exclude_bos:
        cells[:, 0] = False
    if exclude_current_token:
        cells.fill_diagonal_(False)
    count = cells.sum(-1, keepdim=True)
    ideal = torch.where(cells, 1.0 / count.clamp(min=1), 0.0)
    # A row without any cell attends where it is not counted: BOS if excluded, else itself.
    empty = (count[:, 0] == 0).nonzero()[:, 0]
    ideal[empty, 0 if exclude_bos else empty] = 1.0
    score = detector_scores(ideal[None, None], d[None], exclude_bos=exclude_bos,
                            exclude_current_token=exclude_current_token,
                            error_measure=error_measure)
    return float(score[0, 0])


def pattern_rows(detection: torch.Tensor) -> int:
    """How many query rows of ``detection`` [q, k] have any cell (e.g. an earlier copy)."""
    return int((torch.tril(detection.float()) > 0).any(-1).sum())


def stripe_positions(seq_len: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key positions of the induction stripe for [start tokens] + r + r, r of length T.

    Each query of the second copy (``start + T ... start + 2T - 1``) should attend to the token
    *after* its earlier copy, ``q - T + 1``.
    """
    q = torch.arange(start + seq_len, start + 2 * seq_len)
    return q, q - seq_len + 1


def stripe_scores(patterns: torch.Tensor, seq_len: int, start: int) -> torch.Tensor:
    """Mean attention along the induction stripe: [batch, heads, q, k] -> [batch, heads]."""
    q, k = stripe_positions(seq_len, start)
    return patterns[:, :, q, k].float().mean(-1)


# -- the custom-pattern formula language ---------------------------------------------------------
_ALLOWED_BIN = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply,
                ast.FloorDiv: np.floor_divide, ast.Mod: np.mod}
_ALLOWED_CMP = {ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less,
                ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal}
FORMULA_HELP = ("A formula over query position q, key position k, the sequence length n and token "
                "ids tok(i), e.g. tok(k) == tok(q) and k != q, or q - k == 2. Operators: + - * // "
                "%, comparisons, and/or/not, parentheses. Cells above the diagonal are dropped.")


def compile_formula(text: str) -> Callable[[np.ndarray], np.ndarray]:
    """Parse ``text`` into a function ``token_ids [n] -> pattern [n, n]`` (float32, lower triangular)."""
    if not text or not text.strip():
        raise InputError("The pattern formula is empty.", FORMULA_HELP)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise InputError(f"The formula {text!r} is not valid: {exc.msg}.", FORMULA_HELP) from None
    _check(tree.body, text)

    def pattern(token_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        n = ids.size
        env = {"q": np.arange(n)[:, None], "k": np.arange(n)[None, :], "n": np.int64(n)}
        value = _evaluate(tree.body, env, ids)
        out = np.broadcast_to(np.asarray(value) != 0, (n, n))
        return np.tril(out).astype(np.float32)

    return pattern


def _check(node: ast.AST, text: str) -> None:
    ok = (ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp,
          ast.Compare, ast.Name, ast.Load, ast.Constant, ast.Call, *_ALLOWED_BIN, *_ALLOWED_CMP)
    for sub in ast.walk(node):
        if not isinstance(sub, ok):
            raise InputError(f"The formula {text!r} uses {type(sub).__name__}, which is not "
                             "allowed.", FORMULA_HELP)
        if isinstance(sub, ast.Name) and sub.id not in ("q", "k", "n", "tok"):
            raise InputError(f"Unknown name {sub.id!r} in the formula.", FORMULA_HELP)
        if isinstance(sub, ast.Constant) and (isinstance(sub.value, bool)
                                              or not isinstance(sub.value, int)):
            raise InputError(f"Only whole numbers may appear in the formula, not {sub.value!r}.",
                             FORMULA_HELP)
        if isinstance(sub, ast.Call) and (not isinstance(sub.func, ast.Name) or sub.func.id != "tok"
                                          or len(sub.args) != 1 or sub.keywords):
            raise InputError("The only function in a formula is tok(position).", FORMULA_HELP)


def _evaluate(node: ast.AST, env: dict, ids: np.ndarray):
    if isinstance(node, ast.Constant):
        return np.int64(node.value)
    if isinstance(node, ast.Name):
        if node.id == "tok":
            raise InputError("tok must be called with a position, e.g. tok(k - 1).", FORMULA_HELP)
        return env[node.id]
    if isinstance(node, ast.Call):  # tok(i): the token id at i, or -1 outside the sequence
        pos = np.asarray(_evaluate(node.args[0], env, ids), dtype=np.int64)
        inside = (pos >= 0) & (pos < ids.size)
        return np.where(inside, ids[np.clip(pos, 0, max(ids.size - 1, 0))], -1)
    if isinstance(node, ast.UnaryOp):
        v = _evaluate(node.operand, env, ids)
        if isinstance(node.op, ast.Not):
            return np.logical_not(v)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, env, ids), _evaluate(node.right, env, ids)
        if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and np.any(np.asarray(right) == 0):
            raise InputError("The formula divides by zero.", FORMULA_HELP)
        return _ALLOWED_BIN[type(node.op)](left, right)
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v, env, ids) != 0 for v in node.values]
        fn = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        out = values[0]
        for v in values[1:]:
            out = fn(out, v)
        return out
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, env, ids)
        out = True
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(comp, env, ids)
            out = np.logical_and(out, _ALLOWED_CMP[type(op)](left, right))
            left = right
        return out
    raise InputError("The formula could not be evaluated.", FORMULA_HELP)  # pragma: no cover


def check_painted(matrix, n: int) -> np.ndarray:
    """Validate a painted pattern for a sequence of ``n`` tokens; returns it as float32 [n, n]."""
    arr = np.asarray(matrix, dtype=np.float32)
    if arr.shape != (n, n):
        raise InputError(f"The painted pattern is {arr.shape[0]}×{arr.shape[-1] if arr.ndim > 1 else 0}"
                         f" but the sequence has {n} tokens.",
                         "Re-scan to get a canvas of the right size, then paint again.")
    if not np.all(np.isfinite(arr)):
        raise InputError("The painted pattern has non-finite cells.", "Clear it and paint again.")
    if np.any(np.triu(arr, 1) != 0):
        raise InputError("The painted pattern has cells above the diagonal.",
                         "A causal head cannot attend to later tokens: paint on or below the "
                         "diagonal only.")
    return arr
