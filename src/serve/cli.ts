/**
 * `deno task serve`: the OpenAI-compatible server from the shell.
 *
 * ```sh
 * deno task serve --model <path or hf: name> [--mmproj …] [--embedding-model …] [--port 8080]
 *   [--host 127.0.0.1] [--parallel 4] [--api-key …] [--ctx-size N] [--threads N]
 * ```
 *
 * It prints where it listens and serves until SIGINT or SIGTERM, then closes the server (running
 * requests are aborted) and exits. A bad argument or a model that does not load prints its
 * message and exits with status 2 or 1.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { LoupeError } from "../util/errors.ts";
import { serve, type ServeOptions } from "./server.ts";

/** The usage text. */
export const USAGE = `Usage: deno task serve --model <path or hf: name> [options]

  --model, -m <path|name>     the language model (a GGUF path, hf:owner/repo[:quant] or an https URL)
  --mmproj <path|name>        a multimodal projector, for image requests
  --embedding-model <p|name>  an embedding or reranking model, for /v1/embeddings and /v1/rerank
  --port <n>                  the port (default 8080; 0 = any free port)
  --host <address>            the address to bind (default 127.0.0.1)
  --parallel, -np <n>         requests generated together (default 4)
  --api-key <key>             require Authorization: Bearer <key> (every endpoint but /health);
                              also read from LOUPE_API_KEY
  --ctx-size, -c <n>          tokens one request may hold, prompt and reply together
  --threads, -t <n>           CPU threads (default: every CPU the process may use)
  --help, -h                  this text`;

/** What the command line asks for, as serve() options; throws INVALID_ARGUMENT with the problem. */
export function parseServeArgs(args: string[], env: { apiKey?: string } = {}): ServeOptions | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: args.map((a) => a === "-np" ? "--parallel" : a === "-c" ? "--ctx-size" : a),
      options: {
        model: { type: "string", short: "m" },
        mmproj: { type: "string" },
        "embedding-model": { type: "string" },
        port: { type: "string" },
        host: { type: "string" },
        parallel: { type: "string" },
        "api-key": { type: "string" },
        "ctx-size": { type: "string" },
        threads: { type: "string", short: "t" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new LoupeError("INVALID_ARGUMENT", `Cannot serve: ${(e as Error).message}`, { cause: e });
  }
  const v = parsed.values;
  if (v.help) return "help";
  if (!v.model) throw new LoupeError("INVALID_ARGUMENT", "Cannot serve: --model is required");
  const int = (name: string, value: string | undefined): number | undefined => {
    if (value === undefined) return undefined;
    if (!/^\d+$/.test(value)) {
      throw new LoupeError("INVALID_ARGUMENT", `Cannot serve: --${name} must be a whole number, not "${value}"`);
    }
    return Number(value);
  };
  const options: ServeOptions = { model: v.model };
  if (v.mmproj) options.projector = v.mmproj;
  if (v["embedding-model"]) options.embedder = v["embedding-model"];
  const port = int("port", v.port);
  if (port !== undefined) options.port = port;
  if (v.host) options.host = v.host;
  const parallel = int("parallel", v.parallel);
  if (parallel !== undefined) options.parallel = parallel;
  const contextSize = int("ctx-size", v["ctx-size"]);
  if (contextSize !== undefined) options.contextSize = contextSize;
  const threads = int("threads", v.threads);
  if (threads !== undefined) options.threads = threads;
  const apiKey = v["api-key"] ?? env.apiKey;
  if (apiKey) options.apiKey = apiKey;
  return options;
}

/** Runs the command line: serves until SIGINT/SIGTERM; returns the exit status. */
export async function main(args: string[]): Promise<number> {
  let options: ServeOptions | "help";
  try {
    options = parseServeArgs(args, { apiKey: Deno.env.get("LOUPE_API_KEY") });
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (options === "help") {
    console.log(USAGE);
    return 0;
  }
  let server;
  try {
    server = await serve(options);
  } catch (e) {
    console.error((e as Error).message);
    return e instanceof LoupeError && e.code === "INVALID_ARGUMENT" ? 2 : 1;
  }
  const embedder = server.embedder ? `, embeddings with ${server.embedder.path}` : "";
  const projector = server.projector ? `, images with ${server.projector.path}` : "";
  console.log(
    `loupe: serving ${server.model.path} on ${server.url} (parallel ${server.parallel}, ` +
      `${server.slotContext} tokens per request${projector}${embedder}${options.apiKey ? ", API key required" : ""})`,
  );
  console.log(`loupe: OpenAI base URL ${server.url}/v1; Ctrl-C stops`);
  const stopped = new Promise<void>((resolve) => {
    const stop = () => {
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
      resolve();
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
  });
  await stopped;
  console.log("loupe: closing");
  await server.close();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
