"""Activations at a hook, streamed from text and shuffled in a buffer, for SAE training.

Consecutive tokens of a text are highly correlated; training on them in order makes an SAE chase
whatever document it is reading. As in SAELens, activations fill a buffer of many batches; the
buffer is shuffled and half of it is served as training batches while the other half stays to be
mixed with the next fill. The model runs only up to the hook's layer (``stop_at_layer``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from engine.jobs import JobContext
from engine.sae_splice import activations
from engine.text_source import TextSource, token_rows


class ActivationStream:
    """Iterates over shuffled activation batches [batch_size, d_in] (float32).

    ``tokens_read`` counts the tokens run through the model so far (the progress of a job)."""

    def __init__(self, host, source: TextSource, hook_name: str, context_size: int,
                 n_tokens: int, batch_size: int, buffer_batches: int, ctx: JobContext,
                 seed: int = 0, rows_per_forward: int | None = None) -> None:
        self.host = host
        self.hook_name = hook_name
        self.d_in = 0  # set by the first read
        self.batch_size = batch_size
        self.capacity = max(2, buffer_batches) * batch_size
        self.ctx = ctx
        # bigger forwards gain little on a CPU, and Cancel waits for a block of one (about
        # 0.4 s at 2048 tokens on a 12-layer d768 model with two cores)
        per_forward = 2048 if host.device.type == "cpu" else 4096
        rows = rows_per_forward or max(1, per_forward // context_size)
        self.rows = token_rows(host, source, context_size, n_tokens, rows, ctx)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.tokens_read = 0
        self.exhausted = False
        self._buffer: torch.Tensor | None = None
        self._pending: list[torch.Tensor] = []  # token rows read but not yet run

    def hold_out(self, n_tokens: int) -> torch.Tensor:
        """The first ~``n_tokens`` tokens of the text as rows [R, ctx], kept out of training."""
        from engine.errors import InputError

        parts, have, want = [], 0, None
        while want is None or have < want:
            try:
                batch = next(self.rows)
            except StopIteration:
                break
            want = want or max(1, n_tokens // batch.shape[1])
            take = batch[:want - have]
            parts.append(take)
            have += take.shape[0]
            if take.shape[0] < batch.shape[0]:
                self._pending.append(batch[take.shape[0]:])
        if not parts:
            raise InputError("The text source is too short to hold out evaluation text.",
                             "Use a longer text.")
        return torch.cat(parts)

    @torch.no_grad()
    def _read(self) -> torch.Tensor | None:
        """The next forward's activations [tokens, d_in], or None at the end of the text."""
        if self._pending:
            tokens = self._pending.pop(0)
        else:
            try:
                tokens = next(self.rows)
            except StopIteration:
                self.exhausted = True
                return None
        self.ctx.check_cancelled()
        act = activations(self.host.model, tokens, self.hook_name)
        self.d_in = int(act.shape[-1] * (act.shape[-2] if act.ndim == 4 else 1))
        self.tokens_read += int(tokens.numel())
        return (act.flatten(-2) if act.ndim == 4 else act).reshape(-1, self.d_in).float()

    def _fill(self) -> None:
        parts = [] if self._buffer is None else [self._buffer]
        have = 0 if self._buffer is None else self._buffer.shape[0]
        while have < self.capacity and not self.exhausted:
            act = self._read()
            if act is None:
                break
            parts.append(act)
            have += act.shape[0]
        if parts:
            buf = torch.cat(parts)
            perm = torch.randperm(buf.shape[0], generator=self.generator).to(buf.device)
            self._buffer = buf[perm]

    def first_batch(self, n: int) -> torch.Tensor:
        """At least ``n`` activations (or all there are) without consuming them: for estimating
        the activations' scale before training."""
        while (self._buffer is None or self._buffer.shape[0] < n) and not self.exhausted:
            act = self._read()
            if act is None:
                break
            self._buffer = act if self._buffer is None else torch.cat([self._buffer, act])
        return self._buffer[:n] if self._buffer is not None else torch.empty(0)

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            self._fill()
            buf = self._buffer
            if buf is None or buf.shape[0] < self.batch_size:
                return  # the text is used up (a last partial batch is dropped)
            keep = buf.shape[0] // 2 if not self.exhausted else 0
            serve = (buf.shape[0] - keep) // self.batch_size * self.batch_size
            if serve == 0:
                serve = self.batch_size
            self._buffer = buf[serve:] if serve < buf.shape[0] else None
            for i in range(0, serve, self.batch_size):
                yield buf[i:i + self.batch_size]
