"""Train Cornac's VBPR on a prepared split in its own virtual environment (called by benchmarks/peer_vbpr.py).

    <cornac-venv>/bin/python benchmarks/_cornac_runner.py DATA.npz SCORES.npy [--fix-broadcast]

DATA.npz holds `train_user`, `train_item` (the training positives, dense indices), `features` (n_items, F),
`eval_users` (the users to score), `n_users`, `n_items` and the settings `k`, `k2`, `epochs`, `batch_size`, `lr`,
`lambda_w`, `lambda_b`, `lambda_e`, `seed`, `threads`. Writes the (len(eval_users), n_items) float32 score matrix
to SCORES.npy, columns in item index order, and prints one JSON line: {"train_s": ..., "cornac": version, ...}.

`--fix-broadcast` trains with a one-line fix to Cornac's VBPR loss (see `fix_broadcast`); without it, Cornac runs
exactly as released. Identity id maps (raw id i → index i) are passed to `Dataset.build`, so Cornac's internal
indices are ours and every item is known to the model. Kept free of kfr_spark imports: this interpreter has cornac
and torch, not the project's environment.
"""

import json
import sys
import time
from collections import OrderedDict

BUGGY = "+ feat_diff.mm(Bp)\n"


def fix_broadcast() -> None:
    """Cornac's `VBPR._fit_torch` adds the visual-bias difference `feat_diff.mm(Bp)`, shape (B, 1), to terms of
    shape (B,): torch broadcasts x̂_uij to (B, B), so the loss sums ln σ over all B² pairs of one row's β'-term with
    another row's other terms (the BPR sum weighs B times more against the L2 terms, and β' learns from mismatched
    pairs). Re-define the method with `.squeeze(-1)` on that term — the model of the paper — from Cornac's own
    source, so nothing else changes."""
    import inspect
    import textwrap

    import cornac.models.vbpr.recom_vbpr as recom

    src = textwrap.dedent(inspect.getsource(recom.VBPR._fit_torch))
    if src.count(BUGGY) != 1:
        raise SystemExit("cornac's VBPR no longer has the (B, 1) visual-bias term: nothing to fix")
    namespace: dict = {}
    exec(compile(src.replace(BUGGY, "+ feat_diff.mm(Bp).squeeze(-1)\n"), recom.__file__, "exec"),  # noqa: S102
         recom.__dict__, namespace)
    recom.VBPR._fit_torch = namespace["_fit_torch"]


def main() -> int:
    data_path, scores_path = sys.argv[1], sys.argv[2]
    fixed = "--fix-broadcast" in sys.argv[3:]
    import cornac
    import numpy as np
    import torch
    from cornac.data import Dataset, ImageModality
    from cornac.models import VBPR

    if fixed:
        fix_broadcast()

    d = np.load(data_path)
    n_users, n_items = int(d["n_users"]), int(d["n_items"])
    torch.set_num_threads(int(d["threads"]))
    seed = int(d["seed"])
    triples = list(zip(d["train_user"].tolist(), d["train_item"].tolist(), [1.0] * len(d["train_user"]),
                       strict=True))
    uid_map = OrderedDict((u, u) for u in range(n_users))
    iid_map = OrderedDict((i, i) for i in range(n_items))
    train_set = Dataset.build(triples, fmt="UIR", global_uid_map=uid_map, global_iid_map=iid_map, seed=seed)
    features = d["features"].astype(np.float32)
    image = ImageModality(features=features, ids=list(range(n_items)), normalized=False)
    train_set.add_modalities(item_image=image.build(id_map=train_set.iid_map))

    model = VBPR(k=int(d["k"]), k2=int(d["k2"]), n_epochs=int(d["epochs"]), batch_size=int(d["batch_size"]),
                 learning_rate=float(d["lr"]), lambda_w=float(d["lambda_w"]), lambda_b=float(d["lambda_b"]),
                 lambda_e=float(d["lambda_e"]), use_gpu=False, verbose=False, seed=seed)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model.fit(train_set)
    train_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0

    users = d["eval_users"].astype(int)
    scores = np.empty((users.size, n_items), dtype=np.float32)
    for row, u in enumerate(users):
        scores[row] = model.score(int(u))
    np.save(scores_path, scores)
    print(json.dumps({"train_s": train_s, "cpu_s": cpu_s, "cornac": cornac.__version__, "torch": torch.__version__,
                      "numpy": np.__version__, "n_train": len(triples), "fixed": fixed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
