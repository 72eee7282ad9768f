"""The recommenders without Spark: each learns a tiny planted problem, images are what rank frames nobody has seen,
KFRCI's loss is the paper's Eq. 12 (checked against a numpy computation), its LSTM sees e_init at every step,
checkpoints round-trip and refuse pickled objects, training is a function of the seed, and negative sampling
never returns a positive."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from kfr_spark.models import MODELS, KeyFrameRecommender, build_model, fit
from kfr_spark.models.kfr import KFRCI, default_widths
from kfr_spark.models.metrics import ranking_metrics
from kfr_spark.models.sampling import (PairSet, iterate_batches, pad_sequences, pairwise_examples,
                                       pointwise_examples, sample_negatives)

torch.set_num_threads(1)

N_CONCEPTS = 4
FRAME_MODELS = ["pmf", "bpr", "vbpr", "kfri", "kfrc", "kfrci"]


@pytest.fixture(scope="module", autouse=True)
def _torch_optimizer_imports():
    """torch's optimizers import torch._dynamo (and sympy) on their first step: seconds, once per process. Pay it
    here, in set-up, rather than inside whichever test trains first."""
    import torch._dynamo  # noqa: F401


# -- planted problems ------------------------------------------------------------------------------------------------
def frame_problem(seed: int = 0, n_users: int = 20, n_frames: int = 60, cold: int = 0, noise: float = 0.3) -> dict:
    """Frames belong to one of 4 concepts (k % 4); a frame's feature = one-hot(concept) + 4 noise dims, all with
    Gaussian noise. User u likes concept u % 4: its positives are that concept's frames. cold = 0: 30 % of each
    user's positives held out (other users like them in training). cold > 0: the last `cold` frames are in no
    training pair at all; the held-out positives are the user's cold frames."""
    rng = np.random.default_rng(seed)
    concept = np.arange(n_frames) % N_CONCEPTS
    feats = rng.normal(0, noise, (n_frames, N_CONCEPTS + 4)).astype(np.float32)
    feats[np.arange(n_frames), concept] += 1.0
    likes = np.arange(n_users) % N_CONCEPTS
    warm = np.arange(n_frames) < n_frames - cold
    users, frames, test = [], [], {}
    for u in range(n_users):
        pos = rng.permutation(np.flatnonzero(concept == likes[u]))
        if cold:
            train, held = pos[warm[pos]], pos[~warm[pos]]
        else:
            n_held = round(0.3 * pos.size)
            held, train = pos[:n_held], pos[n_held:]
        users += [u] * train.size
        frames += list(train)
        test[u] = held
    return {"feats": feats, "concept": concept, "users": np.array(users), "frames": np.array(frames),
            "test": test, "warm": warm, "n_users": n_users, "n_frames": n_frames,
            "vocab": 2 + 3 * N_CONCEPTS}


