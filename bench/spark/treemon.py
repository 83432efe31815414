#!/usr/bin/env python3
"""Runs a command and samples the memory of its whole process tree.

Usage: treemon.py [--interval 0.2] [--out FILE] -- COMMAND [ARGS...]

`/usr/bin/time -v` reports "Maximum resident set size" as the peak of the largest single process
(getrusage's ru_maxrss: for children it is the max over them, not a sum). pyspark runs a Python
driver plus a JVM child, so this samples /proc every --interval seconds and reports the peak of
the SUM over the tree of each process's PSS (proportional set size, /proc/PID/smaps_rollup).
The JVM starts short-lived children (Hadoop's local file system runs `chmod`/`readlink` when
libhadoop is not loaded) with posix_spawn, whose child shares the JVM's whole address space
(CLONE_VM) until it execs jspawnhelper: such a copy (recognised by the same stack start address
as its parent, /proc/PID/stat field 28) shows the JVM's full RSS and PSS again, so it is left out
of the sum. Each process's own peak RSS is
reported too. CPU time comes from wait4's rusage of the command, which includes every
descendant that was waited for (orders_job.py waits for its JVM so that it counts).

Writes one JSON line (to --out, else stderr); exits with the command's exit code.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def snapshot():
    """{pid: (ppid, rss_bytes, comm, startstack)} for every process."""
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        rest = s[s.rindex(")") + 2:].split()
        # rest[i] is field i+3 of proc(5): ppid 4, rss 24, startstack 28
        procs[int(d)] = (int(rest[1]), int(rest[21]) * PAGE, comm, int(rest[25]))
    return procs


def pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def tree(procs, root):
    kids = {}
    for pid, (ppid, *_) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        if p in procs:
            out.append(p)
        stack.extend(kids.get(p, []))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--out")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command")
    t0 = time.monotonic()
    child = subprocess.Popen(cmd)
    peak = {"tree": 0, "tree_pss": 0, "procs": {}, "samples": 0, "spawn_copies_skipped": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            procs = snapshot()
            pids = tree(procs, child.pid)
            total = total_pss = 0
            for p in pids:
                ppid, rss, comm, stack = procs[p]
                if p != child.pid and ppid in procs and procs[ppid][3] == stack and stack:
                    # Same stack address as its parent: a not-yet-exec'd copy (posix_spawn/vfork
                    # shares the parent's memory; a fork shares it copy-on-write).
                    peak["spawn_copies_skipped"] += 1
                    continue
                total += rss
                q = pss(p)
                total_pss += rss if q is None else q
                key = f"{comm}[{p}]"
                peak["procs"][key] = max(peak["procs"].get(key, 0), rss)
            peak["tree"] = max(peak["tree"], total)
            peak["tree_pss"] = max(peak["tree_pss"], total_pss)
            peak["samples"] += 1
            done.wait(a.interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, status, ru = os.wait4(child.pid, 0)
    done.set()
    th.join()
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    res = {
        "exit_code": code,
        "wall_seconds": round(wall, 2),
        "user_seconds": round(ru.ru_utime, 2),
        "sys_seconds": round(ru.ru_stime, 2),
        "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 2),
        "max_rss_largest_process_mb": round(ru.ru_maxrss / 1024, 1),
        "peak_tree_pss_mb": round(peak["tree_pss"] / 2**20, 1),
        "peak_tree_rss_sum_mb": round(peak["tree"] / 2**20, 1),  # same exclusions, RSS not PSS
        "peak_rss_per_process_mb": {k: round(v / 2**20, 1) for k, v in
                                    sorted(peak["procs"].items(), key=lambda kv: -kv[1])[:6]},
        "samples": peak["samples"],
        "spawn_copies_skipped": peak["spawn_copies_skipped"],
    }
    line = json.dumps(res, separators=(",", ":"))
    if a.out:
        with open(a.out, "w") as f:
            f.write(line + "\n")
    else:
        print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
