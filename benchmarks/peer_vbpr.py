"""Peer check: our VBPR (kfr_spark.models) against Cornac's VBPR on the same split and features, in the same run.

One fixed-seed synthetic frame-level data set, made in numpy: key frames belong to one of a few visual concepts
(a frame's F-dim feature vector = its concept's non-negative centroid + noise, like pooled CNN activations), each
user likes a few concepts, and a user's implicit positives are drawn from their taste × item popularity × a small
hidden (non-visual) user–item affinity, so both the visual and the latent-factor terms of VBPR have something to
learn. Each user's positives are split 70/30 train/test by seed; frames without a training positive are dropped
from the catalogue (neither model can learn them).

Both models get the same training triples, the same features and the same settings: latent sizes k (γ) and k2
(θ), epochs, batch size, Adam with the same learning rate, L2 weights. Cornac minimises the batch *sum* of
−ln σ(x̂_uij) + λ/2·‖·‖²; ours the batch *mean* of −ln σ(x̂_uij) + reg·‖·‖² — Adam does not see the loss scale,
so reg = λ/2 makes the two objectives the same (Cornac weighs the negative's bias by λ_b/10; ours by reg; λ_b = λ_w
here). Negatives: uniform over the user's non-positive frames, fresh every epoch, in both (Cornac: `uij_iter`;
ours: seeded numpy). The default L2 weights (λ_w = 0.1, λ_e = 30) are where ours reaches a plateau instead of
peaking after a few epochs and then overfitting (with Cornac's defaults, λ_w = 0.01 and λ_e = 0, both peak at ~5
epochs and decay).

Cornac 2.2.2's VBPR loss has a broadcasting slip (`_cornac_runner.fix_broadcast`): x̂_uij is a (B, B) matrix, so
its BPR term weighs ~B times more against the L2 terms than the paper's, and β' learns from mismatched pairs.
Cornac therefore runs three ways, each in a child process (`_cornac_runner.py`), each handing back its full score
matrix for the test users:

* as released, with the same λ's as ours;
* as released, with every λ multiplied by the batch size (so its L2 weighs against its B² BPR terms as ours does
  against B: its best setting here, the fair peer for the released code);
* with the one-line broadcast fix, same λ's as ours (the paper's model, Cornac's code otherwise).

Evaluation, identical for all: per test user, rank every frame except the user's training positives; relevant =
the user's test positives; NDCG@10 per user, then the mean over users with a 95% CI (normal approximation), a
paired t-test ours vs each Cornac run over the same users, and the closed-form NDCG@10 of a random ranking as a
floor. Verdict, against the strongest Cornac run: ours is not worse beyond noise when its mean ≥ Cornac's or the
difference is not significant (p ≥ 0.05). Train seconds are wall seconds of training alone (no speed assertion;
Cornac draws its negatives in a Python loop).

Cornac (and the torch it needs) must not enter the project's .venv: it is installed into its own environment,
${KFR_CACHE_DIR:-~/.cache/kfr-spark}/cornac-venv, made once with uv (python3.11; torch==2.5.1 from the PyTorch
CPU index when it is reachable, else the same pin from PyPI, as the lock file has it; then cornac==2.2.2 and
numpy==1.26.4 from PyPI) and reused while its pins import. cornac 2.2.2 is the newest release that loads here with
numpy < 2: the 2.3.x wheels need GLIBCXX_3.4.32 (a newer libstdc++ than Debian 12's), later releases numpy ≥ 2.

    .venv/bin/python benchmarks/peer_vbpr.py                       # 1000 users × 2000 key frames, 30 epochs
    .venv/bin/python benchmarks/peer_vbpr.py --users 500 --items 1000 --epochs 20 --variants released
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # kfr_spark, imported where used

CACHE = Path(os.environ.get("KFR_CACHE_DIR", Path.home() / ".cache" / "kfr-spark"))
CORNAC_VENV = CACHE / "cornac-venv"
CORNAC_RUNNER = Path(__file__).resolve().parent / "_cornac_runner.py"
CORNAC_PIN, TORCH_PIN, NUMPY_PIN = "2.2.2", "2.5.1", "1.26.4"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


# -- Cornac's environment --------------------------------------------------------------------------------------------
def _reachable(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except Exception:  # noqa: BLE001 — any failure means "use PyPI"
        return False


def cornac_python() -> Path:
    """The cornac venv's interpreter, made on first use (idempotent: reused while its pins import)."""
    python = CORNAC_VENV / "bin" / "python"
    probe = (f"import cornac, numpy, torch; assert cornac.__version__ == {CORNAC_PIN!r}; "
             f"assert numpy.__version__ == {NUMPY_PIN!r}; assert torch.__version__.split('+')[0] == {TORCH_PIN!r}; "
             "from cornac.models import VBPR")
    if python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True, check=False).returncode == 0:
        return python
    print(f"  setting up cornac=={CORNAC_PIN} in {CORNAC_VENV} (once)", flush=True)
    uv = CACHE / "tools" / "bin" / "uv"
    if not uv.exists():
        uv = Path(shutil.which("uv") or "")
    env = {**os.environ, "UV_CACHE_DIR": str(CACHE / "uv"), "UV_LINK_MODE": os.environ.get("UV_LINK_MODE", "hardlink")}
    if CORNAC_VENV.exists():
        shutil.rmtree(CORNAC_VENV)
    if uv.name == "uv" and uv.exists():
        def install(*args: str) -> None:
            subprocess.run([str(uv), "pip", "install", "-q", "-p", str(python), *args], check=True, env=env)

        subprocess.run([str(uv), "venv", "-q", "-p", "python3.11", str(CORNAC_VENV)], check=True, env=env)
    else:  # no uv: plain venv + pip
        def install(*args: str) -> None:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True, env=env)

        subprocess.run(["python3.11", "-m", "venv", str(CORNAC_VENV)], check=True)
    if _reachable(f"{TORCH_CPU_INDEX}/torch/"):
        install(f"torch=={TORCH_PIN}", "--index-url", TORCH_CPU_INDEX, "--extra-index-url", "https://pypi.org/simple")
    else:
        print(f"  {TORCH_CPU_INDEX} unreachable: torch=={TORCH_PIN} from PyPI", flush=True)
        install(f"torch=={TORCH_PIN}")
    install(f"cornac=={CORNAC_PIN}", f"numpy=={NUMPY_PIN}", f"torch=={TORCH_PIN}")
    subprocess.run([str(python), "-c", probe], check=True)
    return python


