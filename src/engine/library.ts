/**
 * The engine as this process uses it: which libloupe and engine directory (`LOUPE_LIB` with
 * `LOUPE_ENGINE_DIR`, else the cached build for the engine variant, `LOUPE_ENGINE` or detected,
 * built on first use with a progress bar), opened once.
 *
 * @module
 */
import { type BuildProgress, type BuildResult, ensureBuild } from "../../native/build/engine.ts";
import { type BackendReport, openLibrary } from "../../ffi/library.ts";
import { type IsolatedEngine, openIsolated } from "../../ffi/isolated.ts";
import type { NativeApi } from "../../ffi/util.ts";
import { LoupeError } from "../util/errors.ts";
import { progressFor, type ProgressSink } from "../util/presenter.ts";

/** The opened engine. */
export interface Engine {
  /** The raw functions, handed to ffi/ wrappers. */
  api: NativeApi;
  /** Where the engine and library came from. */
  build: Pick<BuildResult, "variant" | "engineDir" | "library"> & Partial<BuildResult>;
  /** What the engine's backend loader reported. */
  backends: BackendReport[];
}

/** Feeds build steps to a progress indicator: the compile fraction, the step as the detail. */
export function buildStepReporter(progress: ProgressSink): (step: BuildProgress) => void {
  return (step) => progress.update(step.phase === "done" ? 1 : step.fraction, step.message);
}

/**
 * The build for this machine, with progress for the download and compile (`bar`, default: a bar
 * in a notebook, one line on a terminal; without one, the build's own log lines). Shows nothing
 * when all is built.
 */
export async function ensureBuildWithProgress(
  bar: ProgressSink | null = progressFor("loupe engine", true),
): Promise<BuildResult> {
  let updated = false; // a bar is drawn from its first update on
  const report = bar ? buildStepReporter(bar) : null;
  const onProgress = (step: BuildProgress) => {
    updated = true;
    report!(step);
  };
  try {
    const result = await ensureBuild(bar ? { onProgress } : {});
    if (updated) await bar!.done(`${result.variant} engine ready`);
    return result;
  } catch (e) {
    if (updated) await bar!.fail((e as Error).message.slice(0, 300));
    throw e;
  }
}

async function open(): Promise<Engine> {
  const explicit = Deno.env.get("LOUPE_LIB");
  let build: Engine["build"];
  if (explicit) {
    const engineDir = Deno.env.get("LOUPE_ENGINE_DIR");
    if (!engineDir) throw new Error("LOUPE_LIB is set but LOUPE_ENGINE_DIR is not: name the engine directory too");
    build = { variant: "cpu", engineDir, library: explicit };
  } else {
    build = await ensureBuildWithProgress();
  }
  return { ...openLibrary(build.library, build.engineDir), build };
}

let opened: Promise<Engine> | null = null;

/**
 * Opens the engine once per process (concurrent callers share one attempt; a failure is tried
 * again next time). A failure is a `LOAD_FAILED` LoupeError.
 */
export function loadEngine(): Promise<Engine> {
  if (!opened) {
    opened = open().catch((e) => {
      opened = null;
      throw e;
    });
  }
  return opened.catch((e) => {
    throw e instanceof LoupeError
      ? e
      : new LoupeError("LOAD_FAILED", `Cannot start the engine: ${(e as Error).message}`, { cause: e });
  });
}

/** The library a model is loaded into, and the isolated engine that owns it (null: this process's). */
export interface ModelEngine {
  api: NativeApi;
  isolated: IsolatedEngine | null;
}

/**
 * The library for a model: this process's, or with `isolate` a worker process of its own on the
 * same engine (started here, about 0.2 s). Without `isolate`, `LOUPE_ISOLATE=1` in the
 * environment isolates every model. A worker that cannot start is LOAD_FAILED.
 */
export async function engineFor(isolate: boolean | undefined, what: string): Promise<ModelEngine> {
  const lib = await loadEngine();
  if (!(isolate ?? Deno.env.get("LOUPE_ISOLATE") === "1")) return { api: lib.api, isolated: null };
  try {
    const isolated = await openIsolated(lib.build.library, lib.build.engineDir);
    return { api: isolated.api, isolated };
  } catch (e) {
    throw new LoupeError("LOAD_FAILED", `${what}: ${(e as Error).message}`, { cause: e });
  }
}
