// Shared set-up for the tests that run notebooks as users do: a Python with Jupyter's client
// libraries (Debian's jupyter-nbconvert, python3-nbclient, python3-zmq), the `deno jupyter`
// kernel spec installed into a private Jupyter data directory, and tests/notebook_runner.py.
import { join } from "node:path";

/** The repository root. */
export const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/** The notebooks directory. */
export const NOTEBOOKS = join(ROOT, "notebooks");

const RUNNER = join(ROOT, "tests", "support", "notebook_runner.py");

async function run(cmd: string, args: string[], env: Record<string, string> = {}, cwd?: string) {
  const out = await new Deno.Command(cmd, { args, env, cwd, stdout: "piped", stderr: "piped" }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

let python: Promise<string> | null = null;

/**
 * A Python 3 that has nbclient, nbformat, nbconvert, jupyter_client and pyzmq. Fails with the
 * Debian packages to install when there is none: these tests never skip silently.
 */
export function jupyterPython(): Promise<string> {
  python ??= (async () => {
    const candidates = [Deno.env.get("LOUPE_JUPYTER_PYTHON"), "/usr/bin/python3", "python3"].filter(Boolean);
    const tried: string[] = [];
    for (const p of candidates as string[]) {
      try {
        const r = await run(p, ["-c", "import nbclient, nbformat, nbconvert, jupyter_client, zmq"]);
        if (r.code === 0) return p;
        tried.push(`${p}: ${r.stderr.trim().split("\n").pop()}`);
      } catch (e) {
        tried.push(`${p}: ${(e as Error).message}`);
      }
    }
    throw new Error(
      `Cannot run notebooks: no Python with nbclient, nbformat, nbconvert, jupyter_client and pyzmq ` +
        `(Debian packages jupyter-nbconvert python3-nbclient python3-zmq: \`deno run -A tests/setup.ts\` ` +
        `installs them, or says the command; or set LOUPE_JUPYTER_PYTHON). ` +
        `Tried: ${tried.join("; ")}`,
    );
  })();
  python.catch(() => (python = null));
  return python;
}

/** Headless Chromium, or a clear failure naming the Debian package. */
export async function chromium(): Promise<string> {
  for (const c of [Deno.env.get("LOUPE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]) {
    if (!c) continue;
    try {
      const r = await run(c, ["--version"]);
      if (r.code === 0) return c;
    } catch { /* next */ }
  }
  throw new Error(
    "Cannot take screenshots: no chromium (Debian package chromium: `deno run -A tests/setup.ts` installs it, " +
      "or says the command; or set LOUPE_CHROMIUM)",
  );
}

/**
 * Installs the `deno jupyter` kernel spec with Deno's own installer into a private Jupyter data
 * directory (HOME pointed at a temporary directory while it runs) and returns the environment
 * that makes Jupyter find it there.
 */
export async function installDenoKernel(tmp: string): Promise<Record<string, string>> {
  const home = join(tmp, "home");
  await Deno.mkdir(home, { recursive: true });
  const r = await run(Deno.execPath(), ["jupyter", "--install", "--force"], { HOME: home });
  const data = join(home, ".local", "share", "jupyter");
  const spec = join(data, "kernels", "deno", "kernel.json");
  try {
    await Deno.stat(spec);
  } catch {
    throw new Error(`deno jupyter --install wrote no ${spec}: ${r.stderr}${r.stdout}`);
  }
  return { JUPYTER_DATA_DIR: data };
}

/** What tests/notebook_runner.py reports. */
export interface RunSummary {
  notebook: string;
  kernel: string;
  transport: string;
  cells: number;
  seconds: number;
  errors: Array<{ cell: number; ename: string; evalue: string; source: string }>;
  failure: string | null;
}

/** Executes a notebook headless with nbclient; writes the executed notebook (and HTML) and returns the summary. */
export async function runNotebook(
  notebook: string,
  opts: {
    out: string;
    html?: string;
    kernel?: string;
    transport?: "tcp" | "ipc";
    skipTag?: string;
    cwd?: string;
    env?: Record<string, string>;
    timeout?: number;
  },
): Promise<RunSummary> {
  const py = await jupyterPython();
  const args = [RUNNER, notebook, "--out", opts.out, "--timeout", String(opts.timeout ?? 600)];
  if (opts.html) args.push("--html", opts.html);
  if (opts.kernel) args.push("--kernel", opts.kernel);
  if (opts.transport) args.push("--transport", opts.transport);
  if (opts.skipTag) args.push("--skip-tag", opts.skipTag);
  if (opts.cwd) args.push("--cwd", opts.cwd);
  // With transport=ipc, jupyter_client names the sockets relative to the working directory
  // ("kernel-ipc-N"), so the client runs where the kernel does.
  const r = await run(py, args, opts.env ?? {}, opts.cwd);
  const line = r.stdout.trim().split("\n").pop() ?? "";
  if (r.code !== 0 || !line.startsWith("{")) {
    throw new Error(`notebook_runner failed on ${notebook} (${r.code}): ${r.stderr.slice(-3000)}${r.stdout}`);
  }
  return JSON.parse(line);
}

/** One output of a notebook cell, as nbformat stores it. */
export interface Output {
  output_type: string;
  data?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
  text?: string | string[];
  ename?: string;
  evalue?: string;
}

/** A notebook cell. */
export interface Cell {
  cell_type: string;
  source: string | string[];
  metadata: { tags?: string[] };
  outputs?: Output[];
}

/** Reads a notebook file. */
export async function readNotebook(path: string): Promise<{ cells: Cell[]; metadata: Record<string, any> }> {
  return JSON.parse(await Deno.readTextFile(path));
}

/** nbformat stores multi-line strings as arrays of lines. */
export function joined(v: unknown): string {
  return Array.isArray(v) ? v.join("") : typeof v === "string" ? v : "";
}

/** The first line of a cell's source (for messages). */
export function firstLine(cell: Cell): string {
  return joined(cell.source).split("\n").find((l) => l.trim() && !l.startsWith("//") && !l.startsWith("#")) ?? "";
}

/** Outputs that carry a plotly figure. */
export function plotOutputs(cell: Cell): Output[] {
  return (cell.outputs ?? []).filter((o) => o.data?.["application/vnd.plotly.v1+json"] !== undefined);
}
