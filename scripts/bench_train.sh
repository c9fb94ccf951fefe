#!/usr/bin/env bash
# `make bench-train`: our trainer against implicit 0.7.3 (../shared/peer), same splits,
# same metric definitions, run back to back so both see the same machine load.
#
#   quality  ml-100k holdout split (../shared/data/ml-100k-splits), NDCG@10 etc.:
#            implicit's configuration (64 factors, reg 0.05, alpha 1, 15 iterations)
#            and our defaults, seeds 0-4; our defaults also on the validation split
#            (the same rule, seed 43, applied to TRAIN) they were chosen on.
#   speed    fit time of 64 factors, 15 iterations, reg 0.05, alpha 1 on the ml-1m
#            positives' holdout TRAIN (and ml-100k's), 1 and 2 threads: our runs, then
#            implicit_baseline.py --timing-only, then our runs again; medians, CPU
#            time (all threads) and wall time. Extra rows: alpha 5 (the (C - 1) terms
#            are not zero, so no work can be skipped) for us and for implicit.
#
# Environment: PEER_PYTHON (default ~/.venv-peer/bin/python, see ../shared/peer/README.md),
# RECS_SHARED_DIR (default ../shared), BENCH_OUT (default target/bench-train), REPS (5).
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED=${RECS_SHARED_DIR:-../shared}
PEER_PY=${PEER_PYTHON:-$HOME/.venv-peer/bin/python}
OUT=${BENCH_OUT:-target/bench-train}
REPS=${REPS:-5}

if [[ ! -f $SHARED/data/ml-100k/u.data || ! -f $SHARED/data/ml-1m/ratings_dense.csv ]]; then
    echo "bench-train needs MovieLens under $SHARED/data (set RECS_SHARED_DIR)" >&2
    exit 1
fi
HAVE_PEER=1
if [[ ! -x $PEER_PY ]] || ! "$PEER_PY" -c 'import implicit, threadpoolctl' 2>/dev/null; then
    HAVE_PEER=0
    echo "note: no implicit at $PEER_PY; our side only. Set it up with:" >&2
    echo "  python3 -m venv \$HOME/.venv-peer && \$HOME/.venv-peer/bin/pip install implicit==0.7.3 threadpoolctl" >&2
fi

cargo build --release -p recs --bin recs
RECS=./target/release/recs
rm -rf "$OUT"
mkdir -p "$OUT/runs"
H=$SHARED/data/ml-100k-splits/ml100k_holdout
$RECS split --ratings "$SHARED/data/ml-1m/ratings_dense.csv" --method holdout --seed 42 --out "$OUT/ml1m" >"$OUT/ml1m.json"
$RECS split --ratings "${H}_train.tsv" --method holdout --seed 43 --out "$OUT/ml100k_val" >"$OUT/ml100k_val.json"

# One dry run (nothing published): its JSON summary goes to $OUT/runs/$1.json.
train() {
    local name=$1
    shift
    $RECS train --dry-run --no-gate --registry "$OUT/unused-registry" "$@" 2>/dev/null >"$OUT/runs/$name.json"
}

echo "== quality (ml-100k holdout, seeds 0-4)"
IMPLICIT_CFG=(--factors 64 --regularization 0.05 --alpha 1 --iterations 15 --confidence alpha --reg-exponent 0)
for s in 0 1 2 3 4; do
    train "q_implicitcfg_$s" --ratings "${H}_train.tsv" --test "${H}_test.tsv" "${IMPLICIT_CFG[@]}" --seed "$s"
    train "q_defaults_$s" --ratings "${H}_train.tsv" --test "${H}_test.tsv" --seed "$s"
    train "q_defaults_val_$s" --ratings "$OUT/ml100k_val/train.tsv" --test "$OUT/ml100k_val/test.tsv" --seed "$s"
done

TIME_CFG=(--factors 64 --regularization 0.05 --iterations 15 --confidence alpha --reg-exponent 0)
speed() {
    local batch=$1
    for t in 1 2; do
        for r in $(seq 1 "$REPS"); do
            train "t_${batch}_ml1m_a1_th${t}_$r" --ratings "$OUT/ml1m/train.tsv" "${TIME_CFG[@]}" --alpha 1 --threads "$t" --seed "$r"
            train "t_${batch}_ml1m_a5_th${t}_$r" --ratings "$OUT/ml1m/train.tsv" "${TIME_CFG[@]}" --alpha 5 --threads "$t" --seed "$r"
            train "t_${batch}_ml100k_a1_th${t}_$r" --ratings "${H}_train.tsv" "${TIME_CFG[@]}" --alpha 1 --threads "$t" --seed "$r"
        done
    done
}
echo "== speed: ours"
speed a
if [[ $HAVE_PEER == 1 ]]; then
    echo "== speed: implicit_baseline.py --timing-only (about a minute)"
    "$PEER_PY" "$SHARED/peer/implicit_baseline.py" --data "$SHARED/data" --timing-only \
        --out "$OUT/peer_timing.json" >"$OUT/peer_timing.log"
    echo "== speed: implicit, alpha 5 (same harness functions)"
    PYTHONPATH="$SHARED/peer" "$PEER_PY" - "$OUT/ml1m/train.tsv" "$OUT/peer_alpha5.json" <<'EOF'
