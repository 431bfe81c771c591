#!/usr/bin/env python3
"""Deno's Jupyter kernel behind an IPC-to-TCP bridge, for Google Colab.

Colab starts kernels with ``"transport": "ipc"`` in the connection file, but ``deno jupyter``
speaks only TCP (denoland/deno#21589), so a Deno kernel never starts there. This script is
the kernel Colab starts instead: it binds the five Jupyter channels on the IPC endpoints Colab
asked for, starts ``deno jupyter --kernel`` on free TCP ports of 127.0.0.1 (same key, same
signature scheme), and forwards every message unchanged between the two:

* shell, control, stdin: ROUTER (IPC, Colab's side) <-> DEALER (TCP, Deno's side). Deno
  answers with the routing identity of the bridge only (it drops the front end's identity
  frames), so the bridge routes each reply (and each input request) back to the front end
  whose request is its parent; the shell and stdin DEALERs share one identity so that Deno's
  input requests reach the bridge;
* iopub: Deno's PUB -> SUB here -> XPUB (IPC); messages wait until a front end has subscribed,
  and until a probe ``kernel_info_request`` has shown that Deno's iopub reaches the bridge
  (Deno drops iopub messages sent before a subscriber is connected);
* heartbeat: answered here while Deno runs (as ipykernel's heartbeat thread does).

SIGINT (Jupyter's interrupt) is passed on to Deno; when Deno exits, so does the bridge, and
Deno dies with the bridge. With a TCP connection file the bridge simply runs Deno.

Usage::

    deno_kernel_bridge.py run [--deno PATH] CONNECTION_FILE
    deno_kernel_bridge.py install [--name deno] [--display-name NAME] [--deno PATH] [--dir KERNELS_DIR]
        [--env KEY=VALUE ...]

Needs only Python 3 and pyzmq (present in Colab; Debian: python3-zmq).
"""

import argparse
import datetime
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

DELIM = b"<IDS|MSG>"
LOG = os.environ.get("DENO_BRIDGE_LOG")  # a file to append the bridge's events to


def log(*what):
    if LOG:
        with open(LOG, "a") as f:
            print("%.3f" % time.time(), *what, file=f)


def endpoint(cfg, port):
    """The ZeroMQ address of one channel, as jupyter_client writes it."""
    if cfg.get("transport", "tcp") == "ipc":
        return "ipc://%s-%s" % (cfg["ip"], port)
    return "tcp://%s:%s" % (cfg["ip"], port)


