#!/usr/bin/env python3
"""pktdelay: a packet-level delay line between two network interfaces (this kernel has no netem).

    tools/pktdelay.py IFACE_A IFACE_B --delay 25

Every frame that arrives on IFACE_A leaves on IFACE_B --delay ms later, and the other way round: put it
between the two halves of a link (e.g. a veth whose peer is a host's eth0, and a veth enslaved to a
bridge) and every packet crossing that link, TCP, UDP, ICMP, ARP, tunnelled or not, is delayed by that
much each way, in order. It reads and writes with AF_PACKET sockets carrying the virtio-net header
(PACKET_VNET_HDR), so segmentation-offloaded frames and partial checksums cross as they are. It does not
shape the rate or drop (use tc tbf on the hosts for the rate); frames queue in memory for the delay.
Run it in the namespace that holds both interfaces, as root; prints "delaying A <-> B by N ms" once
ready; stop it by PID (SIGTERM).
"""
import argparse
import collections
import signal
import socket
import sys
import threading
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23


def open_iface(name):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # not what we send ourselves
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind((name, 0))
    return s


class Line:
    """One direction: frames read from src wait `delay` seconds, then go out on dst."""

    def __init__(self, src, dst, delay):
        self.src, self.dst, self.delay = src, dst, delay
        self.queue = collections.deque()
        self.cv = threading.Condition()

    def read(self):
        while True:
            frame = self.src.recv(65536 + 64)
            due = time.monotonic() + self.delay
            with self.cv:
                self.queue.append((due, frame))
                if len(self.queue) == 1:
                    self.cv.notify()

    def write(self):
        while True:
            with self.cv:
                while not self.queue:
                    self.cv.wait()
                due, frame = self.queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with self.cv:
                self.queue.popleft()
            try:
                self.dst.send(frame)
            except OSError:
                pass  # a frame the other side cannot take (link down, too big): dropped, as on a wire


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--delay", type=float, required=True, help="one-way delay in ms")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    a, b = open_iface(args.a), open_iface(args.b)
    threads = []
    for line in (Line(a, b, args.delay / 1000), Line(b, a, args.delay / 1000)):
        threads += [threading.Thread(target=line.read, daemon=True), threading.Thread(target=line.write, daemon=True)]
    for t in threads:
        t.start()
    print(f"delaying {args.a} <-> {args.b} by {args.delay:g} ms", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