import json, statistics, sys
import numpy as np
from threadpoolctl import threadpool_limits
import implicit_baseline as b
tr = np.loadtxt(sys.argv[1], dtype=np.int64)
out = {}
with threadpool_limits(1):
    train = b.to_csr(tr[:, 0], tr[:, 1], 6040, 3706)
    for threads in (1, 2):
        runs = [b.als_fit(train, factors=64, reg=0.05, alpha=5.0, iters=15, seed=r, threads=threads) for r in range(3)]
        out[f"threads{threads}"] = {"median": statistics.median(r[1] for r in runs),
                                    "cpu_median": statistics.median(r[0]._fit_cpu_s for r in runs)}
json.dump(out, open(sys.argv[2], "w"))
EOF
    echo "== speed: ours again"
    speed b
fi

python3 - "$OUT" "$HAVE_PEER" <<'EOF'
import glob, json, os, statistics, sys
out, have_peer = sys.argv[1], sys.argv[2] == "1"
def load(pattern):
    return [json.load(open(p))["model"] for p in sorted(glob.glob(os.path.join(out, "runs", pattern)))]
def mean_metrics(rows):
    keys = ("P@10", "R@10", "NDCG@10", "MAP@10", "HR@10")
    return {k: statistics.mean(r["offline_metrics"]["als"][k] for r in rows) for k in keys}, \
           statistics.pstdev(r["offline_metrics"]["als"]["NDCG@10"] for r in rows)
summary = {"quality": {}, "speed": {}}
print("\n### Quality: ml-100k holdout (942 users), @10, mean of seeds 0-4\n")
print("| model | P | R | NDCG | MAP | HR | NDCG sd |")
print("|---|---|---|---|---|---|---|")
pop = load("q_defaults_0.json")[0]["offline_metrics"]["popularity"]
print(f"| popularity | {pop['P@10']:.4f} | {pop['R@10']:.4f} | {pop['NDCG@10']:.4f} | {pop['MAP@10']:.4f} | {pop['HR@10']:.4f} | |")
for name, pat in (("recs ALS f64, reg 0.05, alpha 1, 15 it (implicit's config)", "q_implicitcfg_*.json"),
                  ("recs ALS defaults (f128, reg 1.6 positives^(1/4), alpha 2, C=1+a r, nu 0.75, 32 it)", "q_defaults_[0-9].json")):
    m, sd = mean_metrics(load(pat))
    summary["quality"][pat] = m
    print(f"| {name} | {m['P@10']:.4f} | {m['R@10']:.4f} | {m['NDCG@10']:.4f} | {m['MAP@10']:.4f} | {m['HR@10']:.4f} | {sd:.4f} |")
v, _ = mean_metrics(load("q_defaults_val_*.json"))
print(f"\nOur defaults on the validation split (seed 43 cut of TRAIN): NDCG@10 {v['NDCG@10']:.4f}")
print(f"implicit (../shared/peer/README.md): f64/reg 0.05/alpha 1 NDCG@10 0.2243; best on validation (f128, reg 100, alpha 20) 0.2952")
d = summary["quality"]["q_implicitcfg_*.json"]["NDCG@10"] - 0.2243
print(f"difference to implicit's 0.2243: {d:+.4f} (target: within 0.005)")

def ours(dataset, alpha, threads):
    rows = load(f"t_*_{dataset}_a{alpha}_th{threads}_*.json")
    return {"cpu": statistics.median(r["fit_cpu_seconds"] for r in rows),
            "wall": statistics.median(r["fit_seconds"] for r in rows), "runs": len(rows),
            "simd": rows[0]["simd"]}
peer = json.load(open(os.path.join(out, "peer_timing.json"))) if have_peer else None
peer5 = json.load(open(os.path.join(out, "peer_alpha5.json"))) if have_peer else None
print("\n### Speed: fit, 64 factors, 15 iterations, reg 0.05 (medians; CPU = all threads)\n")
print("| data | alpha | threads | recs CPU s | recs wall s | implicit CPU s | implicit wall s | CPU ratio | wall ratio |")
print("|---|---|---|---|---|---|---|---|---|")
for dataset, alpha in (("ml1m", 1), ("ml1m", 5), ("ml100k", 1)):
    for threads in (1, 2):
        o = ours(dataset, alpha, threads)
        p = None
        if have_peer:
            if alpha == 1:
                src = peer["ml1m"]["timing"] if dataset == "ml1m" else peer["ml100k_timing"]
                t = src[f"fit_threads{threads}_cg_s"]
                p = {"cpu": t["cpu_median"], "wall": t["median"]}
            else:
                t = peer5[f"threads{threads}"]
                p = {"cpu": t["cpu_median"], "wall": t["median"]}
        summary["speed"][f"{dataset}_alpha{alpha}_threads{threads}"] = {"recs": o, "implicit": p}
        pc = f"{p['cpu']:.3f}" if p else "-"
        pw = f"{p['wall']:.3f}" if p else "-"
        rc = f"{o['cpu'] / p['cpu']:.2f}x" if p else "-"
        rw = f"{o['wall'] / p['wall']:.2f}x" if p else "-"
        print(f"| {dataset} | {alpha} | {threads} | {o['cpu']:.3f} | {o['wall']:.3f} | {pc} | {pw} | {rc} | {rw} |")
o1, o2 = ours("ml1m", 1, 1), ours("ml1m", 1, 2)
print(f"\nrecs on ml-1m, 2 threads vs 1: wall {o2['wall']:.3f} s vs {o1['wall']:.3f} s ({o1['wall'] / o2['wall']:.2f}x faster); SIMD path: {o1['simd']}")
print(f"load average at the end: {os.getloadavg()[0]:.2f}")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"\nraw runs: {out}/runs, summary: {out}/summary.json")
EOF