def comment_tokens(problem: dict, frames: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positives carry a 2–4 word comment drawn from their concept's 3 words; negatives none."""
    seqs = []
    for k, y in zip(frames, labels):
        length = int(rng.integers(2, 5))
        seqs.append(list(2 + 3 * problem["concept"][k] + rng.integers(0, 3, length)) if y else [])
    return pad_sequences(seqs, max_len=6)


def train_frame_model(name: str, problem: dict, *, epochs: int = 10, lr: float = 0.02, seed: int = 0,
                      **hyper) -> KeyFrameRecommender:
    model = build_model(name, n_users=problem["n_users"], n_items=problem["n_frames"],
                        feature_dim=problem["feats"].shape[1], vocab_size=problem["vocab"], seed=seed, **hyper)
    rng = np.random.default_rng(seed + 1)

    def batches(epoch: int) -> list[dict]:
        if model.objective == "pointwise":
            rows = pointwise_examples(problem["users"], problem["frames"], problem["n_frames"], 4, rng)
            del rows["source"]
            rows["features"] = problem["feats"][rows["frame"]]
            if model.uses_text:
                rows["tokens"] = comment_tokens(problem, rows["frame"], rows["label"], rng)
        else:
            rows = pairwise_examples(problem["users"], problem["frames"], problem["n_frames"], 1, rng)
            rows["pos_features"] = problem["feats"][rows["pos"]]
            rows["neg_features"] = problem["feats"][rows["neg"]]
        return list(iterate_batches(rows, 64, rng=rng))

    fit(model, batches, epochs=epochs, lr=lr, seed=seed)
    return model


def frame_ndcg(score, problem: dict, *, cold_only: bool = False, k: int = 5) -> float:
    """Mean over users of NDCG@k: rank the frames a user has no training pair with (only the cold frames with
    `cold_only`); relevant = the held-out positives. `score(user, frames, features) -> scores`."""
    trained = PairSet(problem["users"], problem["frames"], problem["n_frames"])
    values = []
    for u in range(problem["n_users"]):
        cand = np.arange(problem["n_frames"])
        cand = cand[~trained.contains(np.full(cand.size, u), cand)]
        if cold_only:
            cand = cand[~problem["warm"][cand]]
        s = np.asarray(score(u, cand, problem["feats"][cand]), dtype=np.float64)
        values.append(ranking_metrics(s, np.isin(cand, problem["test"][u]), (k,), metrics=["ndcg"])[f"ndcg@{k}"])
    return float(np.mean(values))


def random_ndcg(problem: dict, **kw) -> float:
    rng = np.random.default_rng(123)
    return float(np.mean([frame_ndcg(lambda u, c, f: rng.random(c.size), problem, **kw) for _ in range(30)]))


def model_scorer(model: KeyFrameRecommender):
    return lambda u, cand, feats: model.score(torch.tensor(u), torch.as_tensor(cand), torch.as_tensor(feats)).numpy()


# -- learning ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FRAME_MODELS)
def test_frame_models_learn_the_planted_preferences(name):
    problem = frame_problem(seed=0)
    baseline = random_ndcg(problem)  # ≈ 0.09
    model = train_frame_model(name, problem, dim=16)
    ndcg = frame_ndcg(model_scorer(model), problem)
    assert ndcg > max(0.5, 4 * baseline), (name, ndcg, baseline)


@pytest.mark.parametrize("with_images, without", [("kfri", "pmf"), ("vbpr", "bpr"), ("kfrci", "kfrc")])
def test_images_rank_frames_nobody_has_seen(with_images, without):
    """15 of 60 frames are in no training pair: only their features say whose taste they fit."""
    problem = frame_problem(seed=1, cold=15)
    baseline = random_ndcg(problem, cold_only=True)  # ≈ 0.29
    image = frame_ndcg(model_scorer(train_frame_model(with_images, problem, dim=32)), problem, cold_only=True)
    plain = frame_ndcg(model_scorer(train_frame_model(without, problem, dim=32)), problem, cold_only=True)
    assert image > baseline + 0.3, (image, baseline)
    assert image > plain + 0.15, (image, plain)


def test_filling_unseen_frames_with_the_mean_factor_lets_the_image_rank_them():
    problem = frame_problem(seed=2, cold=15)  # the seed where KFRI's random cold q_k hurt most
    cold = ~problem["warm"]
    kfri = train_frame_model("kfri", problem, dim=32, seed=1)
    before = frame_ndcg(model_scorer(kfri), problem, cold_only=True)
    assert kfri.fill_unseen_items(problem["warm"]) == 15
    after = frame_ndcg(model_scorer(kfri), problem, cold_only=True)
    assert after > 0.85 and after > before + 0.1, (before, after)
    assert torch.equal(kfri.item.weight[cold], kfri.item.weight[problem["warm"]].mean(0).expand(15, -1))
    # without a content input, unseen frames become indistinguishable (ties), not noise
    pmf = train_frame_model("pmf", problem, dim=32, seed=1)
    pmf.fill_unseen_items(np.flatnonzero(problem["warm"]))
    s = pmf.score(torch.tensor(0), torch.as_tensor(np.flatnonzero(cold)))
    assert torch.allclose(s, s[0].expand(15))


def test_most_popular_ranks_by_positive_counts_for_every_user():
    rng = np.random.default_rng(0)
    n_users, n_frames = 30, 50
    appeal = rng.zipf(1.6, n_frames).astype(float)
    positives = [rng.choice(n_frames, 12, replace=False, p=appeal / appeal.sum()) for _ in range(n_users)]
    train = {u: p[:8] for u, p in enumerate(positives)}
    model = build_model("most_popular", n_users=n_users, n_items=n_frames)
    frames = np.concatenate(list(train.values()))
    model.fit_counts(frames)  # one count per positive comment
    assert model.score(torch.tensor(0), torch.arange(n_frames)).tolist() == np.bincount(frames, minlength=n_frames).tolist()
    assert torch.equal(model.score(torch.tensor(3), torch.arange(n_frames)), model.score(torch.tensor(7), torch.arange(n_frames)))
    ndcg, rand = [], []
    for u, p in enumerate(positives):
        cand = np.setdiff1d(np.arange(n_frames), train[u])
        rel = np.isin(cand, p[8:])
        ndcg.append(ranking_metrics(model.score(torch.tensor(u), torch.as_tensor(cand)).numpy(), rel, (5,))["ndcg@5"])
        rand.append(ranking_metrics(rng.random(cand.size), rel, (5,))["ndcg@5"])
    assert np.mean(ndcg) > 2 * np.mean(rand) + 0.1
    with pytest.raises(TypeError):
        fit(model, [{"user": torch.tensor([0])}], epochs=1)


def item_problem(seed: int = 0, n_users: int = 20, n_items: int = 24, noise: float = 0.3) -> dict:
    """Items of 5 frames: 2 of the item's dominant concept (i % 4), one of each other concept, shuffled. User u
    likes the items dominated by concept u % 4 (2 of its 6 held out) — and, unobserved, that concept's frames."""
    rng = np.random.default_rng(seed)
    dominant = np.arange(n_items) % N_CONCEPTS
    concepts = np.stack([rng.permutation(np.r_[[d, d], np.delete(np.arange(N_CONCEPTS), d)]) for d in dominant])
    feats = rng.normal(0, noise, (*concepts.shape, N_CONCEPTS + 4)).astype(np.float32)
    for i, j in np.ndindex(concepts.shape):
        feats[i, j, concepts[i, j]] += 1.0
    likes = np.arange(n_users) % N_CONCEPTS
    users, items, test = [], [], {}
    for u in range(n_users):
        pos = rng.permutation(np.flatnonzero(dominant == likes[u]))
        test[u] = pos[:2]
        users += [u] * (pos.size - 2)
        items += list(pos[2:])
    return {"feats": feats, "concepts": concepts, "likes": likes, "users": np.array(users), "items": np.array(items),
            "test": test, "n_users": n_users, "n_items": n_items, "dominant": dominant}


@pytest.mark.parametrize("name", ["jifr", "jifr_na"])
def test_jifr_learns_items_and_key_frames_from_item_feedback_only(name):
    problem = item_problem(seed=0)
    model = build_model(name, n_users=problem["n_users"], n_items=problem["n_items"],
                        feature_dim=problem["feats"].shape[-1], dim=16)
    model.set_item_frames(problem["feats"])
    rng = np.random.default_rng(1)
    history = fit(model, lambda e: list(iterate_batches(
        pairwise_examples(problem["users"], problem["items"], problem["n_items"], 4, rng), 32, rng=rng)),
        epochs=20, lr=0.01)
    assert history[-1]["loss"] < history[0]["loss"]
    trained = PairSet(problem["users"], problem["items"], problem["n_items"])
    hr, frame_ndcg1, rand_hr, rand_ndcg1 = [], [], [], []
    for u in range(problem["n_users"]):
        cand = np.arange(problem["n_items"])
        cand = cand[~trained.contains(np.full(cand.size, u), cand)]
        rel = np.isin(cand, problem["test"][u])
        hr.append(ranking_metrics(model.score(torch.tensor(u), torch.as_tensor(cand)).numpy(), rel, (3,))["hr@3"])
        rand_hr.append(ranking_metrics(rng.random(cand.size), rel, (3,))["hr@3"])
        for i in np.flatnonzero(problem["dominant"] == problem["likes"][u]):  # the key frames of items u likes
            liked = problem["concepts"][i] == problem["likes"][u]  # 2 of 5
            s = model.score_frames(u, problem["feats"][i]).numpy()
            frame_ndcg1.append(ranking_metrics(s, liked, (1,))["ndcg@1"])
            rand_ndcg1.append(ranking_metrics(rng.random(liked.size), liked, (1,))["ndcg@1"])
    assert np.mean(hr) > np.mean(rand_hr) + 0.4, (np.mean(hr), np.mean(rand_hr))  # random ≈ 0.15
    assert np.mean(frame_ndcg1) > np.mean(rand_ndcg1) + 0.3, (np.mean(frame_ndcg1), np.mean(rand_ndcg1))  # ≈ 0.4


def test_jifr_attention_is_masked_and_item_frames_can_be_given_flat():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 4, 5)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)  # item 2 has no frames
    model = build_model("jifr", n_users=2, n_items=3, feature_dim=5, dim=4)
    model.set_item_frames(feats, mask)
    x, alpha, items = model.item_visual(torch.arange(3))
    assert torch.allclose(alpha.sum(1), torch.tensor([1.0, 1.0, 0.0]))
    assert bool((alpha[~torch.as_tensor(mask)] == 0).all()) and bool((alpha[torch.as_tensor(mask)] > 0).all())
    assert torch.equal(x[2], torch.zeros(4)) and bool(torch.isfinite(model.score(0, torch.arange(3))).all())
    # the padded frames' values do not matter
    feats2 = feats.copy()
    feats2[~mask] = 99.0
    before = model.score(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]))
    model.set_item_frames(feats2, mask)
    assert torch.equal(model.score(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2])), before)
    # the same frames as a flat matrix plus an index
    flat = feats[mask]
    index = np.full(mask.shape, -1)
    index[mask] = np.arange(flat.shape[0])
    model.set_item_frames(flat, frame_index=index)
    assert torch.allclose(model.score(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2])), before)
    # JIFR_NA: plain mean over the valid frames, β1 = β2 = 1/2
    na = build_model("jifr_na", n_users=2, n_items=3, feature_dim=5, dim=4).set_item_frames(feats, mask)
    x, _, _ = na.item_visual(torch.tensor([1]))
    expected = na.P(torch.as_tensor(feats[1, :2])).mean(0)
    assert torch.allclose(x[0], expected, atol=1e-6)
    assert torch.equal(na.rating_weights(torch.tensor([0]), torch.tensor([1])), torch.tensor([[0.5, 0.5]]))
    u, v, w = na.U.weight[0], na.V.weight[1], na.Wv.weight[0]
    assert torch.allclose(na.score(0, 1), 0.5 * (u @ v + w @ expected), atol=1e-6)


