"""Adam whose embedding tables cost what a batch touches: the update of a row that sat steps out is deferred.

Why: with dense `nn.Embedding` tables and `torch.optim.Adam`, every step rewrites the whole user and frame tables
(Adam's moments decay, and its momentum moves, every row that ever had a gradient), and under Horovod every step
allreduces a gradient the size of those tables. A step then costs a fixed part plus a part per user (0.81 ms per
thousand users, `benchmarks/train_step.py`); steps per epoch grow with the examples, so an epoch grew with
examples × users, and the 10M-comment night's train:kfrci had a scaling exponent of 1.41.

`DeferredAdam` trains with Adam's rule but touches only the rows a sparse gradient names (an embedding table with
`sparse=True`). For a row that got no gradient for k steps, dense Adam would have decayed its moments k times and
moved it k times along its old momentum; those k moves form a geometric series in β1/√β2 whose sum has a closed
form in the row's moments, so they are applied in one go just before the row is next read: `watch(model)` hooks
every embedding lookup to bring the rows it is about to read up to date, and `flush()` brings every row (the
trainers call it at the end of each epoch, before validation and checkpoints). So the model computes with the
values dense Adam would have given it. The one difference from `torch.optim.Adam`: the catch-up leaves out ε from
the steps a row sat out (m/√v instead of m/(√v + ε)), a relative error of about ε/√v in those moves; a row whose
gradients were never non-zero has m = 0 and does not move either way. Dense gradients (the tower, the LSTM, W_img)
get exactly Adam's update. Horovod exchanges a sparse gradient by allgather of the touched rows, so the exchange
shrinks from the tables to the batch. (Each process catches up the rows its own batch reads, at its own moment;
the result is the same series summed in other pieces, so processes can differ in the last bits of a float.)

A table read other than through its `forward` (`table.weight[...]`) between a step and a flush sees stale rows:
the models read `weight` directly only for scoring and filling unseen items, after training has flushed.

Weight decay is not offered: it gives every row a gradient every step, so nothing could be deferred; the models'
`reg` (L2 on the batch's rows, as in the papers) is the regulariser to use.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable

import torch
from torch import nn

# Terms of the catch-up series summed: with the default betas a skipped step j back weighs (β1/√β2)^j, and
# 0.9005^256 ≈ 2e-12, so steps further back move a row by nothing a float32 can hold.
CATCH_UP_TERMS = 256
_CHUNK = 4096  # distinct last-update steps per coefficient block (a 4096 × 256 float64 block is 8 MiB)


def use_sparse_gradients(model: nn.Module, sparse: bool = True) -> int:
    """Make every `nn.Embedding` of `model` produce sparse (or again dense) gradients; returns how many there are.
    Nothing else changes: the forward pass, scores, checkpoints and state_dict are the same either way."""
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    for table in tables:
        table.sparse = sparse
    return len(tables)


class DeferredAdam(torch.optim.Optimizer):
    """Adam (no AMSGrad, no weight decay) that accepts sparse gradients and defers untouched rows' updates.

    State per parameter: Adam's `step`, `exp_avg`, `exp_avg_sq`, and, once a sparse gradient arrives, `last`
    (int64, one per row of the first dimension): the step a row's moments and value are brought up to. A state
    saved by `torch.optim.Adam` loads as every row up to date. A sparse gradient may list a row more than once
    (Horovod's allgather concatenates the processes' rows): the duplicates are summed, as their dense sum would be.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        if lr <= 0 or eps <= 0:
            raise ValueError(f"DeferredAdam needs lr > 0 and eps > 0 (got {lr}, {eps})")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"DeferredAdam's betas must be in [0, 1) (got {betas})")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})
        self._bias_ratios: dict[tuple[float, float], torch.Tensor] = {}

    def _state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loader casts every floating parameter's state to the parameter's dtype, `last` included: the
        step numbers are put back as they were saved (int64), not as float32 (exact only below 2^24)."""
        lasts = {k: v["last"].clone() for k, v in state_dict["state"].items() if "last" in v}
        super().load_state_dict(state_dict)
        ids = [p for group in self.param_groups for p in group["params"]]
        for k, last in lasts.items():
            self.state[ids[k]]["last"] = last.to(torch.int64)

    def _bias_ratio(self, beta1: float, beta2: float, upto: int) -> torch.Tensor:
        """√(1 − β2^s) / (1 − β1^s) for s = 0..upto at least (entry 0 unused): Adam's bias corrections of step s,
        computed once per optimizer."""
        ratio = self._bias_ratios.get((beta1, beta2), torch.empty(0, dtype=torch.float64))
        if len(ratio) <= upto:  # grown in fixed blocks, so an entry's last bit never depends on the table's size
            blocks = [ratio]
            for start in range(len(ratio), upto + 1, 4096):
                s = torch.arange(start, start + 4096, dtype=torch.float64)
                blocks.append(torch.sqrt(1 - beta2**s) / (1 - beta1**s).clamp_min(1e-300))
            ratio = self._bias_ratios[(beta1, beta2)] = torch.cat(blocks)
        return ratio

    def _catch_up(self, p: torch.Tensor, state: dict, rows: torch.Tensor | None, upto: int, group: dict) -> None:
        """Bring `rows` (all rows: None) to step `upto`, applying the zero-gradient Adam steps they sat out."""
        last = state["last"]
        if rows is None:
            behind = (last < upto).nonzero(as_tuple=True)[0]
            if behind.numel() == 0:
                return
            rows = behind
        else:
            rows = rows[last[rows] < upto]
            if rows.numel() == 0:
                return
        beta1, beta2 = group["betas"]
        firsts, which = torch.unique(last[rows], return_inverse=True)
        coef = torch.empty(firsts.numel(), dtype=torch.float64)
        ratio = self._bias_ratio(beta1, beta2, int(firsts[-1]) + CATCH_UP_TERMS)
        j = torch.arange(1, CATCH_UP_TERMS + 1)
        weight = (beta1 / math.sqrt(beta2)) ** j.double()
        for a in range(0, firsts.numel(), _CHUNK):
            sat_out = firsts[a:a + _CHUNK, None] + j  # the steps sat out, j after the row's last update,
            coef[a:a + _CHUNK] = (weight * ratio[sat_out] * (sat_out <= upto)).sum(1)  # up to `upto`
        skipped = (upto - last[rows]).double()
        m, v = state["exp_avg"][rows], state["exp_avg_sq"][rows]
        direction = m / v.sqrt().clamp_min(1e-30)  # m = 0 wherever v = 0
        shape = (-1,) + (1,) * (p.dim() - 1)
        p.index_add_(0, rows, direction * coef[which].to(p.dtype).reshape(shape), alpha=-group["lr"])
        state["exp_avg"][rows] = m * (beta1**skipped).to(m.dtype).reshape(shape)
        state["exp_avg_sq"][rows] = v * (beta2**skipped).to(v.dtype).reshape(shape)
        last[rows] = upto

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state(p)
                state["step"] += 1
                step = int(state["step"])
                step_size = lr / (1 - beta1**step)
                bias2_sqrt = math.sqrt(1 - beta2**step)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if p.grad.is_sparse:
                    grad = p.grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()
                    if "last" not in state:  # every row is up to date until the first sparse step
                        state["last"] = torch.full((p.shape[0],), step - 1, dtype=torch.int64)
                    self._catch_up(p, state, rows, step - 1, group)
                    m_rows = m[rows].lerp_(values, 1 - beta1)
                    v_rows = v[rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
                    m[rows], v[rows] = m_rows, v_rows
                    p.index_add_(0, rows, m_rows / (v_rows.sqrt() / bias2_sqrt).add_(eps), alpha=-step_size)
                    state["last"][rows] = step
                else:
                    if "last" in state:
                        self._catch_up(p, state, None, step - 1, group)
                        state["last"].fill_(step)
                    m.lerp_(p.grad, 1 - beta1)
                    v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    p.addcdiv_(m, (v.sqrt() / bias2_sqrt).add_(eps), value=-step_size)
        return loss

    def watch(self, model: nn.Module) -> int:
        """Hook every embedding table of `model` that this optimizer trains so that a lookup first brings the rows
        it reads up to date (replacing the hooks of any optimizer that watched the model before). Returns how many
        tables are watched."""
        unwatch(model)
        trained = {id(p) for group in self.param_groups for p in group["params"]}
        me = weakref.ref(self)

        def before_lookup(table: nn.Embedding, args: tuple) -> None:
            optimizer = me()
            if optimizer is not None:
                optimizer.catch_up(table.weight, args[0])

        tables = [m for m in model.modules() if isinstance(m, nn.Embedding) and id(m.weight) in trained]
        for table in tables:
            table._kfr_catch_up = table.register_forward_pre_hook(before_lookup)
        return len(tables)

    @torch.no_grad()
    def catch_up(self, p: torch.Tensor, rows: torch.Tensor) -> None:
        """Bring the given rows of `p` (indices, any shape, repeats allowed) to the last step taken."""
        state = self.state.get(p)
        if not state or "last" not in state:
            return
        group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
        self._catch_up(p, state, rows.reshape(-1).unique(), int(state["step"]), group)

    @torch.no_grad()
    def flush(self) -> None:
        """Apply every deferred update: afterwards the parameters are what dense Adam's would be. Call it before
        the parameters are read (validation, scoring, saving); training on afterwards is unaffected."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and "last" in state:
                    self._catch_up(p, state, None, int(state["step"]), group)


def unwatch(model: nn.Module) -> None:
    """Remove the lookup hooks `DeferredAdam.watch` put on `model`'s embedding tables."""
    for table in model.modules():
        handle = getattr(table, "_kfr_catch_up", None)
        if handle is not None:
            handle.remove()
            del table._kfr_catch_up


def watch(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """`optimizer.watch(model)` where the optimizer defers updates (call it again on the optimizer Horovod's
    wrapper returns: that is a new object); removes stale hooks for the others."""
    if isinstance(optimizer, DeferredAdam):
        optimizer.watch(model)
    else:
        unwatch(model)


def flush(optimizer: torch.optim.Optimizer) -> None:
    """`optimizer.flush()` where the optimizer defers updates; nothing for the others."""
    if isinstance(optimizer, DeferredAdam):
        optimizer.flush()


def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` (2-norm) for gradients that may be sparse, which torch's own refuses.
    A sparse gradient is coalesced first, so a row listed twice counts once with its summed value."""
    grads = []
    for p in parameters:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad.values())
        else:
            grads.append(p.grad)
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale)
    return total
