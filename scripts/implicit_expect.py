"""implicit's own similar_items and explain on a registry version's factors.

Usage: python implicit_expect.py VERSION_DIR OUT.json [--items N] [--users N] [--seed S]

Loads VERSION_DIR/als (user_factors.npy, item_factors.npy, users.json, items.json,
seen_csr.npz, and the regularization/alpha of VERSION_DIR/meta.json) into an
implicit.cpu.als.AlternatingLeastSquares, then writes, for a seeded sample:
- similar: movie id -> implicit's similar_items(N=11) without the movie itself
  (top-10 movie ids and scores);
- explain: for each sampled user, implicit's recommend(N=10, filter_already_liked_items)
  and, per recommended movie, explain(N=3): (movie id, contribution) pairs.
The expected values of tests/fixtures.rs's implicit comparison; never from our code.
"""
import argparse
import json
import os

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("version_dir")
    ap.add_argument("out")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    als = os.path.join(a.version_dir, "als")
    meta = json.load(open(os.path.join(a.version_dir, "meta.json")))["metrics"]
    uf = np.load(os.path.join(als, "user_factors.npy")).astype(np.float32)
    itf = np.load(os.path.join(als, "item_factors.npy")).astype(np.float32)
    users = json.load(open(os.path.join(als, "users.json")))
    items = json.load(open(os.path.join(als, "items.json")))
    z = np.load(os.path.join(als, "seen_csr.npz"))
    seen = sp.csr_matrix(
        (np.ones(len(z["indices"]), dtype=np.float32), z["indices"], z["indptr"]),
        shape=tuple(z["shape"]),
    )
    model = AlternatingLeastSquares(
        factors=uf.shape[1],
        regularization=float(meta["regularization"]),
        alpha=float(meta["alpha"]),
        random_state=0,
    )
    model.user_factors = uf
    model.item_factors = itf
    rng = np.random.default_rng(a.seed)
    similar = {}
    for row in sorted(rng.choice(len(items), size=min(a.items, len(items)), replace=False)):
        ids, scores = model.similar_items(int(row), N=11)
        pairs = [(int(i), float(s)) for i, s in zip(ids, scores) if int(i) != int(row)][:10]
        similar[str(items[row])] = {
            "items": [items[i] for i, _ in pairs],
            "scores": [s for _, s in pairs],
        }
    explain = []
    for u in sorted(rng.choice(len(users), size=min(a.users, len(users)), replace=False)):
        u = int(u)
        ids, _ = model.recommend(u, seen[u], N=10, filter_already_liked_items=True)
        per_item = []
        for i in ids:
            _, top, _ = model.explain(u, seen, int(i), N=3)
            per_item.append({
                "movie_id": items[int(i)],
                "because": [[items[int(j)], float(c)] for j, c in top],
            })
        explain.append({"user_id": users[u], "recommendations": per_item})
    json.dump({"similar": similar, "explain": explain}, open(a.out, "w"))


if __name__ == "__main__":
    main()