# -- KFRCI: the paper's objective, by hand ----------------------------------------------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _kfrci_reference_loss(params: dict[str, np.ndarray], batch: dict[str, np.ndarray], *, init: int, alpha: float,
                          hidden: int) -> tuple[float, float, int]:
    """−L3/B by hand (Eq. 9–12): returns (loss, the LM log-likelihood sum, predicted words)."""
    B = batch["user"].shape[0]
    loglik_bce, loglik_lm, n_words = 0.0, 0.0, 0
    for r in range(B):
        p = params["user.weight"][batch["user"][r]]
        q = params["item.weight"][batch["frame"][r]]
        q_star = q * (params["W_img.weight"] @ batch["features"][r])
        es = [p * q_star]
        j = 0
        while f"tower.{j}.weight" in params:
            es.append(np.maximum(params[f"tower.{j}.weight"] @ es[-1], 0.0))
            j += 1
        y_hat = _sigmoid(float(params["w_out.weight"] @ es[-1]))
        y = batch["label"][r]
        loglik_bce += y * math.log(y_hat) + (1 - y) * math.log(1 - y_hat)
        words = [w for w in batch["tokens"][r] if w != 0]
        h, c = np.zeros(hidden), np.zeros(hidden)
        for t in range(1, len(words)):  # Σ_{t=1}^{s-1} log p(w_t | e_init, w_0..w_{t-1})
            x = np.concatenate([params["word_emb.weight"][words[t - 1]], es[init]])
            g = params["lstm.weight_ih_l0"] @ x + params["lstm.bias_ih_l0"] + params["lstm.weight_hh_l0"] @ h \
                + params["lstm.bias_hh_l0"]
            i_g, f_g, g_g, o_g = np.split(g, 4)  # torch's gate order
            c = _sigmoid(f_g) * c + _sigmoid(i_g) * np.tanh(g_g)
            h = _sigmoid(o_g) * np.tanh(c)
            logits = params["W_out.weight"] @ h + params["W_out.bias"]
            loglik_lm += logits[words[t]] - (np.log(np.exp(logits - logits.max()).sum()) + logits.max())
            n_words += 1
    L3 = alpha * loglik_lm + (1 - alpha) * loglik_bce
    return -L3 / B, loglik_lm, n_words


