/**
 * What the test suite needs from the machine, set up before `deno task test` runs the tests.
 *
 * `deno run -A tests/setup.ts` checks the Debian packages the tests (and the engine build) use,
 * in one `dpkg-query` call. Nothing missing: it prints nothing and exits 0. Something missing:
 * as root with apt-get it installs all of it in one `apt-get install` (one progress line);
 * otherwise it stops with one message naming the packages and the command that installs them,
 * and exits 1. It never lets a test skip: a test that runs without its program fails, naming it.
 *
 * Importable: {@linkcode missingPackages} returns what is missing, {@linkcode setup} does the
 * whole thing on an injectable {@linkcode System}.
 *
 * @module
 */

/** One Debian package the tests need. */
export interface Requirement {
  /** The Debian package. */
  pkg: string;
  /** What needs it (for the message). */
  why: string;
  /**
   * Programs that stand for the package where dpkg does not know it (npm from NodeSource's
   * nodejs, Chrome for chromium, a machine without dpkg): any of them on PATH satisfies it.
   */
  commands?: string[];
  /** Python modules that stand for the package where there is no dpkg: all import in python3. */
  modules?: string[];
}

/**
 * Everything `deno task test` runs besides Deno: the engine build (native/build), the C drivers,
 * the notebook runner (tests/support/notebook_runner.py), the Colab bridge, headless Chromium,
 * valgrind and lavapipe. `tar` and a C library are part of every Debian system.
 */
export const REQUIREMENTS: readonly Requirement[] = [
  { pkg: "git", why: "unpacks the pinned llama.cpp source (native/build)", commands: ["git"] },
  { pkg: "g++", why: "compiles libloupe and llama.cpp's reference tools", commands: ["g++"] },
  { pkg: "gcc", why: "compiles the C test drivers (native/tests)", commands: ["gcc"] },
  { pkg: "npm", why: "fetches the pinned engine packages (npm pack)", commands: ["npm"] },
  { pkg: "cmake", why: "builds llama.cpp from source (deno task build --from-source)", commands: ["cmake"] },
  { pkg: "xz-utils", why: "packs and unpacks the GPU kit (tests/unit/device_kit_test.ts)", commands: ["xz"] },
  { pkg: "valgrind", why: "the C ABI leak check (tests/engine/lifetime_test.ts)", commands: ["valgrind"] },
  { pkg: "libvulkan1", why: "the Vulkan loader the Vulkan engine links" },
  { pkg: "mesa-vulkan-drivers", why: "lavapipe, the Vulkan device of the Vulkan tests" },
  { pkg: "python3", why: "runs the notebooks and the Colab bridge", commands: ["python3"] },
  { pkg: "python3-nbclient", why: "executes notebooks headless", modules: ["nbclient"] },
  { pkg: "python3-nbformat", why: "reads and writes notebooks", modules: ["nbformat"] },
  { pkg: "python3-jupyter-client", why: "starts and talks to the deno kernel", modules: ["jupyter_client"] },
  { pkg: "python3-nbconvert", why: "exports executed notebooks to HTML", modules: ["nbconvert"] },
  { pkg: "jupyter-nbconvert", why: "Jupyter's nbconvert front end and its templates", commands: ["jupyter-nbconvert"] },
  {
    pkg: "python3-jinja2",
    why: "the reference chat-template renderer (tests/support/render_jinja.py), as transformers renders",
    modules: ["jinja2"],
  },
  { pkg: "python3-zmq", why: "the Colab kernel bridge (notebooks/colab)", modules: ["zmq"] },
  {
    pkg: "chromium",
    why: "screenshots of the exported notebook (tests/notebook/screenshot_test.ts)",
    commands: ["chromium", "chromium-browser", "google-chrome"],
  },
];

/** What setup asks of the machine; the real one is {@linkcode realSystem}, tests pass their own. */
export interface System {
  /** `dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' NAMES…`'s stdout, or null where there is no dpkg-query. */
  dpkgQuery(names: string[]): Promise<string | null>;
  /** Whether a program is on PATH. */
  hasCommand(name: string): Promise<boolean>;
  /** Whether python3 imports all of these modules. */
  importable(modules: string[]): Promise<boolean>;
  /** The effective user id (null where the platform has none). */
  uid(): number | null;
  /** Whether apt's package lists are there (a fresh image has none: `apt-get update` first). */
  aptListsPresent(): Promise<boolean>;
  /** Runs a command with output captured. */
  run(cmd: string, args: string[], env?: Record<string, string>): Promise<{ code: number; output: string }>;
  /** Writes text to the terminal, as is (no newline added). */
  write(text: string): void;
}

/** The packages dpkg reports installed in a `dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n'` answer. */
export function parseDpkgQuery(stdout: string): Set<string> {
  const installed = new Set<string>();
  for (const line of stdout.split("\n")) {
    const [name, status] = line.trim().split(/\s+/);
    // "ii": wanted and installed; "hi": held, installed. "rc", "un", "iU", "iF"…: not usable.
    if (name && status && status.length >= 2 && status[1] === "i") installed.add(name.replace(/:.*$/, ""));
  }
  return installed;
}

/** Whether dpkg could be asked at all, and which requirements are missing. */
export interface Missing {
  dpkg: boolean;
  missing: Requirement[];
}

/**
 * The requirements that are not installed: not installed per dpkg and none of their stand-in
 * programs (or Python modules) present. Without dpkg only the stand-ins count.
 */
