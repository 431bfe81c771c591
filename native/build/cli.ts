/**
 * Command line of the engine build: fetches the pinned engine and builds libloupe and the
 * reference tools, then prints where they are. `--rpc` also builds ggml's RPC backend module
 * and `ggml-rpc-server` against the engine (`deno task rpc-server` starts one).
 *
 * `deno task build [--engine=cpu|vulkan|cuda|cuda12] [--from-source [--cuda] [--vulkan]] [--rpc]`
 *
 * @module
 */
import { ensureBuild } from "./engine.ts";
import type { EngineVariant } from "./pins.ts";

const args = Deno.args;
const fromSource = args.includes("--from-source");
const engineArg = args.find((a) => a.startsWith("--engine="))?.slice("--engine=".length);
const variant = fromSource ? "source" : engineArg as EngineVariant | undefined;
const backends = fromSource ? { cuda: args.includes("--cuda"), vulkan: args.includes("--vulkan") } : {};
const result = await ensureBuild({ variant, ...backends, rpc: args.includes("--rpc") });
console.log(JSON.stringify(result, null, 2));
