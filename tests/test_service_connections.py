"""Bounded connections against a real uvicorn on 127.0.0.1 with 256 file descriptors: 300 idle and 50
byte-by-byte clients do not keep normal requests from being answered."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
from _service_fixtures import DIM, READ_KEY, free_port, make_model_dir

from annrec.service.connections import RESERVED_FDS, connection_limits

SERVE = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
         "from annrec.cli import main; main()")


def test_connection_cap_follows_the_file_limit():
    assert connection_limits(100) == 100
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert connection_limits() == max(16, (65_536 if soft == resource.RLIM_INFINITY else soft) - RESERVED_FDS)


def test_idle_and_slow_clients_do_not_lock_out_normal_ones(tmp_path):
    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    port = free_port()
    env = {**os.environ, "ANNREC_READ_KEY": READ_KEY, "ANNREC_HEADER_TIMEOUT_S": "3", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", "--model-dir", str(d), "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    socks: list[socket.socket] = []
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        for _ in range(300):  # idle: connect and say nothing
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
        slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
        socks += slow

        def dribble():  # a header byte every 0.2 s on each slow socket ("slowloris")
            request = b"GET /v1/indexes HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 10_000
            i = 0
            while not stop.is_set() and i < len(request):
                for s in slow:
                    with contextlib.suppress(OSError):
                        s.send(request[i:i + 1])
                i += 1
                time.sleep(0.2)

        t = threading.Thread(target=dribble, daemon=True)
        t.start()
        time.sleep(0.5)
        answered, worst, statuses = 0, 0.0, []
        for i in range(20):  # normal clients, each on a new connection
            t0 = time.monotonic()
            r = httpx.post(url + "/v1/indexes/mf-hnsw/search", headers={"X-API-Key": READ_KEY},
                           json={"vector": [0.1 * i] * DIM, "k": 3}, timeout=15)
            worst = max(worst, time.monotonic() - t0)
            answered += r.status_code == 200
            statuses.append(r.status_code)
        assert answered == 20 and worst < 10, (statuses, worst)
        # the idle and slow sockets were closed by the server: reading them gives EOF
        time.sleep(3.5)
        closed = 0
        for s in socks:
            s.settimeout(0.05)
            try:
                closed += s.recv(1) == b""
            except (TimeoutError, socket.timeout):
                pass
            except OSError:
                closed += 1
        assert closed >= 340, closed
    finally:
        stop.set()
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(30)
