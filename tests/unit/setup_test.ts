// tests/setup.ts on a made-up machine: which packages are missing from a dpkg answer, the
// message without root, and what it runs as root (nothing is installed, no root is needed).
import { assert, assertEquals } from "../support/assert.ts";
import {
  missingPackages,
  parseDpkgQuery,
  realSystem,
  type Requirement,
  REQUIREMENTS,
  setup,
  type System,
} from "../setup.ts";

interface Fake extends System {
  /** Packages dpkg reports installed; an install adds to it. */
  installed: Set<string>;
  calls: string[];
  out: string;
}

function fakeSystem(opts: {
  installed?: string[];
  dpkg?: boolean;
  commands?: string[];
  modules?: boolean;
  uid?: number;
  lists?: boolean;
  /** Exit codes of successive `apt-get install` runs (default 0); installs only on 0. */
  installCodes?: number[];
  /** Packages an install leaves missing anyway. */
  broken?: string[];
}): Fake {
  const installCodes = [...(opts.installCodes ?? [])];
  const sys: Fake = {
    installed: new Set(opts.installed ?? REQUIREMENTS.map((r) => r.pkg)),
    calls: [],
    out: "",
    dpkgQuery(names) {
      if (opts.dpkg === false) return Promise.resolve(null);
      // as dpkg-query answers: known packages with their status, unknown ones only on stderr
      const lines = names.map((n) => (sys.installed.has(n) ? `${n} ii ` : n === "valgrind" ? `${n} rc ` : null));
      return Promise.resolve(lines.filter((l) => l !== null).join("\n") + "\n");
    },
    hasCommand: (name) => Promise.resolve((opts.commands ?? []).includes(name)),
    importable: () => Promise.resolve(opts.modules ?? false),
    uid: () => opts.uid ?? 1000,
    aptListsPresent: () => Promise.resolve(opts.lists ?? true),
    run(cmd, args, env) {
      sys.calls.push(`${env?.DEBIAN_FRONTEND ?? ""} ${cmd} ${args.join(" ")}`.trim());
      if (args[0] === "install") {
        const code = installCodes.shift() ?? 0;
        if (code === 0) {
          for (const a of args.slice(1)) {
            if (!a.startsWith("-") && !(opts.broken ?? []).includes(a)) sys.installed.add(a);
          }
        }
        return Promise.resolve({ code, output: code === 0 ? "" : "E: Unable to locate package chromium" });
      }
      return Promise.resolve({ code: 0, output: "" });
    },
    write(text) {
      sys.out += text;
    },
  };
  return sys;
}

const all = REQUIREMENTS.map((r) => r.pkg);
const without = (...names: string[]) => all.filter((n) => !names.includes(n));
const APT = "noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300";

Deno.test("parseDpkgQuery: only installed packages count (ii, hi), not removed or half-installed ones", () => {
  const answer = "git ii \nchromium rc \nvalgrind un \nnpm hi \ncmake iU \nlibvulkan1:amd64 ii \n\n";
  assertEquals([...parseDpkgQuery(answer)].sort(), ["git", "libvulkan1", "npm"]);
  assertEquals(parseDpkgQuery(""), new Set());
});

Deno.test("the requirements name every package the tests and the build run", () => {
  const names = new Set(all);
  for (
    const pkg of [
      "git",
      "g++",
      "gcc",
      "npm",
      "cmake",
      "valgrind",
      "mesa-vulkan-drivers",
      "libvulkan1",
      "python3",
      "python3-nbclient",
      "python3-nbformat",
      "python3-jupyter-client",
      "python3-nbconvert",
      "jupyter-nbconvert",
      "python3-zmq",
      "chromium",
    ]
  ) assert(names.has(pkg), `${pkg} is checked`);
  assertEquals(names.size, all.length, "no package twice");
});

Deno.test("missingPackages: what dpkg lacks (a removed package too), unless a stand-in program is there", async () => {
  const sys = fakeSystem({ installed: without("chromium", "valgrind", "npm"), commands: ["npm"] });
  const r = await missingPackages(sys);
  assertEquals(r.dpkg, true);
  assertEquals(r.missing.map((m) => m.pkg), ["valgrind", "chromium"]);
  // Chrome stands in for chromium
  const chrome = fakeSystem({ installed: without("chromium"), commands: ["google-chrome"] });
  assertEquals((await missingPackages(chrome)).missing, []);
  // a custom list
  const one: Requirement[] = [{ pkg: "valgrind", why: "x" }];
  assertEquals((await missingPackages(fakeSystem({}), one)).missing, [], "installed");
  assertEquals((await missingPackages(fakeSystem({ installed: [] }), one)).missing.map((m) => m.pkg), ["valgrind"]);
});

Deno.test("missingPackages without dpkg: only programs and Python modules count", async () => {
  const r = await missingPackages(
    fakeSystem({
      dpkg: false,
      commands: ["git", "g++", "gcc", "npm", "cmake", "xz", "valgrind", "python3"],
      modules: true,
    }),
  );
  assertEquals(r.dpkg, false);
  assertEquals(r.missing.map((m) => m.pkg), ["libvulkan1", "mesa-vulkan-drivers", "jupyter-nbconvert", "chromium"]);
});