def _tiny_kfrci(**hyper) -> KFRCI:
    hyper.setdefault("activation", "relu")  # Eq. 10 as the paper writes it, which the numpy reference computes
    model = build_model("kfrci", n_users=2, n_items=3, feature_dim=3, vocab_size=6, dim=4, layers=[3, 2],
                        word_dim=2, hidden=3, **hyper)
    rng = np.random.default_rng(42)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.as_tensor(rng.normal(0, 0.7, tuple(p.shape)), dtype=torch.float32))
    return model


TINY_BATCH = {
    "user": np.array([0, 1, 0, 1]),
    "frame": np.array([0, 2, 1, 1]),
    "label": np.array([1.0, 0.0, 0.0, 1.0]),
    "features": np.array([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7], [0.0, 1.0, 1.0], [-0.4, 0.8, 0.1]]),
    # a positive's 3-word comment, a negatively commented frame (in O-: its words count), no comment, one word
    "tokens": np.array([[2, 3, 4, 0], [5, 2, 0, 0], [0, 0, 0, 0], [3, 0, 0, 0]]),
}


@pytest.mark.parametrize("init", [0, 1, 2])
def test_kfrci_loss_is_the_papers_objective_by_hand(init):
    model = _tiny_kfrci(init=init, alpha=0.4)
    params = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    expected, loglik_lm, n_words = _kfrci_reference_loss(params, TINY_BATCH, init=init, alpha=0.4, hidden=3)
    assert n_words == 3  # 2 + 1 + 0 + 0: the first word of a comment is given, not predicted
    batch = {k: torch.as_tensor(v) for k, v in TINY_BATCH.items()}
    batch["features"] = batch["features"].float()
    batch["label"] = batch["label"].float()
    assert model.loss(batch).item() == pytest.approx(expected, rel=1e-5)
    # per-token normalisation: α·(NLL per predicted word) + (1 − α)·(BCE per row)
    token = _tiny_kfrci(init=init, alpha=0.4, lm_norm="token")
    bce_only = _kfrci_reference_loss(params, TINY_BATCH, init=init, alpha=0.0, hidden=3)[0]
    assert token.loss(batch).item() == pytest.approx(0.4 * -loglik_lm / n_words + 0.6 * bce_only, rel=1e-5)


