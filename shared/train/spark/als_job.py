#!/usr/bin/env python3
"""The Spark path of the retrain: Spark MLlib ALS (implicitPrefs) on a retrain's
training file, as an EMR Serverless job (or spark-submit / python3 in local mode).

    python3 als_job.py --train TRAIN.csv --out OUT [--rank 128 --max-iter 25 ...]
    # on EMR Serverless: entryPoint s3://.../als_job-<sha>.py, the same arguments with s3:// paths

TRAIN is the retrain's MovieLens CSV (header userId,movieId,rating,timestamp, written by
recs_train::retrain::snapshot_bytes). As `recs train` does, the positives (rating >=
--min-rating) are the matrix, each 1.0; the rest is dropped. Writes:

    OUT/model/{userFactors,itemFactors,metadata}   model.write().save(): what
                                                   `recs import spark` reads
    OUT/summary/part-*.txt                         one JSON line, written last: the
                                                   counts the orchestrator checks
                                                   against its own (rows, positives,
                                                   users, items, rank)

The orchestration (shared/train/src/emr.rs) uploads this file, starts it, and imports
OUT when the job run reaches SUCCESS. shared/cli/tests/spark/train_spark_als.py uses
`fit` for the ml-100k import test.
"""
import argparse
import json
import sys

# Spark's ALS ids are Java ints.
MAX_ID = 2**31 - 1


def fit(df, rank, max_iter, reg_param, alpha, seed, blocks):
    """Implicit ALS on a DataFrame of (user, item, rating); returns the fitted model."""
    from pyspark.ml.recommendation import ALS

    als = ALS(rank=rank, maxIter=max_iter, regParam=reg_param, alpha=alpha,
              implicitPrefs=True, userCol="user", itemCol="item", ratingCol="rating",
              seed=seed, coldStartStrategy="drop",
              # Spark's default of 10 blocks each way is 10x the shuffles on one core in
              # local mode (the blocks change the random start, not the method).
              numUserBlocks=blocks, numItemBlocks=blocks)
    return als.fit(df)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True, help="the training CSV (path or s3://)")
    ap.add_argument("--out", required=True, help="output folder (path or s3://)")
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--max-iter", type=int, default=25)
    ap.add_argument("--reg-param", type=float, default=0.1)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--min-rating", type=float, default=4.0)
    ap.add_argument("--blocks", type=int, default=10,
                    help="numUserBlocks = numItemBlocks (local mode on one core: 2)")
    ap.add_argument("--master", default=None,
                    help="local[N] to run without a cluster (EMR Serverless sets its own)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    builder = SparkSession.builder.appName("movie-recs-als")
    if args.master:
        builder = (builder.master(args.master)
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.shuffle.partitions", "2"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    schema = StructType([StructField("userId", LongType()), StructField("movieId", LongType()),
                         StructField("rating", DoubleType()), StructField("timestamp", LongType())])
    # FAILFAST: a malformed row fails the job (and so the job run) instead of vanishing.
    raw = spark.read.csv(args.train, header=True, schema=schema, mode="FAILFAST")
    rows = raw.count()
    if rows == 0:
        raise SystemExit(f"{args.train}: no rows")
    bad = raw.filter(F.col("userId").isNull() | F.col("movieId").isNull() | F.col("rating").isNull()
                     | (F.col("userId") < 0) | (F.col("movieId") < 0)
                     | (F.col("userId") > MAX_ID) | (F.col("movieId") > MAX_ID)).count()
    if bad:
        raise SystemExit(f"{args.train}: {bad} rows with a missing rating or an id outside 0..{MAX_ID}")
    pos = (raw.filter(F.col("rating") >= args.min_rating)
           .select(F.col("userId").cast("int").alias("user"),
                   F.col("movieId").cast("int").alias("item"),
                   F.lit(1.0).alias("rating")))
    pos.cache()
    positives = pos.count()
    if positives == 0:
        raise SystemExit(f"{args.train}: no positive (rating >= {args.min_rating})")
    model = fit(pos, args.rank, args.max_iter, args.reg_param, args.alpha, args.seed, args.blocks)
    out = args.out.rstrip("/")
    model.write().overwrite().save(out + "/model")
    summary = {
        "train": args.train,
        "rows": rows,
        "positives": positives,
        "users": model.userFactors.count(),
        "items": model.itemFactors.count(),
        "rank": model.rank,
        "max_iter": args.max_iter,
        "reg_param": args.reg_param,
        "alpha": args.alpha,
        "seed": args.seed,
        "min_rating": args.min_rating,
        "spark_version": spark.version,
    }
    # Last, so a summary means the model was saved whole.
    spark.createDataFrame([(json.dumps(summary),)], ["value"]).coalesce(1) \
        .write.mode("overwrite").text(out + "/summary")
    print(json.dumps(summary))
    spark.stop()


if __name__ == "__main__":
    main()
