#!/usr/bin/env python3
"""Relayed streams under host TCP memory pressure (issue 13, item 3): do they stall?

A backend sends every client a few MiB through the proxy; the clients read slowly, so bytes pile
up in socket buffers until the host reaches its `net.ipv4.tcp_mem` limit, which this script
lowers for the run (it is host-wide: nothing else should run meanwhile) and restores after.
Under that pressure the kernel drops packets, refuses some writes, and resets closed sockets it
lacks memory for. Reports, per proxy binary, the clients that went without a byte for more than
--stall seconds while their stream was unfinished (on stderr, each by port, when it paused and
what it had received), and the longest such pause, counting one still under way at the end.

    sudo python3 benches/tcp_mem_stall.py --proxy target/release/brokerside \
        [--proxy OTHER ...] [--proxy /usr/sbin/haproxy]

A proxy named `haproxy` runs with splice-request and splice-response, as compare.rs' HAProxy+splice.

Needs root (sysctl). Traffic stays on 127.0.0.1. Not a test: CI does not run it.
"""

import argparse
import asyncio
import os
import resource
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


async def client(port, size, read, every, state):
    """Reads its stream, keeping `state` current so a cancelled client still reports."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    state["last"] = time.monotonic()
    state["port"] = writer.get_extra_info("sockname")[1]
    try:
        while state["got"] < size:
            data = await reader.read(read)
            if not data:
                break
            now = time.monotonic()
            if state["got"] == 0:
                state["first"] = now - state["last"]
            if now - state["last"] > state["longest"]:
                state["longest"], state["paused_at"] = now - state["last"], state["last"]
            state["last"] = now
            state["got"] += len(data)
            await asyncio.sleep(every)
    except (ConnectionError, OSError):
        pass
    finally:
        state["ended"] = True
        writer.close()


async def run_one(proxy, args):
    backend_port, proxy_port = free_port(), free_port()
    ready = asyncio.Event()
    server = asyncio.create_task(backend(backend_port, args.mib << 20, ready))
    await ready.wait()
    haproxy = os.path.basename(proxy) == "haproxy"
    config = tempfile.NamedTemporaryFile("w", suffix=".cfg" if haproxy else ".toml", delete=False)
    if haproxy:
        # As in benches/compare.rs' HAProxy+splice target, with maxconn to fit the 20,000-file cap.
        config.write(
            "global\n  maxconn 5000\n  nbthread 2\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 300s\n"
            "  timeout server 300s\n  option splice-request\n  option splice-response\n"
            f"listen l\n  bind 127.0.0.1:{proxy_port}\n  server b 127.0.0.1:{backend_port}\n"
        )
        command = [proxy, "-db", "-f"]
    else:
        config.write(
            f'[admin]\nlisten = "127.0.0.1:0"\n'
            f'[[listener]]\nname = "l"\nlisten = "127.0.0.1:{proxy_port}"\nbackend = "b"\n'
            f'[[backend]]\nname = "b"\nservers = ["127.0.0.1:{backend_port}"]\n'
            f'loopback_sources = "off"\n'
        )
        command = [proxy, "run", "--config"]
    config.close()
    process = subprocess.Popen(
        command + [config.name],
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
    fresh = {"got": 0, "longest": 0.0, "first": 0.0, "last": None, "ended": False, "port": None}
    results = [dict(fresh, paused_at=0.0) for _ in range(args.clients)]
    started = time.monotonic()
    tasks = [
        asyncio.create_task(client(proxy_port, args.mib << 20, args.read, args.every, state))
        for state in results
    ]
    await asyncio.wait(tasks, timeout=args.seconds)
    now = time.monotonic()
    elapsed = now - started
    for state in results:
        # A client still waiting when the run ends is in a pause that counts too.
        waiting = not state["ended"] and state["last"] is not None
        if waiting and now - state["last"] > state["longest"]:
            state["longest"], state["paused_at"] = now - state["last"], state["last"]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    process.terminate()
    try:
        _, stderr = process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    server.cancel()
    os.unlink(config.name)
    warned = sum("TCP memory" in line for line in stderr.splitlines())
    size = args.mib << 20
    stalled = [r for r in results if r["longest"] > args.stall]
    for r in stalled:
        print(
            f"{proxy}: client port {r['port']} paused {r['longest']:.1f}s from "
            f"{r['paused_at'] - started:.1f}s, {r['got']} B received",
            file=sys.stderr,
        )
    done = sum(1 for r in results if r["got"] >= size)
    moved = sum(r["got"] for r in results)
    return {
        "proxy": proxy,
        "clients": args.clients,
        "finished": done,
        "moved_mib": moved / (1 << 20),
        "seconds": elapsed,
        "stalled": len(stalled),
        "longest": max((r["longest"] for r in results), default=0.0),
        "first": max((r["first"] for r in results), default=0.0),
        "never": sum(1 for r in results if r["last"] is None),
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
    # Clients and backend share this process (two descriptors per client); proxies inherit it.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
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
    print(
        "| proxy | finished | MiB moved | seconds | clients stalled | longest pause (s) "
        "| longest wait for the first byte (s) | memory WARN lines | never connected |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['proxy']}` | {r['finished']}/{r['clients']} | {r['moved_mib']:.0f} | "
            f"{r['seconds']:.0f} | {r['stalled']} | {r['longest']:.1f} | {r['first']:.1f} | "
            f"{r['warned']} | {r['never']} |"
        )


if __name__ == "__main__":
    sys.exit(main())
