// The Colab path without Colab: the Python setup cell of notebooks/colab.ipynb runs
// notebooks/colab/setup.py, which installs the "deno" kernel spec that runs Deno's kernel behind
// the IPC-to-TCP bridge (into a private Jupyter data directory); a real Jupyter client
// (jupyter_client) starts it with transport="ipc", as Colab does, runs cells and checks what
// arrives (rich display data, in-place updates, errors, input requests, shutdown); then the
// notebook's TypeScript cells run through it with nbclient.
import { join } from "node:path";
import { assert, assertEquals } from "../support/assert.ts";
import { build } from "../support/helpers.ts";
import { joined, jupyterPython, plotOutputs, readNotebook, ROOT, runNotebook } from "../support/notebook_helpers.ts";

const NAME = "deno"; // what the notebook asks for
const tmp = await Deno.makeTempDir({ prefix: "loupe-colab-" });
const data = join(tmp, "jupyter"); // the kernel spec goes here, not into the user's Jupyter directory
const work = join(tmp, "content"); // Colab's /content: the repository is ./loupe
await Deno.mkdir(work);
await Deno.symlink(ROOT, join(work, "loupe"));
const env = {
  JUPYTER_DATA_DIR: data,
  PATH: `${Deno.execPath().replace(/\/[^/]+$/, "")}:${Deno.env.get("PATH") ?? ""}`,
};
void build; // engine and libloupe built before setup.py runs