def free_ports(n):
    """n free TCP ports on 127.0.0.1 (held together while picked, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Signer:
    """HMAC signatures of Jupyter messages (for the bridge's own probe requests)."""

    def __init__(self, key, scheme):
        self.key = key.encode() if isinstance(key, str) else key
        self.digest = (scheme or "hmac-sha256").split("-", 1)[1]

    def sign(self, parts):
        if not self.key:
            return b""
        h = hmac.new(self.key, digestmod=getattr(hashlib, self.digest))
        for p in parts:
            h.update(p)
        return h.hexdigest().encode()


def header_field(frames, offset, field="msg_id"):
    """A field of the header (offset 2) or parent header (offset 3) of a wire message, or None."""
    try:
        i = frames.index(DELIM)
        return json.loads(frames[i + offset]).get(field)
    except (ValueError, IndexError, json.JSONDecodeError, AttributeError):
        return None


class Routes:
    """Which front end sent a request: its identity frames by msg_id (the newest 10000)."""

    def __init__(self, limit=10000):
        self.ids = {}
        self.limit = limit

    def remember(self, frames):
        i = frames.index(DELIM) if DELIM in frames else 0
        msg_id = header_field(frames, 2)
        if msg_id and i:
            self.ids[msg_id] = frames[:i]
            while len(self.ids) > self.limit:
                self.ids.pop(next(iter(self.ids)))
        return frames[i:]

    def identities(self, frames):
        return self.ids.get(header_field(frames, 3))


def die_with_parent():
    """Runs in the child before exec: Linux sends it SIGTERM when the bridge dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def find_deno(explicit=None):
    """The deno executable: --deno, else $DENO, else PATH, else ~/.deno/bin/deno."""
    for cand in (explicit, os.environ.get("DENO"), shutil.which("deno"),
                 os.path.expanduser("~/.deno/bin/deno")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    sys.exit("deno_kernel_bridge: cannot find deno (pass --deno PATH or put it on PATH)")


def run(connection_file, deno):
    import zmq  # only the bridge itself needs pyzmq; `install` does not

    with open(connection_file) as f:
        cfg = json.load(f)
    if cfg.get("transport", "tcp") == "tcp":
        os.execv(deno, [deno, "jupyter", "--kernel", "--conn", connection_file])

    names = ("shell", "control", "stdin", "hb", "iopub")
    tcp = dict(cfg)
    tcp.update(transport="tcp", ip="127.0.0.1")
    for name, port in zip(names, free_ports(len(names))):
        tcp[name + "_port"] = port
    fd, tcp_file = tempfile.mkstemp(prefix="deno-kernel-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(tcp, f)

    ctx = zmq.Context()

    def sock(kind, **opts):
        s = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 1000)
        for k, v in opts.items():
            s.setsockopt(getattr(zmq, k), v)
        return s

    # Colab's side: bound on the IPC endpoints it asked for.
    front = {n: sock(zmq.ROUTER) for n in ("shell", "control", "stdin")}
    front["hb"] = sock(zmq.REP)
    front["iopub"] = sock(zmq.XPUB)
    for n in names:
        front[n].bind(endpoint(cfg, cfg[n + "_port"]))

    child = subprocess.Popen([deno, "jupyter", "--kernel", "--conn", tcp_file], preexec_fn=die_with_parent)

    def on_signal(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGINT, on_signal)  # interrupt: Deno's to handle
    signal.signal(signal.SIGTERM, on_signal)  # stop: Deno exits, then so do we

    # Deno's side: connected over TCP. shell and stdin share one identity (see the module doc).
    identity = ("bridge-" + uuid.uuid4().hex).encode()
    back = {
        "shell": sock(zmq.DEALER, IDENTITY=identity),
        "control": sock(zmq.DEALER),
        "stdin": sock(zmq.DEALER, IDENTITY=identity),
        "iopub": sock(zmq.SUB),
    }
    back["iopub"].setsockopt(zmq.SUBSCRIBE, b"")
    for n, s in back.items():
        s.connect(endpoint(tcp, tcp[n + "_port"]))

    signer = Signer(cfg.get("key", ""), cfg.get("signature_scheme"))
    session = uuid.uuid4().hex
    probes = set()
    kernel_ready_at = None
    subscribed = False
    last_probe = 0.0
    started = time.monotonic()

    def probe():
        header = {
            "msg_id": uuid.uuid4().hex,
            "session": session,
            "username": "deno-kernel-bridge",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "msg_type": "kernel_info_request",
            "version": "5.3",
        }
        parts = [json.dumps(header).encode(), b"{}", b"{}", b"{}"]
        back["shell"].send_multipart([DELIM, signer.sign(parts)] + parts)
        probes.add(header["msg_id"])

    poller = zmq.Poller()
    for s in (front["hb"], front["iopub"], back["shell"], back["control"], back["stdin"], back["iopub"]):
        poller.register(s, zmq.POLLIN)
    forwarding = False
    routes = Routes()
    pairs = {front[n]: back[n] for n in ("shell", "control", "stdin")}
    pairs.update({back[n]: front[n] for n in ("shell", "control", "stdin")})
    fronts = {front[n] for n in ("shell", "control", "stdin")}

    def to_front(s, frames):
        ids = routes.identities(frames)
        if ids:  # otherwise a reply to one of our probes, or to a front end that is gone
            pairs[s].send_multipart(ids + frames)

    try:
        while True:
            if child.poll() is not None:
                # Deno is gone (shutdown or crash): pass on what it said last, then stop.
                end = time.monotonic() + 0.5
                while time.monotonic() < end:
                    for s, _ in poller.poll(50):
                        frames = s.recv_multipart()
                        if s is back["iopub"]:
                            front["iopub"].send_multipart(frames)
                        elif s in pairs and s not in fronts:
                            to_front(s, frames)
                break
            now = time.monotonic()
            if kernel_ready_at is None and now - last_probe > 0.5 and now - started < 120:
                last_probe = now
                probe()
            ready = kernel_ready_at is not None and (subscribed or now - kernel_ready_at > 10)
            if not forwarding and (ready or now - started > 120):  # after 2 minutes, forward regardless
                forwarding = True
                for s in fronts:
                    poller.register(s, zmq.POLLIN)
            for s, _ in poller.poll(100):
                frames = s.recv_multipart()
                if LOG:
                    side = "front" if s in front.values() else "back"
                    name = next(n for n, x in (front if side == "front" else back).items() if x is s)
                    log("recv", side, name, frames[:4] if name != "hb" else "heartbeat")
                if s is front["hb"]:
                    s.send_multipart(frames)
                elif s is front["iopub"]:
                    if frames and frames[0][:1] == b"\x01":
                        subscribed = True
                elif s is back["iopub"]:
                    if header_field(frames, 3) in probes:
                        kernel_ready_at = kernel_ready_at or time.monotonic()
                        continue
                    front["iopub"].send_multipart(frames)
                elif s in fronts:
                    pairs[s].send_multipart(routes.remember(frames))
                else:
                    to_front(s, frames)
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
        try:
            os.unlink(tcp_file)
        except OSError:
            pass
        ctx.destroy(linger=500)
    return child.returncode or 0


def user_kernels_dir():
    """Jupyter's per-user kernels directory ($JUPYTER_DATA_DIR, else ~/.local/share/jupyter)."""
    data = os.environ.get("JUPYTER_DATA_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "jupyter")
    return os.path.join(data, "kernels")


def install(name, display_name, deno, kernels_dir, env):
    """Writes the kernel spec that starts this bridge; returns its directory."""
    dest = os.path.join(kernels_dir or user_kernels_dir(), name)
    os.makedirs(dest, exist_ok=True)
    script = os.path.join(dest, "deno_kernel_bridge.py")
    if os.path.abspath(__file__) != os.path.abspath(script):
        shutil.copyfile(__file__, script)
    spec = {
        "argv": [sys.executable, script, "run", "--deno", deno, "{connection_file}"],
        "display_name": display_name,
        "language": "typescript",
        "interrupt_mode": "signal",
        "env": env,
        "metadata": {"loupe": {"bridge": "ipc-to-tcp", "deno": deno}},
    }
    with open(os.path.join(dest, "kernel.json"), "w") as f:
        json.dump(spec, f, indent=2)
    return dest


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the kernel behind the bridge (what the kernel spec starts)")
    r.add_argument("--deno", help="deno executable (default: PATH, then ~/.deno/bin/deno)")
    r.add_argument("connection_file")
    i = sub.add_parser("install", help="install the kernel spec that starts the bridge")
    i.add_argument("--name", default="deno", help='kernel name (default "deno", what Deno notebooks ask for)')
    i.add_argument("--display-name", default="Deno")
    i.add_argument("--deno", help="deno executable (default: PATH, then ~/.deno/bin/deno)")
    i.add_argument("--dir", help="kernels directory (default: the user's, $JUPYTER_DATA_DIR/kernels)")
    i.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment of the kernel")
    a = ap.parse_args(argv)
    deno = find_deno(a.deno)
    if a.cmd == "run":
        return run(a.connection_file, deno)
    env = dict(kv.split("=", 1) for kv in a.env)
    print(install(a.name, a.display_name, os.path.abspath(deno), a.dir, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
