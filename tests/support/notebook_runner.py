#!/usr/bin/env python3
"""Executes a notebook headless with a real Jupyter client (nbclient) and writes the executed
notebook, optionally exported to HTML (nbconvert). Prints a JSON summary on stdout.

Deno's kernel drops iopub messages published before a subscriber has connected, and nbclient
starts executing as soon as the shell channel answers, so a fast first cell can lose its
outputs. The runner therefore waits, after the kernel is ready, until a kernel_info_request's
status message arrives on iopub.

    notebook_runner.py NOTEBOOK --out EXECUTED.ipynb [--html OUT.html] [--kernel NAME]
        [--transport tcp|ipc] [--skip-tag TAG] [--cwd DIR] [--timeout SECONDS]
"""

import argparse
import asyncio
import json
import os
import sys
import time

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient


async def wait_for_iopub(kc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg_id = kc.kernel_info()
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                msg = await kc.get_iopub_msg(timeout=0.1)
            except Exception:
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return
    raise RuntimeError("the kernel's iopub channel never delivered a message")


class Client(NotebookClient):
    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        await wait_for_iopub(kc, self.startup_timeout)
        return kc


async def execute(args):
    nb = nbformat.read(args.notebook, as_version=4)
    if args.skip_tag:
        nb.cells = [c for c in nb.cells if args.skip_tag not in c.get("metadata", {}).get("tags", [])]
    kernel = args.kernel or nb.metadata.get("kernelspec", {}).get("name", "python3")
    km = AsyncKernelManager(kernel_name=kernel, transport=args.transport)
    cwd = args.cwd or os.path.dirname(os.path.abspath(args.notebook))
    client = Client(
        nb,
        km=km,
        timeout=args.timeout,
        startup_timeout=120,
        allow_errors=True,
        record_timing=True,
        resources={"metadata": {"path": cwd}},
    )
    started = time.monotonic()
    failure = None
    try:
        await client.async_execute(cleanup_kc=True)
    except Exception as e:  # a timeout or a dead kernel: still write what ran
        failure = "%s: %s" % (type(e).__name__, e)
    finally:
        try:
            if await km.is_alive():
                await km.shutdown_kernel(now=False)
        except Exception:
            pass
    nbformat.write(nb, args.out)
    errors = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append({"cell": i, "ename": out.get("ename"), "evalue": out.get("evalue"),
                               "source": cell.get("source", "")[:200]})
    if args.html:
        from nbconvert import HTMLExporter

        html, _ = HTMLExporter().from_notebook_node(nb)
        with open(args.html, "w") as f:
            f.write(html)
    return {
        "notebook": args.notebook,
        "kernel": kernel,
        "transport": args.transport,
        "cells": len(nb.cells),
        "seconds": round(time.monotonic() - started, 1),
        "errors": errors,
        "failure": failure,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("notebook")
    ap.add_argument("--out", required=True)
    ap.add_argument("--html")
    ap.add_argument("--kernel")
    ap.add_argument("--transport", default="tcp", choices=["tcp", "ipc"])
    ap.add_argument("--skip-tag")
    ap.add_argument("--cwd")
    ap.add_argument("--timeout", type=int, default=600)
    summary = asyncio.run(execute(ap.parse_args()))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