export async function missingPackages(
  sys: System = realSystem,
  requirements: readonly Requirement[] = REQUIREMENTS,
): Promise<Missing> {
  const answer = await sys.dpkgQuery(requirements.map((r) => r.pkg));
  const installed = answer === null ? new Set<string>() : parseDpkgQuery(answer);
  const missing: Requirement[] = [];
  for (const r of requirements) {
    if (installed.has(r.pkg)) continue;
    let found = false;
    for (const c of r.commands ?? []) {
      if (await sys.hasCommand(c)) {
        found = true;
        break;
      }
    }
    if (!found && r.modules?.length) found = await sys.importable(r.modules);
    if (!found) missing.push(r);
  }
  return { dpkg: answer !== null, missing };
}

/** The message when the packages cannot be installed here: what is missing, why, and the command. */
export function missingMessage(
  missing: readonly Requirement[],
  how: { root: boolean; apt: boolean; aptLists: boolean },
): string {
  const names = missing.map((r) => r.pkg);
  const width = Math.max(...names.map((n) => n.length));
  const lines = [`loupe: the tests need packages that are not installed: ${names.join(", ")}`];
  for (const r of missing) lines.push(`  ${r.pkg.padEnd(width)}  ${r.why}`);
  if (how.apt) {
    const sudo = how.root ? "" : "sudo ";
    const update = how.aptLists ? "" : `${sudo}apt-get update && `;
    lines.push(
      `Install them${how.root ? "" : " (as root)"}, then run \`deno task test\` again:`,
      `  ${update}${sudo}apt-get install -y ${names.join(" ")}`,
      "(`deno task test` installs them itself when run as root: `deno run -A tests/setup.ts`.)",
    );
  } else {
    lines.push(
      `No apt-get here: install them (these are Debian's names) with this system's package manager, ` +
        "then run `deno task test` again.",
    );
  }
  return lines.join("\n") + "\n";
}

function tail(text: string, lines = 15): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/**
 * Checks the requirements and installs what is missing where it can (root with apt-get), else
 * says what to run. Returns the exit code: 0 when everything is there afterwards.
 */
export async function setup(
  sys: System = realSystem,
  requirements: readonly Requirement[] = REQUIREMENTS,
): Promise<number> {
  const { dpkg, missing } = await missingPackages(sys, requirements);
  if (missing.length === 0) return 0;
  const root = sys.uid() === 0;
  const apt = dpkg && await sys.hasCommand("apt-get");
  const aptLists = apt && await sys.aptListsPresent();
  if (!root || !apt) {
    sys.write(missingMessage(missing, { root, apt, aptLists }));
    return 1;
  }

  const names = missing.map((r) => r.pkg);
  sys.write(`loupe: installing test packages: ${names.join(", ")} (apt-get, about a minute)… `);
  const t0 = performance.now();
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  const update = () => sys.run("apt-get", ["update", "-qq"], env);
  const install = () => sys.run("apt-get", ["install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300", ...names], env);
  let updated = false;
  if (!aptLists) {
    const u = await update();
    updated = true;
    if (u.code !== 0) {
      sys.write(`failed\nloupe: apt-get update failed (${u.code}):\n${tail(u.output)}\n`);
      return 1;
    }
  }
  let r = await install();
  if (r.code !== 0 && !updated) {
    // Stale package lists (a package not found, a 404 on download): once more after an update.
    const u = await update();
    if (u.code === 0) r = await install();
  }
  if (r.code !== 0) {
    sys.write(
      `failed\nloupe: apt-get install ${names.join(" ")} failed (${r.code}):\n${tail(r.output)}\n`,
    );
    return 1;
  }
  const after = await missingPackages(sys, missing);
  if (after.missing.length > 0) {
    sys.write(`failed\n${missingMessage(after.missing, { root, apt, aptLists: true })}`);
    return 1;
  }
  sys.write(`done (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
  return 0;
}

async function output(cmd: string, args: string[], env?: Record<string, string>) {
  const out = await new Deno.Command(cmd, { args, env, stdin: "null", stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    const st = await Deno.stat(path);
    return st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** This machine. */
export const realSystem: System = {
  async dpkgQuery(names) {
    try {
      // One call for all; a package dpkg has never heard of goes to stderr (and exit code 1).
      return (await output("dpkg-query", ["-W", "-f=${Package} ${db:Status-Abbrev}\n", ...names])).stdout;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  },
  async hasCommand(name) {
    if (name.includes("/")) return await isExecutable(name);
    for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
      if (dir && await isExecutable(`${dir}/${name}`)) return true;
    }
    return false;
  },
  async importable(modules) {
    try {
      return (await output("python3", ["-c", `import ${modules.join(", ")}`])).code === 0;
    } catch {
      return false;
    }
  },
  uid: () => Deno.uid(),
  async aptListsPresent() {
    try {
      for await (const e of Deno.readDir("/var/lib/apt/lists")) if (e.name.includes("_Packages")) return true;
    } catch { /* no lists directory */ }
    return false;
  },
  async run(cmd, args, env) {
    const r = await output(cmd, args, env);
    return { code: r.code, output: r.stdout + r.stderr };
  },
  write(text) {
    const bytes = new TextEncoder().encode(text);
    for (let n = 0; n < bytes.length;) n += Deno.stdout.writeSync(bytes.subarray(n));
  },
};

if (import.meta.main) Deno.exit(await setup());