def test_kfrci_start_symbol_predicts_every_word():
    batch = {k: torch.as_tensor(v) for k, v in TINY_BATCH.items()}
    batch["features"] = batch["features"].float()
    assert _tiny_kfrci().loss_terms(batch)["tokens"].item() == 3
    assert _tiny_kfrci(lm_bos=True).loss_terms(batch)["tokens"].item() == 3 + 2 + 1


def test_kfrci_lstm_gets_e_init_at_every_step():
    model = _tiny_kfrci(init=1)
    tokens = torch.tensor([[2, 3, 4, 5, 2, 3]])
    e_a, e_b = torch.tensor([[0.5, -0.2, 0.9]]), torch.tensor([[-0.3, 0.8, 0.1]])
    inputs = model.decoder_inputs(e_a, tokens)
    assert inputs.shape == (1, 5, 2 + 3)
    assert torch.equal(inputs[0, :, 2:], e_a.expand(5, -1))  # the extra input block is e_init at every step
    # with the recurrence switched off (no hidden-to-hidden weights, forget gate shut), h_t depends on step t's input
    # only: e_init changes every h_t …
    with torch.no_grad():
        model.lstm.weight_hh_l0.zero_()
        model.lstm.bias_ih_l0[3:6] = -1e4  # gates are ordered i, f, g, o: σ(−1e4) = 0 forgets c_{t-1}
    h_a, h_b = model.decode_hidden(e_a, tokens), model.decode_hidden(e_b, tokens)
    assert bool(((h_a - h_b).abs().amax(-1) > 1e-4).all()), (h_a - h_b).abs().amax(-1)
    # … while a different first word changes only the first step (so this check can tell "every step" apart)
    h_c = model.decode_hidden(e_a, torch.tensor([[4, 3, 4, 5, 2, 3]]))
    changed = (h_a - h_c).abs().amax(-1)[0] > 1e-6
    assert changed.tolist() == [True, False, False, False, False]


