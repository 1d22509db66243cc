#!/usr/bin/env python3
"""What one client connection costs the gateway in memory: a parked config listener, an idle
keep-alive connection, or a connection that never sent a request.

Starts `nacre up` fresh (gateway and three nodes in one process, a temporary data directory),
measures the process's RSS, opens COUNT connections one after the other, measures again once
they are all held, and prints the difference per connection. For `parked`, it first publishes
COUNT configs and waits for the process to settle, so the baseline holds the configs and every
md5 the gateway learned; each connection then sends one listener poll (one config each, with
the config's md5, `Long-Pulling-Timeout: 30000`), which parks at the gateway
(`nacre_gateway_config_listeners` must reach COUNT). `--java-headers` adds the headers the
Java 1.4 client sends, which a parked poll keeps.

  python3 loadtest/bench/connection-memory.py --nacre target/release/nacre --mode parked \\
      --count 9000 --java-headers

`nacre up` listens on --port (default 29020) and the three ports after it. Every connection is
one descriptor in this process and one in `nacre up`: COUNT must stay below the open-file
limit (`ulimit -n`) less a few hundred. Needs only python3.
"""
import argparse
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def metric(port, name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    for line in c.getresponse().read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait_ready(port, proc):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit("nacre up exited")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/nacos/v1/ns/operator/metrics")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit("nacre up not ready in 60 s")


def listener_request(port, i, java):
    md5 = hashlib.md5(f"content of config {i}".encode()).hexdigest()
    body = "Listening-Configs=" + urllib.parse.quote(f"mem-{i}\x02G\x02{md5}\x01", safe="")
    head = (
        f"POST /nacos/v1/cs/configs/listener HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Long-Pulling-Timeout: 30000\r\n"
        "Content-Type: application/x-www-form-urlencoded;charset=UTF-8\r\n"
    )
    if java:
        head += (
            "Client-Version: 1.4.1\r\nUser-Agent: Nacos-Java-Client:v1.4.1\r\n"
            "Accept-Encoding: gzip,deflate,sdch\r\nConnection: Keep-Alive\r\n"
            f"RequestId: {uuid.uuid4()}\r\nRequest-Module: Naming\r\nexConfigInfo: true\r\n"
            "Accept-Charset: UTF-8\r\n"
        )
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return (head + body).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nacre", default="target/release/nacre")
    ap.add_argument("--mode", choices=["parked", "idle", "silent"], default="parked")
    ap.add_argument("--count", type=int, default=9000)
    ap.add_argument("--java-headers", action="store_true")
    # Below the ephemeral range: the thousands of client sockets of a previous run, in
    # TIME_WAIT, must not hold the ports `nacre up` listens on (this one and the next three).
    ap.add_argument("--port", type=int, default=29020)
    args = ap.parse_args()

    port = args.port
    data = tempfile.mkdtemp(prefix="nacre-connmem-")
    env = dict(os.environ, NACRE_LOG="warn")
    proc = subprocess.Popen(
        [args.nacre, "up", "--listen", f"127.0.0.1:{port}", "--data", data],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    socks = []
    try:
        wait_ready(port, proc)
        if args.mode == "parked":
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for i in range(args.count):
                body = urllib.parse.urlencode(
                    {"dataId": f"mem-{i}", "group": "G", "content": f"content of config {i}"}
                )
                c.request("POST", "/nacos/v1/cs/configs", body,
                          {"Content-Type": "application/x-www-form-urlencoded"})
                r = c.getresponse()
                if r.read() != b"true":
                    sys.exit(f"publish {i} refused: {r.status}")
            c.close()
        time.sleep(5)
        before = rss_kib(proc.pid)
        for i in range(args.count):
            s = socket.create_connection(("127.0.0.1", port))
            if args.mode == "parked":
                s.sendall(listener_request(port, i, args.java_headers))
            elif args.mode == "idle":
                s.sendall(b"GET /nacos/serverlist HTTP/1.1\r\nHost: gw\r\n\r\n")
                if not s.recv(65536).startswith(b"HTTP/1.1 200"):
                    sys.exit("serverlist not answered")
            socks.append(s)
        if args.mode == "parked":
            deadline = time.time() + 20
            while metric(port, "nacre_gateway_config_listeners") < args.count:
                if time.time() > deadline:
                    sys.exit("not every listener parked at the gateway")
                time.sleep(0.2)
        time.sleep(3)
        after = rss_kib(proc.pid)
        kind = {"parked": "parked listeners", "idle": "idle keep-alive connections",
                "silent": "connections that sent nothing"}[args.mode]
        heads = (" (Java-like heads)" if args.java_headers else " (minimal heads)") \
            if args.mode == "parked" else ""
        print(f"{args.count} {kind}{heads}: nacre up RSS {before} -> {after} KiB, "
              f"{(after - before) * 1024 / args.count:.0f} bytes each")
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