Deno.test("nothing missing: setup says nothing, runs nothing and succeeds", async () => {
  for (const uid of [0, 1000]) {
    const sys = fakeSystem({ uid });
    assertEquals(await setup(sys), 0);
    assertEquals(sys.out, "");
    assertEquals(sys.calls, []);
  }
});

Deno.test("without root: one message naming the packages and the command, exit 1, nothing run", async () => {
  const sys = fakeSystem({ installed: without("chromium", "valgrind"), uid: 1000, commands: ["apt-get"] });
  assertEquals(await setup(sys), 1);
  assertEquals(sys.calls, []);
  const lines = sys.out.trimEnd().split("\n");
  assertEquals(lines[0], "loupe: the tests need packages that are not installed: valgrind, chromium");
  assert(lines[1].startsWith("  valgrind  the C ABI leak check"), lines[1]);
  assert(lines[2].startsWith("  chromium  screenshots"), lines[2]);
  assertEquals(lines[3], "Install them (as root), then run `deno task test` again:");
  assertEquals(lines[4], "  sudo apt-get install -y valgrind chromium");
  assert(lines[5].includes("deno run -A tests/setup.ts"), lines[5]);
  assertEquals(lines.length, 6);
});

Deno.test("without root on a machine with no apt lists: the command updates them first", async () => {
  const sys = fakeSystem({ installed: without("python3-zmq"), uid: 1000, commands: ["apt-get"], lists: false });
  assertEquals(await setup(sys), 1);
  assert(sys.out.includes("\n  sudo apt-get update && sudo apt-get install -y python3-zmq\n"), sys.out);
});

Deno.test("without apt-get: the Debian names and no apt command", async () => {
  const sys = fakeSystem({ dpkg: false, uid: 0, commands: ["apt-get"] });
  assertEquals(await setup(sys, [{ pkg: "mesa-vulkan-drivers", why: "lavapipe" }]), 1);
  assertEquals(sys.calls, []);
  assert(sys.out.includes("No apt-get here"), sys.out);
  assert(!sys.out.includes("apt-get install"), sys.out);
});

Deno.test("as root: one apt-get install of everything missing, one progress line, then done", async () => {
  const sys = fakeSystem({ installed: without("chromium", "valgrind"), uid: 0, commands: ["apt-get"] });
  assertEquals(await setup(sys), 0);
  assertEquals(sys.calls, [`${APT} valgrind chromium`]);
  assert(
    /^loupe: installing test packages: valgrind, chromium \(apt-get, about a minute\)… done \(\d+ s\)\n$/.test(sys.out),
    JSON.stringify(sys.out),
  );
  // and the next run finds everything
  sys.out = "";
  assertEquals(await setup(sys), 0);
  assertEquals([sys.out, sys.calls.length], ["", 1]);
});

Deno.test("as root: apt-get update only when there are no lists, or when the install fails on stale ones", async () => {
  const fresh = fakeSystem({ installed: without("cmake"), uid: 0, commands: ["apt-get"], lists: false });
  assertEquals(await setup(fresh), 0);
  assertEquals(fresh.calls, ["noninteractive apt-get update -qq", `${APT} cmake`]);
  const stale = fakeSystem({ installed: without("cmake"), uid: 0, commands: ["apt-get"], installCodes: [100] });
  assertEquals(await setup(stale), 0);
  assertEquals(stale.calls, [`${APT} cmake`, "noninteractive apt-get update -qq", `${APT} cmake`]);
});

Deno.test("as root: a failed install or a package still missing afterwards fails with the reason", async () => {
  const failing = fakeSystem({ installed: without("cmake"), uid: 0, commands: ["apt-get"], installCodes: [100, 100] });
  assertEquals(await setup(failing), 1);
  assert(
    failing.out.includes("… failed\nloupe: apt-get install cmake failed (100):\nE: Unable to locate"),
    failing.out,
  );
  const broken = fakeSystem({ installed: without("cmake"), uid: 0, commands: ["apt-get"], broken: ["cmake"] });
  assertEquals(await setup(broken), 1);
  assert(broken.out.includes("… failed\nloupe: the tests need packages that are not installed: cmake"), broken.out);
});

const dpkgQuery = await realSystem.hasCommand("dpkg-query");

Deno.test({
  name: "on this machine's dpkg: dpkg itself is installed, an unknown package is not",
  ignore: !dpkgQuery, // not a Debian system: the other tests cover the logic
  async fn() {
    const answer = await realSystem.dpkgQuery(["dpkg", "loupe-no-such-package"]);
    assert(answer !== null);
    assertEquals([...parseDpkgQuery(answer)], ["dpkg"]);
  },
});

Deno.test("deno task test runs the setup before the tests, then the model tests once more isolated", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../../deno.json", import.meta.url)));
  assertEquals(
    config.tasks.test,
    "deno run -A tests/setup.ts && deno test -A --no-check=remote tests/ && deno task test:isolated",
  );
  const isolated = config.tasks["test:isolated"] as string;
  assert(isolated.startsWith("LOUPE_ISOLATE=1 deno test -A --no-check=remote "), isolated);
  for (const t of ["model", "session", "chat", "embed", "vision", "batch"]) {
    assert(isolated.includes(`tests/engine/${t}_test.ts`), `${t} tests run isolated too`);
  }
});
