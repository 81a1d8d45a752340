#!/usr/bin/env python3
"""Does a QEMU (TCG) live migration carry the guest's RAM exactly? QEMU alone, no BlockMigrate code.

One run: nbdkit serves a fresh sparse 16 MiB file to two QEMUs started like
tests/BlockMigrate.TestSupport/QemuGuest.cs does (the test guest of tools/guest, which keeps writing
sequence-numbered blocks and so keeps dirtying RAM). The source boots until its serial shows
PROGRESS seq=BOOT_SEQ; the destination waits with -incoming defer -S. QEMU migrates the VM
(downtime-limit, max-bandwidth, optionally multifd) over a unix socket. When it is completed the
source is in postmigrate and the destination paused (its CPUs never ran): both RAMs are saved with
pmemsave and compared page by page (4096 bytes). Then the destination is continued and its serial
watched: does the guest go on (new PROGRESS lines) or crash (BUG:, Oops, Kernel panic, ...)?

Prints a human summary and one JSON line ("RESULT {...}"); --jsonl FILE appends that line to FILE.
Stdlib only. Every process it starts is killed by PID; the temporary directory is removed.

Example: python3 tools/qemu-ram-check.py --downtime-ms 1 --multifd --bandwidth 16000000 --jsonl runs.jsonl
--postcopy: postcopy-ram on both QEMUs and migrate-start-postcopy after the first pass (dirty-sync-count >= 2,
--postcopy-after-syncs) or after T s (--postcopy-after-s); the destination (-S) stays paused through post-copy, and
its RAM is saved once its own incoming migration is completed (docs/qemu-ram-check.md, section Post-copy).
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PAGE = 4096
GUEST_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "guest")  # ./build.sh builds it
CRASH_RX = re.compile(r"BUG:|Oops|Kernel panic|general protection fault|Bad page|invalid opcode|"
                      r"Unable to handle|segfault|GUEST-INIT")


class Qmp:
    """A QMP client over a unix socket; events read while waiting for a reply are kept in .events."""

    def __init__(self, path, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        s.settimeout(120)
        self.sock = s
        self.f = s.makefile("rwb", buffering=0)
        self.events = []
        greeting = self._read()
        if "QMP" not in greeting:
            raise RuntimeError(f"no QMP greeting on {path}: {greeting}")
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.f.readline()
        if not line:
            raise RuntimeError("QMP connection closed")
        return json.loads(line)

    def cmd(self, name, **arguments):
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.f.write(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise RuntimeError(f"{name} {arguments}: {r['error']}")
            return r["return"]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def read_text(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def progress(text):
    return [int(m) for m in re.findall(r"PROGRESS seq=(\d+)", text)]


def wait_for(pred, timeout, what, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(step)


def qemu_args(name, d, disk_sock, mem_mib, blocks, every, incoming, accel="tcg"):
    a = ["qemu-system-x86_64", "-name", name, "-accel", accel, "-m", str(mem_mib), "-smp", "1",
         "-display", "none", "-nodefaults", "-no-user-config",
         "-chardev", f"file,id=ser0,path={d}/{name}.serial", "-serial", "chardev:ser0",
         "-qmp", f"unix:{d}/{name}.qmp,server=on,wait=off",
         "-kernel", f"{GUEST_DIR}/vmlinuz", "-initrd", f"{GUEST_DIR}/initrd.gz",
         "-append", f"console=ttyS0 quiet panic=-1 nblk={blocks} every={every}",
         "-blockdev", f"driver=nbd,server.type=unix,server.path={disk_sock},export=,node-name=d0",
         "-device", "virtio-blk-pci,drive=d0,id=vblk0"]
    if incoming:
        a += ["-incoming", "defer", "-S"]
    return a


def compare(path_a, path_b, size):
    """Returns (differing page indexes, {page: bytes differing}) comparing two images page by page."""
    diff = []
    nbytes = {}
    chunk = 256 * PAGE
    with open(path_a, "rb") as fa, open(path_b, "rb") as fb:
        off = 0
        while off < size:
            a = fa.read(chunk)
            b = fb.read(chunk)
            if len(a) != len(b):
                raise RuntimeError(f"images differ in length at {off}")
            if not a:
                break
            if a != b:
                for p in range(0, len(a), PAGE):
                    pa = a[p:p + PAGE]
                    pb = b[p:p + PAGE]
                    if pa != pb:
                        page = (off + p) // PAGE
                        diff.append(page)
                        nbytes[page] = sum(1 for x, y in zip(pa, pb) if x != y)
            off += len(a)
    if off != size:
        raise RuntimeError(f"images are {off} bytes, expected {size}")
    return diff, nbytes


def kill(p):
    if p is not None and p.poll() is None:
        p.kill()
        p.wait()


def run(o):
    d = tempfile.mkdtemp(prefix="qemu-ram-check-", dir=o.tmpdir)
    res = {"downtime_ms": o.downtime_ms, "multifd": o.multifd, "bandwidth": o.bandwidth,
           "stop_first": o.stop_first, "accel": o.accel,
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if o.postcopy:
        # when the switch to post-copy is asked for: after the first pass (dirty-sync-count >= N) or after T s
        res["postcopy"] = ({"after_syncs": o.postcopy_after_syncs} if o.postcopy_after_s is None
                           else {"after_s": o.postcopy_after_s})
        res["postcopy"]["poll_s"] = o.postcopy_poll_s
    procs = []
    qmps = []
    devnull = subprocess.DEVNULL
    try:
        img = f"{d}/disk.img"
        with open(img, "wb") as f:
            f.truncate(16 * 1024 * 1024)
        nbd_sock = f"{d}/nbd.sock"
        nbd = subprocess.Popen(["nbdkit", "-f", "-U", nbd_sock, "file", f"file={img}"],
                               stdout=devnull, stderr=open(f"{d}/nbdkit.log", "wb"))
        procs.append(nbd)
        wait_for(lambda: os.path.exists(nbd_sock), 10, "nbdkit socket")

        mem = o.mem_mib
        src = subprocess.Popen(qemu_args("src", d, nbd_sock, mem, o.blocks, o.every, False, o.accel),
                               stdout=devnull, stderr=open(f"{d}/src.stderr", "wb"))
        procs.append(src)
        sq = Qmp(f"{d}/src.qmp")
        qmps.append(sq)
        t0 = time.monotonic()
        rx = re.compile(rf"PROGRESS seq={o.boot_seq}\b")
        wait_for(lambda: rx.search(read_text(f"{d}/src.serial")) or src.poll() is not None,
                 o.boot_timeout, f"source did not print PROGRESS seq={o.boot_seq}", step=0.2)
        if src.poll() is not None:
            raise RuntimeError(f"source QEMU exited {src.returncode}: {read_text(f'{d}/src.stderr')}")
        res["boot_s"] = round(time.monotonic() - t0, 1)

        dst = subprocess.Popen(qemu_args("dst", d, nbd_sock, mem, o.blocks, o.every, True, o.accel),
                               stdout=devnull, stderr=open(f"{d}/dst.stderr", "wb"))
        procs.append(dst)
        dq = Qmp(f"{d}/dst.qmp")
        qmps.append(dq)

        caps = [{"capability": "events", "state": True}]
        if o.multifd:
            caps.append({"capability": "multifd", "state": True})
        if o.postcopy:
            caps.append({"capability": "postcopy-ram", "state": True})
        for q in (sq, dq):
            q.cmd("migrate-set-capabilities", capabilities=caps)
            if o.multifd:
                q.cmd("migrate-set-parameters", **{"multifd-channels": o.multifd_channels,
                                                   "multifd-compression": o.multifd_compression})
        sq.cmd("migrate-set-parameters", **{"downtime-limit": o.downtime_ms, "max-bandwidth": o.bandwidth})
        uri = f"unix:{d}/mig.sock"
        dq.cmd("migrate-incoming", uri=uri)
        wait_for(lambda: os.path.exists(f"{d}/mig.sock"), 10, "migration socket")
        src_seq_before = max(progress(read_text(f"{d}/src.serial")) or [-1])
        if o.stop_first:
            sq.cmd("stop")  # control: a non-live migration, the guest does not run while its RAM is copied
        t1 = time.monotonic()
        sq.cmd("migrate", uri=uri)

        dst_states = set()
        src_mig_states = []
        forced = False
        postcopy_asked = False
        info = {}
        while True:
            info = sq.cmd("query-migrate")
            st = info.get("status")
            if not src_mig_states or src_mig_states[-1] != st:
                src_mig_states.append(st)
            waiting_to_ask = o.postcopy and not postcopy_asked and st in ("setup", "active")
            if not waiting_to_ask:  # (while waiting to ask, one command per poll: the window can be short)
                dst_states.add(dq.cmd("query-status")["status"])
            if st == "completed":
                break
            if st in ("failed", "cancelled", "postcopy-paused"):
                raise RuntimeError(f"migration {st}: {info}")
            el = time.monotonic() - t1
            if o.postcopy and not postcopy_asked and st == "active":
                syncs = info.get("ram", {}).get("dirty-sync-count") or 0
                if (el >= o.postcopy_after_s) if o.postcopy_after_s is not None else (syncs >= o.postcopy_after_syncs):
                    sq.cmd("migrate-start-postcopy")
                    postcopy_asked = True
                    res["postcopy_asked_after_s"] = round(el, 2)
                    res["postcopy_asked_at_sync"] = syncs
                    res["postcopy_asked_remaining"] = info.get("ram", {}).get("remaining")
            if not forced and o.converge_timeout > 0 and el > o.converge_timeout:
                # did not converge under the limit under test: raise it so that the run ends, and say so
                sq.cmd("migrate-set-parameters", **{"downtime-limit": o.fallback_downtime_ms})
                forced = True
                res["forced_after_s"] = round(el, 1)
                res["syncs_at_force"] = info.get("ram", {}).get("dirty-sync-count")
            if el > o.converge_timeout + 120:
                raise TimeoutError(f"migration not completed after {el:.0f} s: {info}")
            time.sleep(o.postcopy_poll_s if waiting_to_ask else 0.1)
        res["migrate_s"] = round(time.monotonic() - t1, 1)
        res["forced"] = forced
        # the source's polled states and MIGRATION events: did it really switch to post-copy?
        res["src_mig_states"] = src_mig_states
        res["src_mig_events"] = [e.get("data", {}).get("status") for e in sq.events if e.get("event") == "MIGRATION"]
        if o.postcopy:
            res["postcopy_entered"] = "postcopy-active" in src_mig_states + res["src_mig_events"]
            res["postcopy_requests"] = info.get("ram", {}).get("postcopy-requests")
            res["postcopy_blocktime"] = info.get("postcopy-blocktime")
        ram = info.get("ram", {})
        res["dirty_sync_count"] = ram.get("dirty-sync-count")
        res["downtime_reported_ms"] = info.get("downtime")
        res["ram_transferred"] = ram.get("transferred")
        res["ram_pages"] = ram.get("normal")
        res["ram_duplicate"] = ram.get("duplicate")
        res["dirty_pages_rate"] = ram.get("dirty-pages-rate")

        # destination: wait until loading ended (paused), never running
        def dst_done():
            s = dq.cmd("query-status")["status"]
            dst_states.add(s)
            return s in ("paused", "postmigrate") and s
        wait_for(dst_done, 30, "destination did not reach paused")
        if o.postcopy:
            # in post-copy the source's "completed" means all pages were sent; the destination's incoming
            # side (its query-migrate) ends when the listen thread has loaded them all and left userfault.
            # Only then does pmemsave read what it received (and not fault pages in from the source).
            dst_mig = []

            def dst_mig_done():
                s_ = dq.cmd("query-migrate").get("status")
                dst_mig.append(s_)
                return s_ == "completed"
            wait_for(dst_mig_done, 30, "destination's incoming migration did not reach completed")
            res["dst_mig_status"] = dst_mig[-1]
            dst_status = dq.cmd("query-status")["status"]
            dst_states.add(dst_status)
            for e in dq.events:
                if e.get("event") == "MIGRATION":
                    res.setdefault("dst_mig_events", []).append(e.get("data", {}).get("status"))
        src_status = sq.cmd("query-status")["status"]
        dst_status = dq.cmd("query-status")["status"]
        dst_states.add(dst_status)
        res["src_status"] = src_status
        res["dst_status"] = dst_status
        res["dst_states_seen"] = sorted(dst_states)
        res["dst_resume_events"] = sum(1 for e in dq.events if e.get("event") == "RESUME")
        if "running" in dst_states or res["dst_resume_events"]:
            res["dst_ran"] = True
        src_serial_end = read_text(f"{d}/src.serial")
        res["src_last_seq"] = max(progress(src_serial_end) or [-1])
        res["src_seq_at_migrate"] = src_seq_before

        size = mem * 1024 * 1024
        for q, name in ((sq, "src"), (dq, "dst")):
            q.cmd("pmemsave", val=0, size=size, filename=f"{d}/{name}.mem")
        # control: the stopped source's RAM must not change by itself (else a difference could be the source's)
        time.sleep(1)
        sq.cmd("pmemsave", val=0, size=size, filename=f"{d}/src2.mem")
        res["src_pages_changed_while_stopped"] = len(compare(f"{d}/src.mem", f"{d}/src2.mem", size)[0])
        os.unlink(f"{d}/src2.mem")
        # the images are taken; state must not have changed meanwhile
        res["dst_status_after_save"] = dq.cmd("query-status")["status"]
        diff, nbytes = compare(f"{d}/src.mem", f"{d}/dst.mem", size)
        res["pages_differing"] = len(diff)
        res["first_pages"] = [f"0x{p * PAGE:08x}({nbytes[p]}B)" for p in diff[:8]]
        if diff and o.keep_diff:
            keep = os.path.join(o.keep_diff, f"diff-{int(time.time())}-{os.getpid()}")
            os.makedirs(keep, exist_ok=True)
            with open(f"{d}/src.mem", "rb") as fa, open(f"{d}/dst.mem", "rb") as fb, \
                    open(f"{keep}/pages.txt", "w") as out:
                for p in diff[:64]:
                    fa.seek(p * PAGE)
                    fb.seek(p * PAGE)
                    a, b = fa.read(PAGE), fb.read(PAGE)
                    out.write(f"page 0x{p * PAGE:08x}\n src {a[:64].hex()}\n dst {b[:64].hex()}\n")
            res["diff_kept"] = keep
        os.unlink(f"{d}/src.mem")
        os.unlink(f"{d}/dst.mem")

        # continue the destination and watch its guest
        dq.cmd("cont")
        time.sleep(o.watch)
        text = read_text(f"{d}/dst.serial")
        seqs = progress(text)
        res["dst_progress_lines"] = len(seqs)
        res["dst_first_seq"] = seqs[0] if seqs else None
        res["dst_last_seq"] = seqs[-1] if seqs else None
        bad = [l.strip() for l in text.splitlines() if CRASH_RX.search(l)]
        res["crash"] = bool(bad)
        res["crash_lines"] = bad[:4]
        res["dst_alive"] = dst.poll() is None
        # went on: printed new PROGRESS lines and no crash line; hung: neither
        res["went_on"] = bool(seqs) and not bad
        if not bad and dst.poll() is None:
            res["dst_status_after_cont"] = dq.cmd("query-status")["status"]
        res["ok"] = True
    except Exception as e:  # noqa: BLE001 - a run that breaks is reported, not hidden
        res["ok"] = False
        res["error"] = f"{type(e).__name__}: {e}"
        for name in ("src", "dst"):
            res[f"{name}_serial_tail"] = read_text(f"{d}/{name}.serial")[-400:]
            res[f"{name}_stderr"] = read_text(f"{d}/{name}.stderr")[-400:]
    finally:
        for q in qmps:
            q.close()
        for p in reversed(procs):
            kill(p)
        shutil.rmtree(d, ignore_errors=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--downtime-ms", type=int, required=True, help="QEMU downtime-limit under test")
    ap.add_argument("--multifd", action="store_true", help="multifd (1 channel, zstd by default)")
    ap.add_argument("--multifd-channels", type=int, default=1)
    ap.add_argument("--multifd-compression", default="zstd")
    ap.add_argument("--bandwidth", type=int, default=16_000_000, help="max-bandwidth, bytes/s")
    ap.add_argument("--mem-mib", type=int, default=128)
    ap.add_argument("--blocks", type=int, default=4096, help="guest nblk=")
    ap.add_argument("--every", type=int, default=50, help="guest every=")
    ap.add_argument("--boot-seq", type=int, default=100, help="migrate after this PROGRESS seq")
    ap.add_argument("--boot-timeout", type=float, default=180)
    ap.add_argument("--converge-timeout", type=float, default=45,
                    help="if not completed after this many s, raise downtime-limit (recorded as forced); 0 = never")
    ap.add_argument("--fallback-downtime-ms", type=int, default=300)
    ap.add_argument("--watch", type=float, default=10, help="seconds to watch the destination after cont")
    ap.add_argument("--stop-first", action="store_true",
                    help="control: stop the source before migrate (non-live); differing pages then are not dirty tracking's")
    ap.add_argument("--postcopy", action="store_true",
                    help="postcopy-ram on both QEMUs; migrate-start-postcopy after the first pass (see --postcopy-after-*)")
    ap.add_argument("--postcopy-after-syncs", type=int, default=2,
                    help="ask for post-copy once query-migrate's dirty-sync-count reaches this (2 = first pass done)")
    ap.add_argument("--postcopy-after-s", type=float, default=None,
                    help="instead: ask for post-copy this many seconds after migrate")
    ap.add_argument("--postcopy-poll-s", type=float, default=0.02,
                    help="query-migrate interval until post-copy is asked (at 50/300 ms pre-copy completes soon after sync 2)")
    ap.add_argument("--accel", default="tcg", help="-accel value for both QEMUs (e.g. tcg,thread=single)")
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--keep-diff", default=None, help="directory to keep the first bytes of differing pages")
    ap.add_argument("--jsonl", default=None, help="append the RESULT line to this file")
    o = ap.parse_args()
    if o.boot_seq % o.every:
        ap.error("--boot-seq must be a multiple of --every")
    res = run(o)
    line = json.dumps(res, sort_keys=True)
    print(f"downtime={o.downtime_ms}ms multifd={o.multifd} bw={o.bandwidth} accel={o.accel} stop_first={o.stop_first} "
          f"postcopy={res.get('postcopy')} entered={res.get('postcopy_entered')}: ok={res.get('ok')} "
          f"pages_differing={res.get('pages_differing')} first={res.get('first_pages')} "
          f"syncs={res.get('dirty_sync_count')} forced={res.get('forced')} crash={res.get('crash')} "
          f"dst_progress_lines={res.get('dst_progress_lines')} went_on={res.get('went_on')} "
          f"src_changed_while_stopped={res.get('src_pages_changed_while_stopped')} error={res.get('error')}")
    print("RESULT " + line)
    if o.jsonl:
        with open(o.jsonl, "a") as f:
            f.write(line + "\n")
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
