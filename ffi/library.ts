/**
 * Opens libloupe and initialises the engine's backends. It takes the library's path and the
 * engine's directory and knows nothing of where they came from (src/engine/library.ts decides).
 *
 * @module
 */
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
export interface OpenedLibrary {
  /** The raw functions; only ffi/ uses them directly. */
  api: NativeApi;
  /** What loupe_init reported. */
  backends: BackendReport[];
}

/** The ABI version of native/loupe.h these bindings are written for. */
export const LOUPE_ABI_VERSION = 6;

/**
 * Opens libloupe at `library` and initialises the engine whose shared libraries are in
 * `engineDir`. Throws an Error naming the file when it cannot be opened or has another ABI.
 */
export function openLibrary(library: string, engineDir: string): OpenedLibrary {
  let lib: Deno.DynamicLibrary<typeof symbols>;
  try {
    lib = Deno.dlopen(library, symbols);
  } catch (e) {
    throw new Error(`Cannot open libloupe at ${library}: ${(e as Error).message}`);
  }
  const api = lib.symbols;
  const abi = api.loupe_abi_version();
  if (abi !== LOUPE_ABI_VERSION) {
    lib.close();
    throw new Error(`libloupe at ${library} has ABI ${abi}, expected ${LOUPE_ABI_VERSION}: rebuild it`);
  }
  const backends = takeJson<BackendReport[]>(api, api.loupe_init(cstr(engineDir)));
  return { api, backends };
}

/** Every device of every loaded backend, as `loupe_devices` reports it (JSON objects). */
export function listDevices<T>(api: NativeApi): T[] {
  return takeJson<T[]>(api, api.loupe_devices());
}

/**
 * Adds the devices of ggml's RPC server at `endpoint` (loupe_rpc_add_server), loading the RPC
 * backend module at `rpcLibrary` first; returns their names. Only on an isolated engine: the
 * engine's RPC client aborts its process when the server is unreachable.
 */
export async function addRpcServer(api: NativeApi, rpcLibrary: string, endpoint: string): Promise<string[]> {
  return takeJson<string[]>(api, await api.loupe_rpc_add_server(cstr(rpcLibrary), cstr(endpoint)));
}
