#!/usr/bin/env python3
"""seqwriter: a guest stand-in that writes sequence-numbered 4 KiB blocks through NBD, and its checker.

    tools/seqwriter.py write URI --blocks N [--start S | --continue-from IMAGE] [--log FILE]
                       [--rate WRITES_PER_S] [--duration S] [--offset BYTES] [--random]
    tools/seqwriter.py check IMAGE --blocks N [--offset BYTES] [--at-least S]

write: write i goes to block i % N (at OFFSET + (i % N) * 4096) and holds "SEQ i BLK b\\n", padded.
Each completed (acknowledged) write is logged as "i unix_ms" (flushed), so a test knows which writes
were acknowledged before a given moment. Stops on SIGTERM, after --duration, or when the server goes.
check (after testbed_lib.verify_disk): with S the highest sequence number on the image, every block b
must hold the newest i <= S with i % N == b: the image is exactly the state after write S, nothing
lost, nothing torn. --at-least: S must be at least this (no acknowledged write missing).
"""
import argparse
import os
import random
import re
import signal
import sys
import time

BLOCK = 4096
PATTERN = re.compile(rb"SEQ (\d{10}) BLK (\d{8})\n")


def block(seq, b):
    head = b"SEQ %010d BLK %08d\n" % (seq, b)
    filler = (b"%d " % seq) * (BLOCK // 4)
    return (head + filler)[:BLOCK]


def max_seq(path, blocks, offset):
    best = -1
    with open(path, "rb") as f:
        f.seek(offset)
        for _ in range(blocks):
            m = PATTERN.match(f.read(BLOCK))
            if m:
                best = max(best, int(m.group(1)))
    return best


def write(a):
    import nbd
    h = nbd.NBD()
    h.connect_uri(a.uri)
    seq = a.start
    if a.continue_from:
        seq = max_seq(a.continue_from, a.blocks, a.offset) + 1
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    log = open(a.log, "w") if a.log else None
    t0 = time.monotonic()
    rnd = random.Random(a.seed) if a.random else None
    period = 1.0 / a.rate if a.rate else 0
    first = seq
    try:
        while not stop and (not a.duration or time.monotonic() - t0 < a.duration):
            b = rnd.randrange(a.blocks) if rnd else seq % a.blocks
            h.pwrite(block(seq, b), a.offset + b * BLOCK)
            if log:
                log.write("%d %d\n" % (seq, time.time_ns() // 1_000_000))
                log.flush()
            seq += 1
            if period:
                delay = t0 + (seq - first) * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    except nbd.Error as e:
        print(f"seqwriter: server gone after {seq - first} writes: {e}", file=sys.stderr)
    print(f"last {seq - 1} writes {seq - first}", flush=True)


def check(a):
    seqs = {}
    with open(a.image, "rb") as f:
        f.seek(a.offset)
        for b in range(a.blocks):
            m = PATTERN.match(f.read(BLOCK))
            if m:
                if int(m.group(2)) != b:
                    print(f"BAD block {b} holds the data of block {int(m.group(2))}")
                    return 1
                seqs[b] = int(m.group(1))
    if not seqs:
        print("BAD no sequence-numbered block found")
        return 1
    top = max(seqs.values())
    bad = []
    for b in range(a.blocks):
        expected = top - ((top - b) % a.blocks)
        if expected < a.first:
            expected = None
        if seqs.get(b) != expected:
            bad.append((b, expected, seqs.get(b)))
    if bad:
        print(f"BAD max seq {top}; {len(bad)} blocks wrong (block, expected, found): {bad[:5]}")
        return 1
    if a.at_least is not None and top < a.at_least:
        print(f"BAD max seq {top} but write {a.at_least} was acknowledged")
        return 1
    print(f"ok max seq {top}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("uri")
    w.add_argument("--blocks", type=int, required=True)
    w.add_argument("--start", type=int, default=0)
    w.add_argument("--continue-from")
    w.add_argument("--log")
    w.add_argument("--rate", type=float, default=0)
    w.add_argument("--duration", type=float, default=0)
    w.add_argument("--offset", type=int, default=0)
    w.add_argument("--random", action="store_true", help="random blocks instead of a cycle (benchmarks; check does not apply)")
    w.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("check")
    c.add_argument("image")
    c.add_argument("--blocks", type=int, required=True)
    c.add_argument("--offset", type=int, default=0)
    c.add_argument("--at-least", type=int)
    c.add_argument("--first", type=int, default=0, help="lowest sequence number ever written")
    a = p.parse_args()
    if a.cmd == "write":
        write(a)
        return 0
    return check(a)


if __name__ == "__main__":
    sys.exit(main())