# -- data ------------------------------------------------------------------------------------------------------------
def make_data(n_users: int, n_items: int, feature_dim: int, n_concepts: int, seed: int, test_share: float = 0.3):
    """Synthetic frame-level implicit feedback: returns (features (I, F) float32, train (U, I) bool, test (U, I)
    bool), frames without a training positive already dropped."""
    rng = np.random.default_rng(seed)
    centroids = np.maximum(rng.normal(0.0, 1.0, (n_concepts, feature_dim)), 0.0) * 1.5
    concept = rng.integers(0, n_concepts, n_items)
    features = np.maximum(centroids[concept] + rng.normal(0.0, 0.6, (n_items, feature_dim)), 0.0)
    popularity = rng.lognormal(0.0, 1.0, n_items)
    hidden_dim = 8
    z_item = rng.normal(0.0, 1.0, (n_items, hidden_dim))
    z_user = rng.normal(0.0, 1.0, (n_users, hidden_dim))
    train = np.zeros((n_users, n_items), dtype=bool)
    test = np.zeros((n_users, n_items), dtype=bool)
    for u in range(n_users):
        liked = rng.choice(n_concepts, size=int(rng.integers(1, 4)), replace=False)
        logits = np.log(popularity) + 3.0 * np.isin(concept, liked) + 0.5 * (z_item @ z_user[u]) / math.sqrt(hidden_dim)
        p = np.exp(logits - logits.max())
        n_pos = min(int(10 + rng.poisson(25)), n_items // 2)
        pos = rng.choice(n_items, size=n_pos, replace=False, p=p / p.sum())
        rng.shuffle(pos)
        n_test = max(1, round(test_share * n_pos))
        test[u, pos[:n_test]] = True
        train[u, pos[n_test:]] = True
    keep = train.any(0)
    return features[keep].astype(np.float32), train[:, keep], test[:, keep], int((~keep).sum())


# -- ours ------------------------------------------------------------------------------------------------------------
def train_ours(features: np.ndarray, train: np.ndarray, args) -> tuple[object, float]:
    import torch

    from kfr_spark.models import build_model, fit

    torch.set_num_threads(args.threads)
    n_users, n_items = train.shape
    users, items = np.nonzero(train)
    model = build_model("vbpr", n_users=n_users, n_items=n_items, feature_dim=features.shape[1], dim=args.k,
                        visual_dim=args.k2, reg=args.lambda_w / 2, reg_visual=args.lambda_e / 2, seed=args.seed,
                        init_std=args.init_std)

    def epoch_batches(epoch: int):
        rng = np.random.default_rng([args.seed, epoch])
        order = rng.permutation(users.size)
        u, i = users[order], items[order]
        j = rng.integers(0, n_items, u.size)
        bad = train[u, j]
        while bad.any():  # uniform over the user's non-positive frames
            j[bad] = rng.integers(0, n_items, int(bad.sum()))
            bad = train[u, j]
        for s in range(0, u.size, args.batch_size):
            sl = slice(s, s + args.batch_size)
            yield {"user": u[sl], "pos": i[sl], "neg": j[sl], "pos_features": features[i[sl]],
                   "neg_features": features[j[sl]]}

    started = time.perf_counter()
    fit(model, epoch_batches, epochs=args.epochs, lr=args.lr, optimizer="adam", seed=args.seed)
    return model, time.perf_counter() - started


def score_ours(model, features: np.ndarray, users: np.ndarray, chunk: int = 64) -> np.ndarray:
    n_items = features.shape[0]
    items = np.arange(n_items)[None, :]
    out = np.empty((users.size, n_items), dtype=np.float32)
    for s in range(0, users.size, chunk):
        block = users[s:s + chunk, None]
        out[s:s + chunk] = model.score(block, items, features).numpy()
    return out


# -- Cornac ----------------------------------------------------------------------------------------------------------
VARIANTS = {  # name → (label, λ multiplier: None = the batch size, fix the broadcast)
    "released": ("Cornac {v} VBPR", 1, False),
    "scaled": ("Cornac {v} VBPR, λ×batch", None, False),
    "fixed": ("Cornac {v} VBPR, fixed", 1, True),
}


def train_cornac(python: Path, features: np.ndarray, train: np.ndarray, users: np.ndarray, args, tmp: Path,
                 variant: str) -> tuple[np.ndarray, dict]:
    _, scale, fixed = VARIANTS[variant]
    scale = args.batch_size if scale is None else scale
    tu, ti = np.nonzero(train)
    data, scores = tmp / f"split-{variant}.npz", tmp / f"cornac-{variant}.npy"
    np.savez(data, train_user=tu, train_item=ti, features=features, eval_users=users, n_users=train.shape[0],
             n_items=train.shape[1], k=args.k, k2=args.k2, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
             lambda_w=args.lambda_w * scale, lambda_b=args.lambda_w * scale, lambda_e=args.lambda_e * scale,
             seed=args.seed, threads=args.threads)
    cmd = [str(python), str(CORNAC_RUNNER), str(data), str(scores), *(["--fix-broadcast"] if fixed else [])]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"cornac runner ({variant}) failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return np.load(scores), json.loads(proc.stdout.strip().splitlines()[-1])


# -- evaluation ------------------------------------------------------------------------------------------------------
def ndcg10(scores: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    from kfr_spark.models.metrics import ranking_metrics

    return np.asarray(ranking_metrics(scores, test, ks=(10,), mask=~train, metrics=("ndcg",))["ndcg@10"])


def ci95(values: np.ndarray) -> tuple[float, float, float]:
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, mean - half, mean + half


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000, help="users (default 1000)")
    parser.add_argument("--items", type=int, default=2000,
                        help="key frames, before dropping those without a training positive (default 2000)")
    parser.add_argument("--features", type=int, default=64, help="feature dimension F (default 64)")
    parser.add_argument("--concepts", type=int, default=12, help="visual concepts (default 12)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs, all models (default 30)")
    parser.add_argument("--k", type=int, default=20, help="latent size of γ, all models (default 20)")
    parser.add_argument("--k2", type=int, default=20, help="latent size of θ (visual), all models (default 20)")
    parser.add_argument("--batch-size", type=int, default=128, help="pairs per batch, all models (default 128)")
    parser.add_argument("--lr", type=float, default=0.005, help="Adam learning rate, all models (default 0.005)")
    parser.add_argument("--lambda-w", type=float, default=0.1,
                        help="Cornac's λ_w = λ_b on factors and biases (ours: reg = λ_w/2) (default 0.1)")
    parser.add_argument("--lambda-e", type=float, default=30.0,
                        help="Cornac's λ_e on E and β' (ours: reg_visual = λ_e/2) (default 30)")
    parser.add_argument("--init-std", type=float, default=0.05,
                        help="ours: std of the initial factors (Cornac: Xavier uniform, std ≈ 0.03-0.04 here) "
                             "(default 0.05)")
    parser.add_argument("--variants", default="released,scaled,fixed",
                        help=f"Cornac runs, comma-separated, of {', '.join(VARIANTS)} (default all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads, all models (default 1: batches of 128 gain nothing from a second "
                             "thread, and a shared machine makes spinning threads slow)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown or not variants:
        parser.error(f"--variants: unknown {sorted(unknown)}; known: {', '.join(VARIANTS)}")

    wall0 = time.perf_counter()
    python = cornac_python()
    features, train, test, dropped = make_data(args.users, args.items, args.features, args.concepts, args.seed)
    users = np.flatnonzero(test.any(1))
    print(f"data: {train.shape[0]:,} users × {train.shape[1]:,} key frames (F={features.shape[1]}, {args.concepts} "
          f"concepts; {dropped} frames without a training positive dropped), {int(train.sum()):,} train / "
          f"{int(test.sum()):,} test positives, {users.size:,} test users")
    print(f"settings: k={args.k} k2={args.k2} epochs={args.epochs} batch={args.batch_size} Adam lr={args.lr} "
          f"λ_w=λ_b={args.lambda_w} λ_e={args.lambda_e} (ours: reg={args.lambda_w / 2:g}, "
          f"reg_visual={args.lambda_e / 2:g}) threads={args.threads} seed={args.seed}", flush=True)

    model, ours_s = train_ours(features, train, args)
    tr, te = train[users], test[users]
    ours = ndcg10(score_ours(model, features, users), tr, te)
    rows = [(f"kfr_spark VBPR (torch {_torch_version()})", ours, ours_s)]
    with tempfile.TemporaryDirectory(prefix="kfr-peer-vbpr-") as tmp:
        for variant in variants:
            scores, info = train_cornac(python, features, train, users, args, Path(tmp), variant)
            rows.append((VARIANTS[variant][0].format(v=info["cornac"]), ndcg10(scores, tr, te), info["train_s"]))
            print(f"  {rows[-1][0]}: trained in {info['train_s']:.1f} s", flush=True)

    from kfr_spark.models.metrics import paired_t_test, random_ranking_metrics

    floor = random_ranking_metrics((~tr).sum(1), te.sum(1), ks=(10,), metrics=("ndcg",))["ndcg@10"]
    print(f"\nNDCG@10 over {users.size:,} test users (all frames but the user's training positives ranked)")
    head = f"{'model':<32} {'NDCG@10':>8} {'95% CI':>17} {'train s':>8} {'ours − it':>10} {'p':>9}"
    print(head)
    print("-" * len(head))
    tests = {}
    for name, values, secs in rows:
        m, lo, hi = ci95(values)
        line = f"{name:<32} {m:>8.4f}  [{lo:.4f}, {hi:.4f}] {secs:>8.1f}"
        if values is not ours:
            tests[name] = t = paired_t_test(ours, values)
            line += f" {t.mean_diff:>+10.4f} {t.p_value:>9.3g}"
        print(line)
    print(f"{'random ranking (expected)':<32} {float(np.mean(floor)):>8.4f}")
    print("(ours − it: mean paired difference in NDCG@10; p: two-sided paired t-test over the same users)")
    peer = max(rows[1:], key=lambda r: float(r[1].mean()))[0]
    t = tests[peer]
    ok = t.mean_diff >= 0 or t.p_value >= 0.05
    print(f"\nstrongest Cornac run: {peer}; ours − it = {t.mean_diff:+.4f} (paired t = {t.statistic:.2f}, "
          f"df = {t.df:.0f}, p = {t.p_value:.3g})")
    print(f"ours is not worse beyond noise: {'yes' if ok else 'no'}")
    print(f"wall time {time.perf_counter() - wall0:.0f} s")
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


if __name__ == "__main__":
    sys.exit(main())
