/**
 * Command line of the engine build: fetches the pinned engine and builds libloupe and the
 * reference tools, then prints where they are.
 *
 * `deno task build [--engine=cpu|vulkan|cuda|cuda12] [--from-source [--cuda] [--vulkan]]`
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
const result = await ensureBuild({ variant, ...backends });
console.log(JSON.stringify(result, null, 2));