@pytest.mark.parametrize("init", [0, 1, 2, 3])
def test_kfrci_every_init_layer_trains(init):
    model = build_model("kfrci", n_users=3, n_items=4, feature_dim=5, vocab_size=7, dim=16, init=init)
    assert model.widths == default_widths(16, 3) == [6, 4, 4]
    assert model.lstm.input_size == 32 + [16, 6, 4, 4][init]
    batch = {"user": torch.tensor([0, 1, 2]), "frame": torch.tensor([0, 1, 3]), "label": torch.tensor([1.0, 0.0, 1.0]),
             "features": torch.randn(3, 5), "tokens": torch.tensor([[2, 3, 4], [0, 0, 0], [5, 6, 0]])}
    es, _, _ = model.preference_embeddings(batch["user"], batch["frame"], batch["features"])
    assert torch.equal(model.decoder_inputs(es[init], batch["tokens"])[:, :, 32:], es[init].unsqueeze(1).expand(-1, 2, -1))
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.lstm.weight_ih_l0.grad.abs().sum() > 0 and model.user.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        build_model("kfrci", n_users=3, n_items=4, feature_dim=5, vocab_size=7, dim=16, init=4)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_a_kfrci_tower_pushed_below_zero_is_dead_with_relu_and_recovers_with_leaky_relu(activation):
    """Eq. 10's bias-free ReLU tower: once the last layer maps every input below zero, every pair scores 0 and no
    gradient reaches the tower or the embeddings through the rating term; leaky_relu keeps both alive."""
    model = build_model("kfrci", n_users=3, n_items=4, feature_dim=5, vocab_size=7, dim=16, activation=activation)
    with torch.no_grad():
        last = model.tower[-1].weight
        last.copy_(-last.abs())  # e_{D-1} ≥ 0 after a ReLU, so W_D e_{D-1} ≤ 0 for every pair
    batch = {"user": torch.tensor([0, 1, 2, 0]), "frame": torch.tensor([0, 1, 3, 2]),
             "label": torch.tensor([1.0, 0.0, 1.0, 0.0]), "features": torch.randn(4, 5),
             "tokens": torch.zeros(4, 3, dtype=torch.long)}  # no comments: only the rating term
    scores = model.score(batch["user"], batch["frame"], batch["features"])
    model.loss(batch).backward()
    tower_grad = sum(float(layer.weight.grad.abs().sum()) for layer in model.tower)
    if activation == "relu":
        assert torch.all(scores == 0) and tower_grad == 0 and float(model.user.weight.grad.abs().sum()) == 0
    else:
        assert scores.std() > 0 and tower_grad > 0 and float(model.user.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_resolved_hyper_parameters_hold_every_default_and_build_the_same_model(name):
    resolved = MODELS[name].resolve_hyper({"dim": 8} if name != "most_popular" else {})
    assert name == "most_popular" or resolved["dim"] == 8
    shape = {"n_users": 3, "n_items": 4, "feature_dim": 5, "vocab_size": 7}
    assert build_model(name, **shape, **resolved).hyper == build_model(name, **shape, **{
        k: v for k, v in resolved.items() if k == "dim"}).hyper


def test_resolving_a_hyper_parameter_the_model_lacks_names_it():
    with pytest.raises(ValueError, match="kfrci has no hyper-parameter dimm"):
        MODELS["kfrci"].resolve_hyper({"dimm": 8})


def test_unknown_tower_activation_is_an_error():
    with pytest.raises(ValueError, match="activation"):
        build_model("kfrci", n_users=3, n_items=4, feature_dim=5, vocab_size=7, activation="tanh")


def test_kfrc_and_kfri_are_the_papers_single_source_models():
    kfri = build_model("kfri", n_users=2, n_items=3, feature_dim=4, dim=5)
    u, k, f = torch.tensor([1]), torch.tensor([2]), torch.randn(1, 4)
    q_star = kfri.item.weight[2] * (kfri.W_img.weight @ f[0])
    assert torch.allclose(kfri.score(u, k, f), (kfri.user.weight[1] * q_star).sum().reshape(1), atol=1e-6)
    kfrc = build_model("kfrc", n_users=2, n_items=3, vocab_size=6, dim=5)
    assert torch.allclose(kfrc.score(u, k), (kfrc.user.weight[1] @ kfrc.item.weight[2]).reshape(1), atol=1e-6)
    batch = {"user": u, "frame": k, "label": torch.tensor([1.0]), "tokens": torch.tensor([[2, 3, 4]])}
    terms = kfrc.loss_terms(batch)
    assert kfrc.loss(batch).item() == pytest.approx((terms["lm"] + terms["bce"]).item(), rel=1e-6)  # LM + BCE


def test_baseline_losses_by_hand():
    pmf = build_model("pmf", n_users=2, n_items=3, dim=4, loss="mse", reg=0.1)
    u, k, y = torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1]), torch.tensor([1.0, 0.0, 1.0])
    p, q = pmf.user.weight[u], pmf.item.weight[k]
    expected = (((p * q).sum(1) - y) ** 2).sum() + 0.1 * (p.pow(2).sum() + q.pow(2).sum())
    assert pmf.loss({"user": u, "frame": k, "label": y}).item() == pytest.approx(expected.item() / 3, rel=1e-6)
    bpr = build_model("bpr", n_users=2, n_items=5, dim=4, reg=0.1)
    user, pos, neg = torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([[0, 3, 4], [4, 4, 1]])
    P, Q = bpr.user.weight.detach().numpy(), bpr.item.weight.detach().numpy()
    total = 0.0
    for r in range(2):
        for j in neg[r].tolist():
            x = P[user[r]] @ Q[pos[r]] - P[user[r]] @ Q[j]
            total += -math.log(1 / (1 + math.exp(-x)))
        total += 0.1 * (P[user[r]] @ P[user[r]] + Q[pos[r]] @ Q[pos[r]] + sum(Q[j] @ Q[j] for j in neg[r].tolist()))
    assert bpr.loss({"user": user, "pos": pos, "neg": neg}).item() == pytest.approx(total / 2, rel=1e-5)


# -- scoring, checkpoints, determinism --------------------------------------------------------------------------------
def _tiny(name: str, seed: int = 0) -> KeyFrameRecommender:
    hyper = {} if name == "most_popular" else {"dim": 8}
    model = build_model(name, n_users=3, n_items=6, feature_dim=5, vocab_size=9, seed=seed, **hyper)
    if name.startswith("jifr"):
        model.set_item_frames(np.random.default_rng(0).normal(size=(6, 3, 5)), np.array([[1, 1, 1], [1, 0, 0]] * 3, bool))
    if name == "most_popular":
        model.fit_counts([0, 1, 1, 4, 4, 4])
    return model


