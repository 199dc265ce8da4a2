"""Reference log-probs for the KL term: computed here, or in a forked child while the policy runs.

``start(roll)`` hands back a ``Pending``: calling it gives the frozen reference model's log-prob
of every sampled token [N, T]. The update calls it after its own forward pass (``reasoner.update``),
so when the reference runs in a child process (``run.reference_process``) its forward overlaps the
policy's forward on another core. Small CPU models are bound by PyTorch's per-operation cost on
one thread (``reasoner.threads``), which leaves the second core idle and cannot be shared by
Python threads (the GIL); a process can. The child is forked once, after the reference is built:
it shares the reference's weights copy-on-write (they never change) and runs on one thread, so
on a small model its forward is done before the update needs it and its own memory is small
(``scripts/bench_step.py --cases tiny16`` measures the step; figures: ``docs/benchmarks.md``,
"reasoner/reference.py").

``auto`` forks it for a reference of under ``threads.SMALL_MODEL_PARAMS`` parameters on the CPU,
in one process (not under torchrun), with a separate reference module (not LoRA's adapters-off
view of the policy) and at least two usable cores; everything else computes the reference
in this process, in ``start``.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import traceback
from typing import Callable, NoReturn

import torch

from reasoner import distributed, threads
from reasoner.config import ConfigError
from reasoner.engine import FAST, Engine
from reasoner.mismatch import Correction
from reasoner.types import Rollout


def rollout_inputs(roll: Rollout) -> tuple[torch.Tensor, ...]:
    """(prompt_ids [N, P], prompt_mask [N, P], completion_ids [N, T], completion_mask [N, T])."""
    return roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.completion_mask


def logp_of(model, inputs: tuple[torch.Tensor, ...], temperature: float, engine: Engine = FAST) -> torch.Tensor:
    """Detached float32 log-probs [N, T] of the completions in ``inputs`` (``rollout_inputs``)
    under ``model``'s distribution divided by the sampling ``temperature``."""
    with torch.no_grad(), engine.sized(model, int(inputs[3].sum())):
        return engine.logp(model, *inputs, temperature)[0].float()


class OldLogp:
    """The "old" log-probs [N, T] of the PPO ratio, and mismatch weights [N, T], before the update.

    Three policies, chosen once by the build step: reuse (``recompute=False``: one epoch of one
    minibatch, sampled by this very model, makes them equal to the current ones detached: None),
    recompute (an engine such as vLLM computes its own, slightly different, log-probs), and
    recompute with a train/inference mismatch ``correction`` (``reasoner.mismatch.Correction``:
    token- or sequence-level importance weights, truncated or masked) of the sampler's log-probs.
    The sampler reports log-probs under its processed distribution (renormalised after top_k/min_p/top_p);
    ``matched`` (set when sampling truncates) gives the trainer's under that same distribution for the weights,
    which otherwise would carry each token's kept mass (< 1) as a bias; ``old`` stays the full tempered one.
    """

    def __init__(self, model, temperature: float, recompute: bool, correction: Correction | None = None,
                 engine: Engine = FAST, matched: Callable[[Rollout], torch.Tensor] | None = None):
        self.model, self.temperature, self.recompute, self.correction = model, temperature, recompute, correction
        self.engine, self.matched = engine, matched

    def __call__(self, roll: Rollout) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.recompute:
            return None, None
        old = logp_of(self.model, rollout_inputs(roll), self.temperature, self.engine)
        if self.correction is None:
            return old, None
        trainer = old if self.matched is None else self.matched(roll)  # like with like: the sampler's distribution
        return old, self.correction(trainer, roll.logp, roll.completion_mask)


class Pending:
    """The reference log-probs [N, T] (or None: no reference) once called; ``waited``: seconds
    the first call blocked."""

    def __init__(self, fetch):
        self._fetch, self._done, self._value, self.waited = fetch, False, None, 0.0

    def __call__(self) -> torch.Tensor | None:
        if not self._done:
            t0 = time.perf_counter()
            self._value, self._done = self._fetch(), True
            self.waited = time.perf_counter() - t0
        return self._value


