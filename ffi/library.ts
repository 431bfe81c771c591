/**
 * Finds, builds if needed, and opens libloupe; initialises the engine's backends once.
 *
 * Lookup order: `LOUPE_LIB` (an explicit libloupe.so, with `LOUPE_ENGINE_DIR` naming the
 * engine directory), else the cached build for the engine variant (`LOUPE_ENGINE` or
 * detected), built on first use.
 *
 * @module
 */
import type { BuildResult } from "../native/build.ts";
import { ensureBuildWithProgress } from "../src/progress.ts";
import { symbols } from "./symbols.ts";
import { cstr, type NativeApi, takeJson } from "./util.ts";

/** Per backend: whether it loaded, from which file, and why not. */
export interface BackendReport {
  /** Backend name, e.g. "cpu", "vulkan", "cuda". */
  name: string;
  /** Whether the backend is registered with ggml. */
  loaded: boolean;
  /** The library file that was loaded (the best CPU variant for "cpu"). */
  file: string | null;
  /** Why it did not load: the dynamic loader's message, or the backend's own. */
  reason: string | null;
  /** Score of the chosen variant (higher is better). */
  score: number;
  /** Number of devices it registered. */
  devices?: number;
  /** Every library file tried for this backend. */
  variants: Array<{ file: string; score: number | null; error: string | null }>;
}

/** The opened library with the engine's backend report. */
export interface LoadedLibrary {
  /** The raw functions; only ffi/ uses them directly. */
  api: NativeApi;
  /** Where the engine and library came from. */
  build: Pick<BuildResult, "variant" | "engineDir" | "library"> & Partial<BuildResult>;
  /** What loupe_init reported. */
  backends: BackendReport[];
}

/** The ABI version of native/loupe.h these bindings are written for. */
export const LOUPE_ABI_VERSION = 2;

let opened: Promise<LoadedLibrary> | null = null;

async function open(): Promise<LoadedLibrary> {
  const explicit = Deno.env.get("LOUPE_LIB");
  let build: LoadedLibrary["build"];
  if (explicit) {
    const engineDir = Deno.env.get("LOUPE_ENGINE_DIR");
    if (!engineDir) throw new Error("LOUPE_LIB is set but LOUPE_ENGINE_DIR is not: name the engine directory too");
    build = { variant: "cpu", engineDir, library: explicit };
  } else {
    build = await ensureBuildWithProgress(); // a progress bar in a notebook, one line in a terminal
  }
  let lib: Deno.DynamicLibrary<typeof symbols>;
  try {
    lib = Deno.dlopen(build.library, symbols);
  } catch (e) {
    throw new Error(`Cannot open libloupe at ${build.library}: ${(e as Error).message}`);
  }
  const api = lib.symbols;
  const abi = api.loupe_abi_version();
  if (abi !== LOUPE_ABI_VERSION) {
    throw new Error(`libloupe at ${build.library} has ABI ${abi}, expected ${LOUPE_ABI_VERSION}: rebuild it`);
  }
  const backends = takeJson<BackendReport[]>(api, api.loupe_init(cstr(build.engineDir)));
  return { api, build, backends };
}

/** Opens the library once per process (concurrent callers share one attempt; a failure is retried next time). */
export function openLibrary(): Promise<LoadedLibrary> {
  if (!opened) {
    opened = open().catch((e) => {
      opened = null;
      throw e;
    });
  }
  return opened;
}
