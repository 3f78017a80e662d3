#!/usr/bin/env python3
"""Relayed streams under host TCP memory pressure (issue 13, item 3): do they stall?

A backend sends every client a few MiB through the proxy; the clients read slowly, so bytes pile
up in socket buffers until the host reaches its `net.ipv4.tcp_mem` limit, which this script
lowers for the run (it is host-wide: nothing else should run meanwhile) and restores after.
Under that pressure the kernel refuses writes even to sockets with nothing queued, and sends no
wake-up when memory comes back. Reports, per proxy binary, the clients that went without a byte
for more than --stall seconds while their stream was unfinished, and the longest such pause.

    sudo python3 benches/tcp_mem_stall.py --proxy target/release/brokerside [--proxy OTHER ...]

Needs root (sysctl). Traffic stays on 127.0.0.1. Not a test: CI does not run it.
"""

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

TCP_MEM = "/proc/sys/net/ipv4/tcp_mem"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def backend(port, size, ready):
    chunk = b"x" * 65536

    async def serve(reader, writer):
        try:
            sent = 0
            while sent < size:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    ready.set()
    async with server:
        await server.serve_forever()


async def client(port, size, read, every, stall, results):
    longest = 0.0
    got = 0
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        results.append((0, 0.0, False))
        return
    last = time.monotonic()
    try:
        while got < size:
            try:
                data = await asyncio.wait_for(reader.read(read), timeout=stall * 4)
            except asyncio.TimeoutError:
                longest = max(longest, time.monotonic() - last)
                break
            now = time.monotonic()
            if not data:
                break
            longest = max(longest, now - last)
            last = now
            got += len(data)
            await asyncio.sleep(every)
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    results.append((got, longest, got >= size))


async def run_one(proxy, args):
    backend_port, proxy_port = free_port(), free_port()
    ready = asyncio.Event()
    server = asyncio.create_task(backend(backend_port, args.mib << 20, ready))
    await ready.wait()
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    config.write(
        f'[admin]\nlisten = "127.0.0.1:0"\n'
        f'[[listener]]\nname = "l"\nlisten = "127.0.0.1:{proxy_port}"\nbackend = "b"\n'
        f'[[backend]]\nname = "b"\nservers = ["127.0.0.1:{backend_port}"]\n'
        f'loopback_sources = "off"\n'
    )
    config.close()
    process = subprocess.Popen(
        [proxy, "run", "--config", config.name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", proxy_port), timeout=1):
                break
        except OSError:
            time.sleep(0.05)
    results = []
    started = time.monotonic()
    tasks = [
        asyncio.create_task(
            client(proxy_port, args.mib << 20, args.read, args.every, args.stall, results)
        )
        for _ in range(args.clients)
    ]
    await asyncio.wait(tasks, timeout=args.seconds)
    for task in tasks:
        task.cancel()
    elapsed = time.monotonic() - started
    process.terminate()
    try:
        _, stderr = process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    server.cancel()
    os.unlink(config.name)
    warned = sum("TCP memory" in line for line in stderr.splitlines())
    stalled = [longest for _, longest, _ in results if longest > args.stall]
    done = sum(1 for _, _, complete in results if complete)
    moved = sum(got for got, _, _ in results)
    return {
        "proxy": proxy,
        "clients": args.clients,
        "finished": done,
        "moved_mib": moved / (1 << 20),
        "seconds": elapsed,
        "stalled": len(stalled),
        "longest": max((l for _, l, _ in results), default=0.0),
        "warned": warned,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", action="append", required=True, help="proxy binary (repeatable)")
    parser.add_argument("--clients", type=int, default=400)
    parser.add_argument("--mib", type=int, default=4, help="MiB the backend sends each client")
    parser.add_argument("--read", type=int, default=4096, help="bytes a client reads at a time")
    parser.add_argument("--every", type=float, default=0.02, help="seconds between reads")
    parser.add_argument("--stall", type=float, default=5.0, help="a pause longer than this is a stall")
    parser.add_argument("--seconds", type=float, default=90.0, help="longest run per proxy")
    parser.add_argument(
        "--tcp-mem", default="4096 6144 8192", help="pages: min pressure max, for the run"
    )
    args = parser.parse_args()
    with open(TCP_MEM) as f:
        saved = f.read().strip()
    rows = []
    try:
        for proxy in args.proxy:
            with open(TCP_MEM, "w") as f:
                f.write(args.tcp_mem)
            rows.append(asyncio.run(run_one(proxy, args)))
            with open(TCP_MEM, "w") as f:
                f.write(saved)
            time.sleep(5)
    finally:
        with open(TCP_MEM, "w") as f:
            f.write(saved)
    print(f"tcp_mem during the runs: {args.tcp_mem} (pages); restored to {saved}")
    print(
        f"{args.clients} clients, {args.mib} MiB each, read {args.read} B every {args.every}s; "
        f"stall = no byte for more than {args.stall}s"
    )
    print()
    print("| proxy | finished | MiB moved | seconds | clients stalled | longest pause (s) | memory WARN lines |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['proxy']}` | {r['finished']}/{r['clients']} | {r['moved_mib']:.0f} | "
            f"{r['seconds']:.0f} | {r['stalled']} | {r['longest']:.1f} | {r['warned']} |"
        )


if __name__ == "__main__":
    sys.exit(main())
