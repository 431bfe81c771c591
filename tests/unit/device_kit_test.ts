// The GPU kit's pack and unpack (issue #18), so that it cannot rot between GPU sessions: pack the
// archive (at xz's fastest level, into a temporary folder), then, in a network namespace with no
// network (`unshare -n`), take Deno out of it, check every part against the manifest and unpack
// the rest into an empty cache, and check that loupe's own `ensureSource` and `fetchPackage`
// find everything there. Two controls keep it from passing vacuously: the same `ensureSource`
// with an empty cache fails in that namespace (so the network is really off), and an archive with
// one byte changed is refused. The long parts (the CUDA build, the tests, the benchmarks) are
// rehearsed by hand: `deno task device-check --cpu-only --out DIR`.
import { join } from "node:path";
import { assert, assertEquals } from "../support/assert.ts";
import { hashFile, type KitManifest, MAX_ARCHIVE_BYTES, readManifest } from "../device/kit.ts";
import { LLAMA_CPP_COMMIT } from "../../native/build/pins.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

async function sh(
  cmd: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd: ROOT,
    env: { ...env, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

/** `unshare -n` works here (root, or user namespaces allowed), or the reason it does not. */
async function noNetworkNamespace(): Promise<string | null> {
  try {
    const r = await sh(["unshare", "-n", "true"]);
    return r.code === 0 ? null : r.out.trim();
  } catch (e) {
    return (e as Error).message;
  }
}

Deno.test("device kit: pack, then unpack offline (unshare -n): hashes checked, ensureSource satisfied", async () => {
  const netns = await noNetworkNamespace();
  assert(
    netns === null,
    `this test needs a network namespace without network (unshare -n, as root): ${netns}`,
  );
  const dir = await Deno.makeTempDir({ prefix: "loupe-device-kit-" });
  try {
    const archive = join(dir, "kit.tar");
    const t0 = performance.now();
    const packed = await sh([
      Deno.execPath(),
      "run",
      "-A",
      "tests/device/pack.ts",
      "--out",
      archive,
      "--level=0",
    ]);
    assertEquals(packed.code, 0, `device-pack failed:\n${packed.out}`);
    const packS = (performance.now() - t0) / 1000;
    const size = (await Deno.stat(archive)).size;
    assert(packed.out.includes(`(${size} bytes`), `device-pack states the archive's size: ${packed.out}`);
    assert(size <= MAX_ARCHIVE_BYTES, `the archive is ${size} bytes`);
    const manifest: KitManifest = await readManifest(archive);
    assertEquals(manifest.parts.map((p) => p.file), ["deno.xz", "source.tar.xz", "packages.tar.xz"]);
    assertEquals(manifest.llamaCommit, LLAMA_CPP_COMMIT);
    assert(manifest.vocab.includes("ggml-vocab-llama-spm.gguf") && manifest.vocab.includes("ggml-vocab-bert-bge.gguf"));
    assertEquals(manifest.parts[0].rawSha256, (await hashFile(Deno.execPath())).sha256, "deno.xz holds this Deno");

    // Unpack and check, as the GPU machine does, with no network.
    const work = join(dir, "work");
    const out = join(dir, "out");
    const t1 = performance.now();
    const env = { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: Deno.env.get("HOME") ?? "/root" };
    const check = await sh(
      [
        "unshare",
        "-n",
        "sh",
        "tests/device/check.sh",
        "--archive",
        archive,
        "--work",
        work,
        "--out",
        out,
        "--cpu-only",
        "--only=unpack",
      ],
      env,
    );
    const unpackS = (performance.now() - t1) / 1000;
    assertEquals(check.code, 0, `device-check --only=unpack failed offline:\n${check.out}`);
    const state = JSON.parse(await Deno.readTextFile(join(out, "state.json")));
    assertEquals(state.steps.unpack.status, "done", JSON.stringify(state.steps.unpack));
    const src = join(work, "cache", manifest.sourceDir);
    assertEquals(state.steps.unpack.result.source, src);
    assert(state.steps.unpack.result.sourceFiles > 500, `${state.steps.unpack.result.sourceFiles} source files`);
    for (const f of ["CMakeLists.txt", "ggml/src/ggml-cuda/CMakeLists.txt", "tools/mtmd/mtmd-cli.cpp"]) {
      await Deno.stat(join(src, f));
    }
    for (const v of manifest.vocab) await Deno.stat(join(src, "models", v));
    await Deno.stat(join(work, "cache", manifest.packages[0].dir, "package", "plotly.min.js"));
    assertEquals((await hashFile(join(work, "bin", "deno"))).sha256, manifest.parts[0].rawSha256);
    console.log(
      `  pack ${packS.toFixed(1)} s (${(size / 2 ** 20).toFixed(1)} MiB at xz -0), offline unpack and check ${
        unpackS.toFixed(1)
      } s`,
    );

    // Control: in that namespace, ensureSource with an empty cache (and an empty npm cache) cannot fetch.
    const empty = join(dir, "empty-cache");
    const probe = `import { ensureSource } from ${JSON.stringify(join(ROOT, "native/build/engine.ts"))};
      await ensureSource(false);`;
    const control = await sh(["unshare", "-n", Deno.execPath(), "eval", probe], {
      ...env,
      LOUPE_CACHE_DIR: empty,
      // npm's own cache would answer from disk when the network fails: an empty one
      npm_config_cache: join(dir, "empty-npm-cache"),
      npm_config_fetch_retries: "0",
      npm_config_fetch_timeout: "5000",
    });
    assert(
      control.code !== 0,
      `ensureSource fetched the source in the namespace: the network is not off\n${control.out}`,
    );

    // Control: an archive with one byte changed in a part is refused.
    const parts = join(dir, "parts");
    await Deno.mkdir(parts);
    assertEquals((await sh(["tar", "xf", archive, "-C", parts])).code, 0);
    const victim = join(parts, "source.tar.xz");
    const bytes = await Deno.readFile(victim);
    bytes[bytes.length >> 1] ^= 0xff;
    await Deno.writeFile(victim, bytes);
    const bad = join(dir, "bad.tar");
    assertEquals(
      (await sh(["tar", "-C", parts, "-cf", bad, "manifest.json", "deno.xz", "source.tar.xz", "packages.tar.xz"])).code,
      0,
    );
    const refused = await sh(
      [
        "unshare",
        "-n",
        "sh",
        "tests/device/check.sh",
        "--archive",
        bad,
        "--work",
        join(dir, "work2"),
        "--out",
        join(dir, "out2"),
        "--cpu-only",
        "--only=unpack",
      ],
      env,
    );
    const badState = JSON.parse(await Deno.readTextFile(join(dir, "out2", "state.json")));
    assertEquals(badState.steps.unpack.status, "failed", refused.out);
    assert(badState.steps.unpack.note.includes("source.tar.xz: sha256"), badState.steps.unpack.note);
    assert(refused.code !== 0, "device-check exits non-zero when the archive is damaged");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
