"""The default optimizer, DeferredAdam: it trains to what torch's Adam trains to while each step touches only the
rows a batch names; a row's skipped updates wait until it is touched or flushed; a sparse gradient that lists a row
twice counts their sum; a model's embedding gradients name only the batch's rows; its state saves, resumes, and
takes over a torch Adam state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kfr_spark.models import build_model, fit
from kfr_spark.models.base import make_optimizer
from kfr_spark.models.optim import DeferredAdam, clip_grad_norm_, flush, use_sparse_gradients

torch.set_num_threads(1)


class TableAndLayer(nn.Module):
    """An embedding table and a dense layer: the two kinds of parameter every recommender has."""

    def __init__(self, rows: int = 40, dim: int = 3) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.table = nn.Embedding(rows, dim)
            self.layer = nn.Linear(dim, 1)

    def loss(self, rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((self.layer(self.table(rows)).squeeze(-1) - target) ** 2).mean()


def train(model: TableAndLayer, opt: torch.optim.Optimizer, batches) -> None:
    for rows, target in batches:
        opt.zero_grad()
        model.loss(torch.as_tensor(rows), torch.as_tensor(target, dtype=torch.float32)).backward()
        opt.step()


def random_batches(steps: int, rows: int = 40, size: int = 6, seed: int = 0):
    """Each step names a few of the table's rows (with repeats), so most rows sit most steps out."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, rows, size), rng.normal(size=size)) for _ in range(steps)]


def deferred(model: TableAndLayer, lr: float = 0.05) -> DeferredAdam:
    use_sparse_gradients(model)
    opt = DeferredAdam(model.parameters(), lr=lr)
    opt.watch(model)
    return opt


def assert_same_parameters(a: nn.Module, b: nn.Module, **tol) -> None:
    """Equal up to the ε the catch-up leaves out (about 1e-5 here; with ε → 0 they agree to 2e-6, float32 noise).
    Dropping the deferred moves instead (TensorFlow's LazyAdam) differs by 0.2 on these problems."""
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(y, x, **(tol or {"rtol": 1e-4, "atol": 1e-4}), msg=name)


def test_deferred_adam_trains_to_what_adam_trains_to_on_sparse_batches():
    batches = random_batches(300)
    dense, lazy = TableAndLayer(), TableAndLayer()
    train(dense, torch.optim.Adam(dense.parameters(), lr=0.05), batches)
    opt = deferred(lazy)
    train(lazy, opt, batches)
    opt.flush()
    assert_same_parameters(dense, lazy)
    assert (dense.table.weight - TableAndLayer().table.weight).abs().min() > 1e-3  # every row trained


def test_a_row_left_out_waits_for_its_updates_until_it_is_touched_or_flushed():
    first = (np.array([0, 1, 2]), np.array([1.0, -1.0, 0.5]))
    touched_then_left = [first] + [(np.array([0, 1]), np.array([1.0, 0.0]))] * 5
    dense, lazy = TableAndLayer(), TableAndLayer()
    train(dense, torch.optim.Adam(dense.parameters(), lr=0.05), touched_then_left)
    opt = deferred(lazy)
    train(lazy, opt, touched_then_left[:1])
    after_first = lazy.table.weight[2].clone()
    train(lazy, opt, touched_then_left[1:])
    assert torch.equal(lazy.table.weight[2], after_first)  # no work spent on row 2 while it sat out...
    assert not torch.equal(dense.table.weight[2], after_first)  # ...although Adam's momentum moved it
    opt.flush()
    assert_same_parameters(dense, lazy)  # the flush applies the five moves at once
    flushed = lazy.table.weight.clone()
    opt.flush()
    assert torch.equal(lazy.table.weight, flushed)  # and only once


def test_touching_a_row_first_applies_the_steps_it_sat_out():
    batches = random_batches(60, seed=3) + [(np.arange(40), np.zeros(40))]  # the last step touches every row
    dense, lazy = TableAndLayer(), TableAndLayer()
    train(dense, torch.optim.Adam(dense.parameters(), lr=0.05), batches)
    train(lazy, deferred(lazy), batches)  # no flush: the last batch brought every row up to date
    assert_same_parameters(dense, lazy)


def test_a_sparse_gradient_that_lists_a_row_twice_counts_their_sum():
    """Horovod's allgather hands the optimizer the processes' rows concatenated, duplicates and all."""
    twice, once = nn.Parameter(torch.ones(4, 2)), nn.Parameter(torch.ones(4, 2))
    values = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 3.0]])
    twice.grad = torch.sparse_coo_tensor(torch.tensor([[1, 3, 1]]), values, (4, 2))
    once.grad = torch.sparse_coo_tensor(torch.tensor([[1, 3]]), torch.stack([values[0] + values[2], values[1]]), (4, 2))
    DeferredAdam([twice], lr=0.1).step()
    DeferredAdam([once], lr=0.1).step()
    torch.testing.assert_close(twice, once)
    assert torch.equal(twice[0], torch.ones(2)) and torch.equal(twice[2], torch.ones(2))