async function python(args: string[], extraEnv: Record<string, string> = {}) {
  const out = await new Deno.Command(await jupyterPython(), {
    args,
    env: { ...env, ...extraEnv },
    cwd: work,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    ok: out.success,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

const CLIENT = `
import json, os, sys, time
from jupyter_client.manager import KernelManager

km = KernelManager(kernel_name=sys.argv[1], transport="ipc")
km.start_kernel(cwd=os.getcwd())
info = km.get_connection_info()
kc = km.client()
kc.start_channels()
kc.wait_for_ready(timeout=120)
report = {"transport": info["transport"],
          "ipc_files": all(os.path.exists("%s-%s" % (info["ip"], info[k])) for k in
                           ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"))}

def run(code, stdin=None):
    msg_id = kc.execute(code, allow_stdin=stdin is not None)
    if stdin is not None:
        req = kc.get_stdin_msg(timeout=60)
        report.setdefault("input_requests", []).append(req["content"]["prompt"])
        kc.input(stdin)
    reply = None
    while reply is None:
        m = kc.get_shell_msg(timeout=120)
        if m["parent_header"].get("msg_id") == msg_id:
            reply = m
    out, idle = [], False
    while not idle:
        m = kc.get_iopub_msg(timeout=120)
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        t, c = m["msg_type"], m["content"]
        if t == "status":
            idle = c["execution_state"] == "idle"
        elif t in ("display_data", "update_display_data", "execute_result"):
            out.append({"type": t, "mimes": sorted(c["data"]), "id": c.get("transient", {}).get("display_id"),
                        "html": c["data"].get("text/html", "")[:200000].count("data-state=\\"done\\"")})
        elif t == "error":
            out.append({"type": t, "ename": c["ename"], "evalue": c["evalue"]})
        elif t == "stream":
            out.append({"type": t, "text": c["text"]})
    return {"status": reply["content"]["status"], "outputs": out}

# Deno's iopub drops what is published before a subscriber is connected: wait until it delivers.
deadline = time.time() + 60
ready = False
while not ready and time.time() < deadline:
    probe = kc.kernel_info()
    end = time.time() + 0.5
    while time.time() < end and not ready:
        try:
            ready = kc.get_iopub_msg(timeout=0.1)["parent_header"].get("msg_id") == probe
        except Exception:
            pass

report["timeline"] = run('''
import { display, Progress, Timeline } from "./loupe/mod.ts";
const t = new Timeline("bridge");
t.add({ name: "prompt", wallMs: 5, tokens: 3, graphs: 1,
        devices: { CPU: { nodes: 4, heavy: 2, ops: { MUL_MAT: 2 }, firstHeavy: "MUL_MAT x" } } });
await display(t);
''')
report["progress"] = run('''
const bar = new Progress("through the bridge", { minIntervalMs: 0 });
bar.update(0.5);
await bar.done();
''')
report["error"] = run('throw new Error("boom from the bridge")')
report["stdin"] = run('const answer = prompt("name?"); await display(answer + "!")', stdin="loupe")
report["alive_before_shutdown"] = km.is_alive()
kc.stop_channels()
km.shutdown_kernel(now=False)
report["alive_after_shutdown"] = km.is_alive()
print(json.dumps(report))
`;

Deno.test("the notebook's Python setup cell runs setup.py and installs the bridge kernel spec", async () => {
  const nb = await readNotebook(join(ROOT, "notebooks", "colab.ipynb"));
  const cells = nb.cells.filter((c) => (c.metadata.tags ?? []).includes("colab-setup"));
  assertEquals(cells.length, 1, "one setup cell");
  const cell = join(tmp, "setup_cell.py");
  await Deno.writeTextFile(cell, joined(cells[0].source));
  // As in Colab, except: the repository is here, and the Deno on PATH is kept (no npm install).
  const r = await python([cell], { LOUPE_DIR: join(work, "loupe"), LOUPE_DENO_VERSION: "any" });
  assert(r.ok, `the setup cell failed: ${r.stderr.slice(-3000)}${r.stdout.slice(-2000)}`);
  const spec = JSON.parse(await Deno.readTextFile(join(data, "kernels", NAME, "kernel.json")));
  assertEquals(spec.argv.slice(-4), ["run", "--deno", Deno.execPath(), "{connection_file}"]);
  assert(spec.argv[1].endsWith("deno_kernel_bridge.py"));
  assertEquals(spec.language, "typescript");
  assert(r.stdout.includes("Reload the page"), "setup.py ends with the next step");
});

Deno.test("jupyter_client with transport=ipc: cells run through the bridge, display data arrives", async () => {
  const script = join(tmp, "client.py");
  await Deno.writeTextFile(script, CLIENT);
  const r = await python([script, NAME]);
  assert(r.ok, `the client failed: ${r.stderr.slice(-3000)}`);
  const report = JSON.parse(r.stdout.trim().split("\n").pop()!);
  assertEquals(report.transport, "ipc");
  assertEquals(report.ipc_files, true, "the front end talks to IPC sockets");

  assertEquals(report.timeline.status, "ok", JSON.stringify(report.timeline.outputs));
  const shown = report.timeline.outputs.find((o: { type: string }) => o.type === "display_data");
  assertEquals(shown?.mimes, ["application/vnd.plotly.v1+json", "text/html", "text/plain"]);

  assertEquals(report.progress.status, "ok");
  const bars = report.progress.outputs.filter((o: { id?: string }) => o.id?.startsWith("loupe-progress"));
  assertEquals(bars.map((o: { type: string }) => o.type), [
    "display_data",
    "update_display_data",
  ]);
  assertEquals(new Set(bars.map((o: { id: string }) => o.id)).size, 1, "one display_id, updated in place");
  assertEquals(bars.at(-1).html, 1, "the last update is the finished bar");

  assertEquals(report.error.status, "error");
  assert(
    report.error.outputs.some((o: { type: string; evalue?: string }) =>
      o.type === "error" && o.evalue === "boom from the bridge"
    ),
    "errors come back",
  );

  assertEquals(report.input_requests, ["name?"], "input requests reach the front end");
  assertEquals(report.stdin.status, "ok");
  assert(report.stdin.outputs.some((o: { mimes?: string[] }) => o.mimes?.includes("text/plain")));

  assertEquals([report.alive_before_shutdown, report.alive_after_shutdown], [true, false], "shutdown ends it");
});

Deno.test("colab.ipynb's TypeScript cells run through the bridge with nbclient over IPC", async () => {
  const out = join(tmp, "colab.ipynb");
  const summary = await runNotebook(join(ROOT, "notebooks", "colab.ipynb"), {
    out,
    kernel: NAME,
    transport: "ipc",
    skipTag: "colab-setup",
    cwd: work,
    env,
  });
  assertEquals(summary.failure, null);
  assertEquals(summary.errors.map((e) => `${e.ename}: ${e.evalue}`), []);
  const nb = await readNotebook(out);
  const plots = nb.cells.flatMap(plotOutputs);
  assert(plots.length >= 3, `plots arrive through the bridge (${plots.length})`);
  assert(nb.cells.every((c) => !(c.metadata.tags ?? []).includes("colab-setup")), "the Python cell was left out");
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(tmp, { recursive: true });
  } catch { /* already gone */ }
});