def _scores(model: KeyFrameRecommender) -> torch.Tensor:
    feats = torch.as_tensor(np.random.default_rng(1).normal(size=(6, 5)), dtype=torch.float32)
    users, items = torch.tensor([0, 1, 2, 2, 1, 0]), torch.arange(6)
    return model.score(users, items, None if model.level == "item" or not model.uses_images else feats)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_score_is_vectorised_and_broadcasts_one_user(name):
    model = _tiny(name)
    feats = torch.randn(6, 5)
    f = None if model.level == "item" or not model.uses_images else feats
    many = model.score(torch.tensor(2), torch.arange(6), f)
    one_by_one = torch.stack([model.score(torch.tensor([2]), torch.tensor([k]), None if f is None else f[k:k + 1])[0]
                              for k in range(6)])
    assert many.shape == (6,) and torch.allclose(many, one_by_one, atol=1e-6)
    assert not many.requires_grad
    grid = model.score(torch.tensor([[0], [2]]), torch.arange(6)[None, :], f)  # users × frames
    assert grid.shape == (2, 6) and torch.allclose(grid[1], many, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpoint_round_trip_gives_identical_scores(name, tmp_path):
    model = _tiny(name)
    path = tmp_path / f"{name}.pt"
    model.save(path)
    raw = torch.load(path, weights_only=True)  # plain tensors and Python values only
    assert set(raw) == {"state_dict", "hyper", "meta"} and raw["meta"]["name"] == name
    loaded = KeyFrameRecommender.load(path)
    assert type(loaded) is type(model) and loaded.hyper == model.hyper
    assert torch.equal(_scores(loaded), _scores(model))
    assert type(MODELS[name].load(path)) is type(model)


def test_checkpoint_of_another_model_class_is_refused(tmp_path):
    _tiny("kfrci").save(tmp_path / "m.pt")
    with pytest.raises(TypeError):
        MODELS["bpr"].load(tmp_path / "m.pt")


def test_a_kfrci_checkpoint_from_before_the_activation_option_loads_with_the_relu_it_was_trained_with(tmp_path):
    model = build_model("kfrci", n_users=3, n_items=6, feature_dim=5, vocab_size=7, dim=16, activation="relu")
    leaky = build_model("kfrci", n_users=3, n_items=6, feature_dim=5, vocab_size=7, dim=16)
    leaky.load_state_dict(model.state_dict())
    assert leaky.hyper["activation"] == "leaky_relu" and not torch.equal(_scores(leaky), _scores(model))
    model.save(tmp_path / "m.pt")
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    del raw["hyper"]["activation"]  # what every earlier checkpoint holds
    torch.save(raw, tmp_path / "old.pt")
    old = KeyFrameRecommender.load(tmp_path / "old.pt")
    assert old.hyper["activation"] == "relu" and torch.equal(_scores(old), _scores(model))


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling it would create the marker file


def test_checkpoint_with_a_pickled_object_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    model = _tiny("bpr")
    torch.save({"state_dict": model.state_dict(), "hyper": model.hyper, "meta": {"name": "bpr", "format": 1,
                "extra": _Payload(str(marker))}}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        KeyFrameRecommender.load(tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(TypeError):  # and a model cannot be built with hyper-parameters that would need pickling
        build_model("bpr", n_users=2, n_items=2, dim=np.zeros(2))


@pytest.mark.parametrize("name", ["bpr", "kfrci", "jifr"])
def test_same_seed_same_model_and_training(name):
    a, b, c = _tiny(name, seed=5), _tiny(name, seed=5), _tiny(name, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))

    def batches(model):
        rng = np.random.default_rng(0)
        if model.objective == "pairwise":
            rows = pairwise_examples([0, 1, 2, 0], [1, 2, 3, 4], 6, 2, rng)
            if model.level == "frame" and model.uses_images:
                rows["pos_features"], rows["neg_features"] = rng.normal(size=(4, 5)), rng.normal(size=(4, 2, 5))
        else:
            rows = pointwise_examples([0, 1, 2, 0], [1, 2, 3, 4], 6, 2, rng)
            del rows["source"]
            rows["features"] = rng.normal(size=(12, 5))
            rows["tokens"] = np.where(rows["label"][:, None] > 0, rng.integers(2, 9, (12, 3)), 0)
        return list(iterate_batches(rows, 4, rng=rng))

    ha = fit(a, batches(a), epochs=3, lr=0.05, seed=1)
    hb = fit(b, batches(b), epochs=3, lr=0.05, seed=1)
    assert ha == hb
    assert torch.equal(_scores(a), _scores(b))


def test_fit_refuses_a_spent_generator_and_can_stop_early():
    model = _tiny("bpr")
    gen = (b for b in [{"user": np.array([0]), "pos": np.array([1]), "neg": np.array([2])}])
    with pytest.raises(ValueError, match="no batches"):
        fit(model, gen, epochs=2)
    history = fit(model, [{"user": np.array([0]), "pos": np.array([1]), "neg": np.array([2])}], epochs=10,
                  on_epoch_end=lambda epoch, m, record: epoch == 2)
    assert [r["epoch"] for r in history] == [0, 1, 2]


def test_unknown_model_names_and_hyper_parameters_are_errors():
    with pytest.raises(KeyError):
        build_model("hft", n_users=1, n_items=1)
    with pytest.raises(TypeError):
        build_model("pmf", n_users=1, n_items=1, latent=3)
    with pytest.raises(ValueError):
        build_model("kfri", n_users=1, n_items=1)  # no feature_dim
    with pytest.raises(ValueError):
        build_model("kfrc", n_users=1, n_items=1)  # no vocab_size
    assert build_model("KFRCI", n_users=1, n_items=1, feature_dim=2, vocab_size=3).name == "kfrci"


# -- sampling ----------------------------------------------------------------------------------------------------------
def test_negatives_are_never_positives_and_cover_the_rest_uniformly():
    rng = np.random.default_rng(0)
    users, items = np.array([0, 0, 0, 1]), np.array([0, 1, 2, 3])
    positives = PairSet(users, items, 6)
    neg = sample_negatives(np.array([0] * 3000 + [1] * 10), 6, 2, positives, rng)
    assert neg.shape == (3010, 2)
    assert not positives.contains(np.repeat(np.array([0] * 3000 + [1] * 10)[:, None], 2, 1), neg).any()
    counts = np.bincount(neg[:3000].ravel(), minlength=6)
    assert counts[:3].sum() == 0 and np.all(np.abs(counts[3:] / 6000 - 1 / 3) < 0.03)
    again = sample_negatives(np.array([0] * 3000 + [1] * 10), 6, 2, positives, np.random.default_rng(0))
    assert np.array_equal(neg, again)
    assert set(sample_negatives(np.array([0] * 50), 6, 1, positives, rng, candidates=[1, 4]).ravel()) == {4}
    with pytest.raises(ValueError):
        sample_negatives(np.array([0]), 3, 1, positives, rng)  # user 0 has every item


def test_pointwise_and_pairwise_examples():
    rng = np.random.default_rng(0)
    rows = pointwise_examples([0, 1], [2, 3], 10, 5, rng)
    assert rows["label"].tolist() == [1, 1] + [0] * 10
    assert rows["user"].tolist() == [0, 1] + [0] * 5 + [1] * 5 and rows["source"].tolist() == [0, 1] + [0] * 5 + [1] * 5
    pairs = pairwise_examples([0, 1], [2, 3], 10, 10, rng)
    assert pairs["neg"].shape == (2, 10) and pairwise_examples([0], [2], 10, 1, rng)["neg"].shape == (1,)
    assert pad_sequences([[3, 4, 5], [], [6]], max_len=2).tolist() == [[3, 4], [0, 0], [6, 0]]


@pytest.mark.parametrize("name", ["kfri", "kfrc", "kfrci", "vbpr", "pmf", "jifr"])
def test_the_batch_frame_scorer_gives_the_models_own_scores(name):
    """Batch scoring precomputes the item side once per frame; the scores must not change."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(12, 6)).astype(np.float32)
    model = build_model(name, n_users=5, n_items=4 if name == "jifr" else 12, feature_dim=6, vocab_size=9, dim=4)
    users, frames = rng.integers(0, 5, 40), rng.integers(0, 12, 40)
    if name == "jifr":
        model.set_item_frames(feats, frame_index=np.arange(12).reshape(4, 3))
        expected = model.score_frames(users, feats[frames]).numpy()
    else:
        expected = model.score(users, frames, feats[frames] if model.uses_images else None).numpy()
    assert np.allclose(model.frame_scorer(feats)(users, frames), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["kfri", "kfrc", "kfrci", "vbpr", "pmf", "bpr", "jifr"])
def test_the_block_scorer_gives_every_user_the_pair_scorers_scores_for_one_videos_frames(name):
    """Batch scoring scores users x one video's frames as a block; a block is the grid of pairs, nothing else."""
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(12, 6)).astype(np.float32)
    model = build_model(name, n_users=5, n_items=4 if name == "jifr" else 12, feature_dim=6, vocab_size=9, dim=4)
    if name == "jifr":
        model.set_item_frames(feats, frame_index=np.arange(12).reshape(4, 3))
    users, frames = np.array([4, 0, 2, 0]), np.array([7, 3, 11])
    block = model.frame_block_scorer(feats)(users, frames)
    pairs = model.frame_scorer(feats)
    assert block.shape == (4, 3)
    assert np.allclose(block, [[pairs(np.array([u]), np.array([f]))[0] for f in frames] for u in users], atol=1e-5)