def user_table(model: nn.Module) -> nn.Embedding:
    return model.user if hasattr(model, "user") else model.U


@pytest.mark.parametrize("name", ["kfrci", "jifr"])
def test_with_adam_a_models_embedding_gradients_hold_only_the_batchs_rows(name):
    users, items, batch = 5000, 400, 16
    model = build_model(name, n_users=users, n_items=items, feature_dim=8, vocab_size=50)
    if name == "jifr":
        model.set_item_frames(np.random.default_rng(0).normal(size=(items * 3, 8)).astype(np.float32),
                              frame_index=np.arange(items * 3).reshape(items, 3))
    assert isinstance(make_optimizer(model, "adam"), DeferredAdam)
    rng = np.random.default_rng(1)
    if name == "kfrci":
        b = {"user": torch.as_tensor(rng.integers(0, users, batch)),
             "frame": torch.as_tensor(rng.integers(0, items, batch)),
             "features": torch.randn(batch, 8), "label": torch.ones(batch),
             "tokens": torch.as_tensor(rng.integers(1, 50, size=(batch, 5)))}
    else:
        b = {"user": torch.as_tensor(rng.integers(0, users, batch)),
             "pos": torch.as_tensor(rng.integers(0, items, batch)),
             "neg": torch.as_tensor(rng.integers(0, items, (batch, 3)))}
    model.loss(b).backward()
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    assert tables
    for table in tables:
        grad = table.weight.grad
        assert grad is not None and grad.is_sparse
        assert grad.coalesce().indices().shape[1] <= 5 * batch  # at most the rows the batch refers to (≤ 5 a row)
    assert user_table(model).weight.grad.coalesce().indices().shape[1] <= batch < users

    assert isinstance(make_optimizer(model, "dense_adam"), torch.optim.Adam)  # whole tables again
    assert not any(t.sparse for t in tables)
    make_optimizer(model, "adam", weight_decay=0.1)  # weight decay reaches every row: nothing to defer
    assert not any(t.sparse for t in tables)


def test_a_resumed_deferred_adam_continues_exactly_where_it_stopped():
    steps = random_batches(20, seed=5)
    straight = TableAndLayer()
    opt = deferred(straight)
    train(straight, opt, steps)
    opt.flush()

    first = TableAndLayer()
    opt = deferred(first)
    train(first, opt, steps[:9])  # saved with updates still deferred
    saved = {"model": first.state_dict(), "opt": opt.state_dict()}
    resumed = TableAndLayer()
    opt = deferred(resumed)
    resumed.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    train(resumed, opt, steps[9:])
    opt.flush()
    assert_same_parameters(straight, resumed, rtol=0, atol=0)


def test_a_torch_adam_state_carries_on_as_adam():
    steps = random_batches(30, seed=7)
    dense, switched = TableAndLayer(), TableAndLayer()
    adam = torch.optim.Adam(dense.parameters(), lr=0.05)
    train(dense, adam, steps)

    adam_first = torch.optim.Adam(switched.parameters(), lr=0.05)
    train(switched, adam_first, steps[:15])
    opt = deferred(switched)
    opt.load_state_dict(adam_first.state_dict())
    train(switched, opt, steps[15:])
    opt.flush()
    assert_same_parameters(dense, switched)


def test_flush_is_nothing_for_the_dense_optimizers():
    model = TableAndLayer()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.clone() for p in model.parameters()]
    flush(sgd)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_clipping_a_sparse_gradient_scales_it_to_the_norm():
    p = nn.Parameter(torch.zeros(5, 2))
    values = torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
    p.grad = torch.sparse_coo_tensor(torch.tensor([[1, 1, 4]]), values, (5, 2))
    total = clip_grad_norm_([p], 1.0)
    assert float(total) == pytest.approx(5.0)
    assert float(torch.linalg.vector_norm(p.grad.to_dense())) == pytest.approx(1.0, rel=1e-5)


def test_fit_with_gradient_clipping_trains_a_model_with_sparse_tables():
    model = build_model("pmf", n_users=4, n_items=6)
    rng = np.random.default_rng(0)
    batches = [{"user": rng.integers(0, 4, 8), "frame": rng.integers(0, 6, 8), "label": rng.integers(0, 2, 8)}
               for _ in range(3)]
    history = fit(model, batches, epochs=2, grad_clip=0.5)
    assert len(history) == 2 and model.user.sparse
