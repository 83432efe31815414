#!/usr/bin/env python3
"""Exercises, against the local S3 server, the S3A features Spark's job relies on, and the ones
known to trip S3-compatible stores: multipart upload, create(overwrite=false) (a HEAD check by
default, an If-None-Match conditional PUT with fs.s3a.create.performance), rename (copy + delete:
used by checkpoints and by the batch committer), delete of a directory tree, vectored/ranged
reads of Parquet. Writes only under s3a://bronze/bench-spark/_smoke/<random>/ and removes it.

Usage: <spark venv>/bin/python bench/spark/s3a_smoke.py
Prints one line per check and a JSON line; exits 1 if a check fails.
"""

import json
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import orders_job  # noqa: E402  (its S3A settings and jar lookup)


def main():
    import pyspark
    from pyspark.sql import SparkSession

    jars = orders_job.find_jars(orders_job.parse_args([]), pyspark.__version__)
    b = (SparkSession.builder.master("local[2]").appName("s3a-smoke")
         .config("spark.jars", ",".join(jars)).config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         # Small multipart sizes so that a 20 MB object is uploaded in 4 parts.
         .config("spark.hadoop.fs.s3a.multipart.size", "5M")
         .config("spark.hadoop.fs.s3a.multipart.threshold", "5M"))
    for k, v in orders_job.s3a_conf().items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    jvm = spark.sparkContext._jvm
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    root = f"s3a://bronze/bench-spark/_smoke/{uuid.uuid4().hex[:8]}"
    Path = jvm.org.apache.hadoop.fs.Path
    fs = Path(root).getFileSystem(hconf)
    results = {}

    def check(name, fn):
        try:
            detail = fn()
            results[name] = {"ok": True, "detail": detail}
            print(f"ok    {name}: {detail}")
        except Exception as e:  # noqa: BLE001
            msg = " ".join(str(e).strip().splitlines()[:2])[:400]
            results[name] = {"ok": False, "detail": msg}
            print(f"FAIL  {name}: {msg}")

    def write(path, data, overwrite=True):
        out = fs.create(Path(path), overwrite)
        out.write(bytearray(data))
        out.close()

    def multipart():
        data = os.urandom(1 << 20) * 20                      # 20 MiB, 5 MiB parts
        write(f"{root}/big.bin", data)
        st = fs.getFileStatus(Path(f"{root}/big.bin"))
        assert st.getLen() == len(data), f"length {st.getLen()} != {len(data)}"
        etag = st.getEtag()
        # Read back with another client (pyarrow) and compare.
        import hashlib
        import pyarrow.fs as pafs
        from urllib.parse import urlparse
        u = urlparse(os.environ.get("S3_ENDPOINT", "http://127.0.0.1:9000"))
        pfs = pafs.S3FileSystem(access_key=os.environ.get("AWS_ACCESS_KEY_ID", "minioadmin"),
                                secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "minioadmin"),
                                endpoint_override=u.netloc, scheme=u.scheme, region="us-east-1")
        with pfs.open_input_stream(f"{root[len('s3a://'):]}/big.bin") as f:
            back = f.read()
        assert hashlib.md5(back).digest() == hashlib.md5(data).digest(), "content differs"
        # And a ranged read of the tail through S3A.
        inp = fs.open(Path(f"{root}/big.bin"))
        inp.seek(len(data) - 4)
        tail = bytes((inp.read() & 0xFF) for _ in range(4))
        inp.close()
        assert tail == data[-4:], "ranged read of the tail differs"
        return (f"{len(data)} bytes, ETag {etag} ({'multipart' if '-' in (etag or '') else 'single PUT?'}), "
                "content identical when read back with pyarrow, ranged read ok")

    def no_overwrite():
        write(f"{root}/once.txt", b"one")
        try:
            write(f"{root}/once.txt", b"two", overwrite=False)
        except Exception as e:  # noqa: BLE001
            if "FileAlreadyExists" in str(e) or "already exists" in str(e):
                return "second create(overwrite=false) refused (S3A's HEAD check)"
            raise
        raise AssertionError("create(overwrite=false) over an existing object succeeded")

    def conditional_put():
        # Hadoop 3.4.2+: createFile().must("fs.option.create.conditional.overwrite", true) sends
        # If-None-Match: * and relies on the server to refuse with 412. Spark does not use it
        # (its checkpoint manager writes a temporary file and renames it); checked for the record.
        p = Path(f"{root}/cond.txt")
        write(f"{root}/cond.txt", b"one")
        try:
            o = (fs.createFile(p).overwrite(False)
                 .must("fs.option.create.conditional.overwrite", True).build())
            o.write(bytearray(b"two"))
            o.close()
        except Exception as e:  # noqa: BLE001
            s = str(e)
            if "412" in s or "PreconditionFailed" in s or "FileAlreadyExists" in s or "already exists" in s:
                return "If-None-Match: * refused by the server (412), object unchanged"
            raise
        inp = fs.open(p)
        first = inp.read()
        inp.close()
        raise AssertionError("the conditional create overwrote the object "
                             f"(first byte now {chr(first)!r}): the server ignored If-None-Match")

    def rename():
        write(f"{root}/dir/a.txt", b"a")
        write(f"{root}/dir/b.txt", b"b")
        assert fs.rename(Path(f"{root}/dir/a.txt"), Path(f"{root}/dir/c.txt")), "file rename returned false"
        assert fs.rename(Path(f"{root}/dir"), Path(f"{root}/dir2")), "directory rename returned false"
        names = sorted(s.getPath().getName() for s in fs.listStatus(Path(f"{root}/dir2")))
        assert names == ["b.txt", "c.txt"], names
        assert not fs.exists(Path(f"{root}/dir")), "source directory still there"
        return "file and directory rename (copy + delete) ok"

    def parquet():
        df = spark.range(0, 300000).selectExpr("id", "cast(id % 97 as string) as s", "rand() as r")
        df.write.mode("overwrite").parquet(f"{root}/pq")
        n = spark.read.parquet(f"{root}/pq").where("id % 2 = 0").count()
        assert n == 150000, n
        return "Spark write (FileOutputCommitter, rename) + read (ranged reads) of Parquet ok"

    def delete_tree():
        assert fs.delete(Path(root), True), "delete returned false"
        if not fs.exists(Path(root)):
            return "recursive delete ok"
        # SeaweedFS keeps the emptied directories of its filer (here also "dir", the source of
        # the directory rename above): a LIST of the parent shows them (as "dir/" keys or common
        # prefixes) and HEAD "<dir>/" answers 200 (application/x-directory), so S3A sees empty
        # directories. Harmless for Spark as long as no object is left inside.
        st = fs.getFileStatus(Path(root))
        left = [x.getPath().toString() for x in fs.listStatus(Path(root))]
        files = []
        it = fs.listFiles(Path(root), True)
        while it.hasNext():
            files.append(it.next().getPath().toString())
        assert st.isDirectory() and not files, f"objects left after the delete: {files[:5]}"

        def purge(p):  # bottom-up: deleting an empty directory's "dir/" key removes it
            try:
                children = fs.listStatus(p)
            except Exception:  # noqa: BLE001 - an empty leaf: listed by its parent, not by itself
                children = []
            for x in children:
                if x.isDirectory():
                    purge(x.getPath())
            fs.delete(p, True)

        purge(Path(root))
        return ("objects deleted; the emptied directories stayed visible to S3A as empty directories "
                f"(SeaweedFS filer directories; {len(left)} listed) until their \"dir/\" keys were "
                "deleted bottom-up")

    check("multipart upload", multipart)
    check("create(overwrite=false)", no_overwrite)
    check("conditional PUT (If-None-Match)", conditional_put)
    check("rename", rename)
    check("parquet write/read", parquet)
    check("delete tree", delete_tree)
    spark.stop()
    print(json.dumps({"s3a_smoke": results, "ok": all(r["ok"] for r in results.values())}))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
