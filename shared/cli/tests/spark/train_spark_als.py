#!/usr/bin/env python3
"""Trains Spark MLlib ALS (implicitPrefs=True) on ml-100k in local mode, saves the
model (userFactors/ and itemFactors/ Parquet folders) and writes Spark's own
recommendations: recommendForUserSubset for some users, asked for enough items that
the top 10 unseen remain after the seen ones are dropped.

    python3 train_spark_als.py --ratings ../shared/data/ml-100k/u.data --out DIR

Writes DIR/model/{userFactors,itemFactors,metadata} and DIR/expected_top10.jsonl
({"user_id", "items", "scores"} per line). Used by shared/cli/tests/spark.rs; the
expected lists come from Spark, never from the code under test.
"""
import argparse
import json
import os
import sys

from pyspark.sql import SparkSession

# The product's job (the retrain's Spark path): its `fit` is what is tested here.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../train/spark"))
import als_job  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ratings", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--users", type=int, default=50)
    # Items a user rated at or above this are "seen" and dropped from Spark's lists;
    # `recs import spark --min-rating` must be given the same value.
    ap.add_argument("--min-rating", type=float, default=1.0)
    args = ap.parse_args()
    spark = (SparkSession.builder.master("local[1]").appName("recs-spark-import-test")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    rows = []
    with open(args.ratings) as f:
        for line in f:
            u, i, r, _t = line.split("\t")
            rows.append((int(u), int(i), float(r)))
    df = spark.createDataFrame(rows, ["user", "item", "rating"])
    model = als_job.fit(df, rank=16, max_iter=10, reg_param=0.1, alpha=1.0, seed=14, blocks=2)
    model.write().overwrite().save(os.path.join(args.out, "model"))
    # A Parquet folder that is not factors (the ratings' columns), for the importer's
    # wrong-schema error.
    df.limit(100).write.mode("overwrite").parquet(os.path.join(args.out, "wrong_schema"))

    seen = {}
    for u, i, r in rows:
        if r >= args.min_rating:
            seen.setdefault(u, set()).add(i)
    users = sorted(seen)[:: max(1, len(seen) // args.users)][: args.users]
    subset = spark.createDataFrame([(u,) for u in users], ["user"])
    most_seen = max(len(seen[u]) for u in users)
    # Asking for every seen item plus 10 leaves at least 10 unseen ones.
    recs = model.recommendForUserSubset(subset, most_seen + 10).collect()
    with open(os.path.join(args.out, "expected_top10.jsonl"), "w") as out:
        for row in sorted(recs, key=lambda r: r["user"]):
            u = row["user"]
            kept = [(r["item"], r["rating"]) for r in row["recommendations"] if r["item"] not in seen[u]][:10]
            out.write(json.dumps({"user_id": u, "items": [i for i, _ in kept],
                                  "scores": [float(s) for _, s in kept]}) + "\n")
    spark.stop()


if __name__ == "__main__":
    main()
