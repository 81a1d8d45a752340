#!/usr/bin/env python3
"""wanem: a userspace WAN emulator for TCP (this kernel has no netem).

    tools/wanem.py --listen 127.0.0.1:PORT --to HOST:PORT [--rate 20M] [--delay 50] [--buffer 1M] [--socket-buffer 128K]

A TCP proxy: each accepted connection is forwarded to --to, and each direction of it is shaped:
 - bandwidth: a chunk leaves the "link" at max(its arrival, previous departure) + size / rate
   (a serialising link, like tc tbf with a small burst);
 - one-way delay: it is delivered --delay ms after it left the link.
The delay is a queue, not a sleep per write: a whole bandwidth x delay product stays in flight, so a
sender with a large window sees the full rate, as on a long fat pipe. Each direction's queue holds
at most rate x delay + --buffer bytes (a router buffer); beyond that the proxy stops reading, and TCP
back-pressure slows the sender. Rates are bits per second like tc (k, M, G = 10^3, 10^6, 10^9).
Data also waits in the kernel buffers of the proxy's own sockets, which autotune to megabytes: a
sender then sees its writes accepted long before they leave, as a migration that stops a VM when
it thinks the rest is small does. --socket-buffer caps them (SO_RCVBUF of the accepted connections,
SO_SNDBUF and SO_RCVBUF of the forwarded ones; the kernel doubles the value).
Prints "listening on ADDR:PORT" once ready (port 0 picks one). Stop it by PID (SIGTERM); killing it
cuts every proxied connection, which is how tests cut a link.
"""
import argparse
import asyncio
import collections
import re
import signal
import socket
import sys
import time


def parse_rate(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)(?:bit|bps)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad rate {text!r} (bits/s like 20M)")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()] / 8  # bytes/s


def parse_size(text):
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


# asyncio's reader buffers up to twice its limit before it stops reading the socket: keep that
# hidden queue small (each read takes at most 64 KiB anyway)
READ_LIMIT = 64 << 10


def hostport(text):
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


class Direction:
    """One direction of one connection: reader -> shaped queue -> writer."""

    def __init__(self, rate, delay, limit):
        self.rate, self.delay, self.limit = rate, delay, limit
        self.queue = collections.deque()  # (deliver_at, bytes); None = end of stream
        self.queued = 0
        self.last_departure = 0.0
        self.has_data = asyncio.Event()
        self.has_room = asyncio.Event()
        self.has_room.set()

    async def pump_in(self, reader):
        try:
            while True:
                await self.has_room.wait()
                data = await reader.read(65536)
                if not data:
                    break
                now = time.monotonic()
                depart = max(now, self.last_departure) + (len(data) / self.rate if self.rate else 0)
                self.last_departure = depart
                self.queue.append((depart + self.delay, data))
                self.queued += len(data)
                if self.queued >= self.limit:
                    self.has_room.clear()
                self.has_data.set()
        except (ConnectionError, OSError):
            pass
        self.queue.append((0.0, None))
        self.has_data.set()

    async def pump_out(self, writer):
        try:
            while True:
                await self.has_data.wait()
                if not self.queue:
                    self.has_data.clear()
                    continue
                deliver_at, data = self.queue[0]
                if data is None:
                    break
                wait = deliver_at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self.queue.popleft()
                self.queued -= len(data)
                if self.queued < self.limit:
                    self.has_room.set()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                writer.close()


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, type=hostport)
    p.add_argument("--to", required=True, type=hostport)
    p.add_argument("--rate", type=parse_rate, default=0, help="bits/s each way, e.g. 20M (default: unlimited)")
    p.add_argument("--delay", type=float, default=0, help="one-way delay in ms (default 0)")
    p.add_argument("--buffer", type=parse_size, default=1 << 20, help="queue beyond rate x delay, bytes (default 1M)")
    p.add_argument("--socket-buffer", type=parse_size, default=0,
                   help="kernel buffer of each proxy socket, bytes (default: the kernel's autotuning)")
    a = p.parse_args()
    delay = a.delay / 1000
    limit = int(a.rate * delay) + a.buffer if a.rate else (64 << 20)
    conns = set()

    def capped(sock, *options):
        for option in options if a.socket_buffer else ():
            sock.setsockopt(socket.SOL_SOCKET, option, a.socket_buffer)
        return sock

    async def connect():
        host, port = a.to
        family, kind, proto, _, addr = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
        sock = capped(socket.socket(family, kind, proto), socket.SO_SNDBUF, socket.SO_RCVBUF)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
        except OSError:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=READ_LIMIT)

    async def handle(cr, cw):
        try:
            sr, sw = await connect()
        except OSError as e:
            print(f"wanem: cannot reach {a.to}: {e}", file=sys.stderr)
            cw.close()
            return
        up, down = Direction(a.rate, delay, limit), Direction(a.rate, delay, limit)
        tasks = [asyncio.create_task(t) for t in (up.pump_in(cr), up.pump_out(sw), down.pump_in(sr), down.pump_out(cw))]
        conns.add(cw)
        await asyncio.gather(*tasks, return_exceptions=True)
        conns.discard(cw)
        for w in (cw, sw):
            w.close()

    loop = asyncio.get_running_loop()
    host, port = a.listen
    family, kind, proto, _, addr = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))[0]
    listener = capped(socket.socket(family, kind, proto), socket.SO_RCVBUF)  # accepted sockets inherit it
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(addr)
    server = await asyncio.start_server(handle, sock=listener, limit=READ_LIMIT)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on {a.listen[0]}:{port}", flush=True)
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
