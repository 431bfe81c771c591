#!/usr/bin/env python3
"""Sets up loupe in a Colab runtime (or any Linux machine with Jupyter): Deno, the pinned engine
(the CUDA 12 package on Colab's CUDA 12 runtime, chosen from the NVIDIA driver), libloupe, the
plotly.js cache, and a kernel spec named "deno" that starts Deno's kernel behind the IPC-to-TCP
bridge (deno_kernel_bridge.py). The first cell of notebooks/colab.ipynb runs it; then reload the
page and the notebook's cells run on Deno.

    python3 notebooks/colab/setup.py [--deno-version 2.9.6] [--engine cpu|vulkan|cuda|cuda12]
        [--kernel-name deno] [--kernels-dir DIR] [--skip-build]

Every step prints what it does; a failing step stops with its command's output.
"""

import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DENO_VERSION = "2.9.6"  # the version loupe's notebooks are tested with


def step(msg):
    print("loupe setup: " + msg, flush=True)


def sh(args, **kw):
    step("$ " + " ".join(args))
    subprocess.run(args, check=True, **kw)


def have(cmd):
    return shutil.which(cmd) is not None


def ensure_npm():
    """npm fetches the pinned engine packages (and installs Deno)."""
    if have("npm"):
        return
    if os.geteuid() == 0 and have("apt-get"):
        sh(["apt-get", "update", "-qq"])
        sh(["apt-get", "install", "-y", "-qq", "nodejs", "npm"])
    if not have("npm"):
        sys.exit("loupe setup: npm is missing and could not be installed; install Node.js and npm")


def ensure_deno(version):
    """Deno from npm (as the README says), at the version the notebooks are tested with."""
    found = shutil.which("deno")
    if found:
        out = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
        if out.startswith("deno %s " % version) or version == "any":
            step("%s is at %s" % (" ".join(out.split()[:2]), found))
            return found
    sh(["npm", "install", "-g", "deno@%s" % version])
    found = shutil.which("deno")
    if not found:
        prefix = subprocess.run(["npm", "prefix", "-g"], capture_output=True, text=True).stdout.strip()
        cand = os.path.join(prefix, "bin", "deno")
        found = cand if os.path.exists(cand) else None
    if not found:
        sys.exit("loupe setup: deno was installed but is not on PATH")
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description="Set up loupe and the Deno kernel (Colab)")
    ap.add_argument("--deno-version", default=os.environ.get("LOUPE_DENO_VERSION", DENO_VERSION),
                    help='Deno version to install ("any": keep the one on PATH)')
    ap.add_argument("--engine", default=os.environ.get("LOUPE_ENGINE"),
                    help="engine package (default: detected: the CUDA build of the installed CUDA runtime, "
                         "CUDA 12 on Colab; see chooseVariant in native/build.ts)")
    ap.add_argument("--kernel-name", default="deno", help='kernel spec name (default "deno", what the notebooks use)')
    ap.add_argument("--display-name", default="Deno (loupe)")
    ap.add_argument("--kernels-dir", help="where kernel specs go (default: Jupyter's per-user directory)")
    ap.add_argument("--skip-build", action="store_true", help="do not fetch the engine or build libloupe")
    a = ap.parse_args(argv)

    env = dict(os.environ)
    if a.engine:
        env["LOUPE_ENGINE"] = a.engine
    ensure_npm()
    deno = ensure_deno(a.deno_version)
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"])
    if not a.skip_build:
        # Fetch the pinned engine, build libloupe and the reference tools (a few minutes the first time).
        sh([deno, "run", "-A", "native/build/cli.ts"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    # Compile loupe's modules and cache plotly.js now, so the first notebook cell starts quickly.
    sh([deno, "cache", "mod.ts"], cwd=REPO, env=env)
    sh([deno, "eval", "import { plotlyScript } from './src/notebook/plotly.ts'; await plotlyScript();"], cwd=REPO, env=env)
    kernel_env = {"PATH": os.path.dirname(deno) + os.pathsep + env.get("PATH", "")}
    for key in ("LOUPE_ENGINE", "LOUPE_CACHE_DIR", "LOUPE_PLOTLY", "LOUPE_MODEL"):
        if env.get(key):
            kernel_env[key] = env[key]
    args = [sys.executable, os.path.join(HERE, "deno_kernel_bridge.py"), "install", "--name", a.kernel_name,
            "--display-name", a.display_name, "--deno", deno]
    if a.kernels_dir:
        args += ["--dir", a.kernels_dir]
    for k, v in kernel_env.items():
        args += ["--env", "%s=%s" % (k, v)]
    sh(args)
    step("done. Reload the page (Ctrl+R): the notebook's kernel, \"%s\", now starts Deno through the bridge."
         % a.kernel_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
