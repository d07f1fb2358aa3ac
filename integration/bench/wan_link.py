"""A simulated WAN link in userspace (this kernel has no traffic-control
qdiscs): a TCP forwarder from LISTEN to TARGET where every byte the target
sends back passes one token bucket shared by all connections (the link's
bandwidth), and every byte a client sends reaches the target DELAY later (the
round trip, put on the request side: a request's answer starts one RTT after
it was sent). Opening a connection costs one RTT too (the TCP handshake).

    python3 wan_link.py LISTEN_PORT TARGET_HOST:PORT MBIT RTT_MS

Prints "ready" once listening. The bytes it forwarded downstream are written
to the file named by $WAN_STATS on SIGUSR1 (and at exit), for the benchmark
to read what crossed the link."""
import asyncio
import os
import signal
import sys
import time

CHUNK = 64 * 1024


class Bucket:
    """One shared link: a virtual clock of when the link is next free. A chunk
    of n bytes occupies n/rate seconds of it; the sender waits for its slot.
    Up to BURST of credit builds up while the link is idle, like a real queue
    that drains at line rate."""

    BURST = 256 * 1024

    def __init__(self, bytes_per_s):
        self.rate = bytes_per_s
        self.free_at = time.monotonic()
        self.sent = 0

    async def take(self, n):
        now = time.monotonic()
        start = max(self.free_at, now - self.BURST / self.rate)
        self.free_at = start + n / self.rate
        self.sent += n
        if self.free_at > now:
            await asyncio.sleep(self.free_at - now)


async def delayed_upstream(reader, writer, delay):
    """Client -> target: each chunk delivered `delay` after it was read, in order."""
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.write_eof() if writer.can_write_eof() else writer.close()

    task = asyncio.create_task(deliver())
    try:
        while data := await reader.read(CHUNK):
            queue.put_nowait((time.monotonic() + delay, data))
    finally:
        queue.put_nowait((0, None))
        await task


async def shaped_downstream(reader, writer, bucket):
    """Target -> client: through the shared bucket."""
    while data := await reader.read(CHUNK):
        await bucket.take(len(data))
        writer.write(data)
        await writer.drain()
    writer.close()


async def main():
    port, target, mbit, rtt_ms = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    host, tport = target.rsplit(":", 1)
    bucket = Bucket(mbit * 1e6 / 8)
    delay = rtt_ms / 1000
    stats = os.environ.get("WAN_STATS")

    def write_stats():
        if stats:
            with open(stats + ".tmp", "w") as f:
                f.write(f"{bucket.sent}\n")
            os.replace(stats + ".tmp", stats)

    async def handle(creader, cwriter):
        await asyncio.sleep(delay)  # the handshake's round trip
        try:
            ureader, uwriter = await asyncio.open_connection(host, int(tport))
        except OSError:
            cwriter.close()
            return
        try:
            await asyncio.gather(delayed_upstream(creader, uwriter, delay), shaped_downstream(ureader, cwriter, bucket))
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (uwriter, cwriter):
                w.close()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, write_stats)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=CHUNK)
    print("ready", flush=True)
    async with server:
        await stop
    write_stats()


asyncio.run(main())