class NoReference:
    """algo.beta=0: no reference model; ``start`` gives a Pending of None."""

    def start(self, roll: Rollout) -> Pending:
        return Pending(lambda: None)

    def close(self) -> None:
        pass


class InlineReference:
    """Computes the reference log-probs in this process, inside ``start``."""

    def __init__(self, model, temperature: float, engine: Engine = FAST):
        self.model, self.temperature, self.engine = model, temperature, engine

    def start(self, roll: Rollout) -> Pending:
        value = logp_of(self.model, rollout_inputs(roll), self.temperature, self.engine)
        return Pending(lambda: value)

    def close(self) -> None:
        pass


class ReferenceProcess:
    """Computes the reference log-probs in a forked child; ``start`` only sends the token ids."""

    def __init__(self, model, temperature: float, engine: Engine = FAST):
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(model, temperature, engine, child, self._conn, os.getpid()),
                                 name="reasoner-reference", daemon=True)
        self._proc.start()
        child.close()
        self._sent = 0

    def start(self, roll: Rollout) -> Pending:
        self._sent += 1
        try:
            self._conn.send((self._sent, tuple(x.cpu().numpy() for x in rollout_inputs(roll))))
        except OSError:  # BrokenPipeError: the child is gone
            self._died()
        return Pending(lambda seq=self._sent: self._receive(seq))

    def _receive(self, seq: int) -> torch.Tensor:
        """The answer to request ``seq``; answers to earlier requests nobody asked for are skipped."""
        got = None
        while got != seq:
            try:
                got, kind, payload = self._conn.recv()
            except (EOFError, OSError):
                self._died()
        if kind == "error":
            raise RuntimeError(f"the reference process failed:\n{payload}")
        return torch.from_numpy(payload)

    def _died(self) -> NoReturn:
        self._proc.join(1.0)
        raise RuntimeError(f"the reference process (pid {self._proc.pid}) died (exit code {self._proc.exitcode}); "
                           "rerun with run.reference_process=inline to compute the reference here") from None

    def close(self) -> None:
        try:
            self._conn.send(None)  # stop (a later fork may hold a copy of this end: EOF alone is not enough)
        except OSError:
            pass
        self._conn.close()
        self._proc.join(5.0)
        if self._proc.is_alive():
            self._proc.kill()


def _serve(model, temperature: float, engine: Engine, conn, parent_end, parent: int) -> None:
    """Child main loop: (seq, token ids) in, (seq, "ok", log-probs) or (seq, "error", traceback) out,
    until None or EOF."""
    parent_end.close()  # forked copy of the parent's end: keeping it would hide the parent's EOF
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it stops this child
    torch.set_num_threads(1)
    while True:
        try:
            while not conn.poll(1.0):
                if os.getppid() != parent:  # the parent was killed without closing the pipe
                    return
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        seq, arrays = request
        try:
            out = (seq, "ok", logp_of(model, tuple(torch.from_numpy(a) for a in arrays), temperature, engine).numpy())
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            out = (seq, "error", traceback.format_exc())
        conn.send(out)


def make_runner(ref, choice: str, temperature: float, device, engine: Engine = FAST):
    """The run's reference runner for ``ref`` (``run.reference_process``: auto | process | inline):
    NoReference without one, else InlineReference or ReferenceProcess."""
    if ref is None:
        return NoReference()
    forkable = torch.device(device).type == "cpu" and not distributed.active() and sys.platform == "linux"
    if choice == "process" and not forkable:
        raise ConfigError("run.reference_process=process needs a CPU run in one process on Linux; "
                          "valid choices here: auto, inline")
    if choice == "auto":
        small = isinstance(ref, torch.nn.Module) and threads.n_params(ref) < threads.SMALL_MODEL_PARAMS
        choice = "process" if forkable and small and threads.usable_cores() > 1 else "inline"
    return (ReferenceProcess if choice == "process" else InlineReference)(ref, temperature, engine)
