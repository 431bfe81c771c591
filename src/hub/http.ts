/**
 * HTTP for the hub and plain URLs: redirects followed by hand (at most 10, only to `https:` or a
 * loopback host, the token sent only to the endpoint's own origin), retries with backoff on 429,
 * 5xx and broken connections honouring `Retry-After`, and a hub answer turned into a typed
 * {@linkcode LoupeError} (`GATED`, `UNAUTHORIZED`, `NOT_FOUND`, `NETWORK`, `BAD_RESPONSE`).
 * The token never appears in a message.
 *
 * @module
 */
import { LoupeError } from "../util/errors.ts";
import { isAllowedUrl } from "./names.ts";

/** How requests are made; one per resolution, shared by its requests. */
export interface HttpContext {
  /** The token, sent as `Authorization: Bearer` to `tokenOrigin` only. */
  token?: string;
  /** The hub's origin (where the token may go). */
  tokenOrigin: string;
  /** Cancels waiting and transfers. */
  signal?: AbortSignal;
  /** Attempts per request (default 5). */
  attempts: number;
  /** Base of the exponential backoff in milliseconds (default 500). */
  backoffMs: number;
  /** The longest wait a `Retry-After` may ask for before the request fails instead (default 60 s). */
  maxRetryAfterMs: number;
  /** Requests made (every hop of a redirect counts). */
  requests: number;
}

/** A failure worth another try: a broken connection, 429 or 5xx. */
export class RetryableError extends Error {
  /** How long the server asked to wait, in milliseconds, if it did. */
  readonly retryAfterMs?: number;
  /** The HTTP status, if there was an answer. */
  readonly status?: number;

  /** Creates it. */
  constructor(message: string, options: { retryAfterMs?: number; status?: number; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = "RetryableError";
    this.retryAfterMs = options.retryAfterMs;
    this.status = options.status;
  }
}

/** Retry-After in milliseconds: seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Waits `ms`, or rejects with ABORTED when the signal fires. */
export function sleep(ms: number, signal: AbortSignal | undefined, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(aborted(what));
    const onAbort = () => {
      clearTimeout(timer);
      reject(aborted(what));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The ABORTED error of a cancelled download. */
export function aborted(what: string): LoupeError {
  return new LoupeError("ABORTED", `${what}: cancelled (a partial download is kept and resumes next time)`);
}

/** Whether an error is the signal's abort. */
export function isAbort(e: unknown, signal?: AbortSignal): boolean {
  return !!signal?.aborted || (e instanceof DOMException && e.name === "AbortError") ||
    (e instanceof LoupeError && e.code === "ABORTED");
}

/** A URL as it may be printed: no query (signed CDN URLs carry credentials there). */
export function shown(url: URL | string): string {
  const u = new URL(String(url));
  return `${u.origin}${u.pathname}`;
}

/**
 * One request, redirects followed by hand: every hop must be `https:` (or a loopback host), at
 * most 10 hops, and the token goes only to the hub's origin. Resolves with the final response
 * (any status) and the URL it came from, plus the first hop's headers (the hub's `X-Repo-Commit`,
 * `X-Linked-Etag` and `X-Linked-Size` are on the answer that redirects to the CDN).
 */
export async function fetchFollowing(
  url: URL,
  init: { method?: string; headers?: Record<string, string> },
  ctx: HttpContext,
  what: string,
): Promise<{ response: Response; url: URL; first: Headers }> {
  let current = url;
  let first: Headers | undefined;
  for (let hop = 0; hop <= 10; hop++) {
    if (!isAllowedUrl(current)) {
      throw new LoupeError(
        "BAD_RESPONSE",
        `${what}: refusing to follow a redirect to ${shown(current)}: only https (or a loopback host) is allowed`,
      );
    }
    const headers: Record<string, string> = { "user-agent": "loupe", ...init.headers };
    if (ctx.token && current.origin === ctx.tokenOrigin) headers.authorization = `Bearer ${ctx.token}`;
    let response: Response;
    ctx.requests++;
    try {
      response = await fetch(current, {
        method: init.method ?? "GET",
        headers,
        redirect: "manual",
        signal: ctx.signal,
      });
    } catch (e) {
      if (isAbort(e, ctx.signal)) throw aborted(what);
      throw new RetryableError(`${what}: cannot reach ${current.host} (${(e as Error).message})`, { cause: e });
    }
    first ??= response.headers;
    if (response.status >= 300 && response.status < 400 && response.headers.has("location")) {
      await response.body?.cancel();
      let next: URL;
      try {
        next = new URL(response.headers.get("location")!, current);
      } catch {
        throw new LoupeError("BAD_RESPONSE", `${what}: ${shown(current)} redirects to an invalid address`);
      }
      current = next;
      continue;
    }
    return { response, url: current, first };
  }
  throw new LoupeError("BAD_RESPONSE", `${what}: more than 10 redirects from ${shown(url)} (a redirect loop)`);
}

/** Throws the typed error of a failed hub answer (4xx), or a RetryableError for 429 and 5xx. */
export async function raiseForStatus(
  response: Response,
  url: URL,
  what: string,
  hub: { repo?: string; endpoint?: string; hasToken: boolean; notFound?: string },
): Promise<void> {
  if (response.ok || response.status === 304) return;
  const status = response.status;
  const code = response.headers.get("x-error-code") ?? "";
  let message = response.headers.get("x-error-message") ?? "";
  const body = await response.text().catch(() => "");
  if (!message) {
    try {
      message = String(JSON.parse(body).error ?? "");
    } catch {
      message = body.slice(0, 200);
    }
  }
  const detail = message ? ` (${message.replace(/\s+/g, " ").slice(0, 300)})` : "";
  if (status === 429 || status >= 500) {
    throw new RetryableError(`${what}: ${shown(url)} answered ${status}${detail}`, {
      status,
      retryAfterMs: parseRetryAfter(response.headers.get("retry-after")),
    });
  }
  const page = hub.repo && hub.endpoint ? `${hub.endpoint}/${hub.repo}` : shown(url);
  if (code === "GatedRepo") {
    throw new LoupeError(
      "GATED",
      `${what}: ${hub.repo ?? "the repository"} is gated: accept its license at ${page}, then set HF_TOKEN ` +
        `to a token of that account${hub.hasToken ? " (the token given has no access yet)" : ""}${detail}`,
    );
  }
  if (code === "RepoNotFound" || (status === 401 && hub.repo && !hub.hasToken)) {
    throw new LoupeError(
      "NOT_FOUND",
      `${what}: repository ${hub.repo ?? shown(url)} not found on ${hub.endpoint ?? url.origin}` +
        (hub.hasToken ? "" : ` (if it is private, set HF_TOKEN)`) + detail,
    );
  }
  if (status === 401 || status === 403) {
    throw new LoupeError(
      "UNAUTHORIZED",
      `${what}: ${shown(url)} answered ${status}: ` +
        (hub.hasToken ? "the token (HF_TOKEN) is not valid or has no access" : "it needs a token: set HF_TOKEN") +
        detail,
    );
  }
  if (status === 404) {
    throw new LoupeError("NOT_FOUND", `${what}: ${hub.notFound ?? `${shown(url)} was not found`}${detail}`);
  }
  throw new LoupeError("NETWORK", `${what}: ${shown(url)} answered ${status}${detail}`);
}

/** The wait before attempt `attempt` (1-based retry count): Retry-After when given, else exponential with jitter. */
export function retryDelay(e: RetryableError, attempt: number, ctx: HttpContext, what: string): number {
  if (e.retryAfterMs !== undefined) {
    if (e.retryAfterMs > ctx.maxRetryAfterMs) {
      throw new LoupeError(
        "NETWORK",
        `${e.message.replace(/^[^:]*: /, `${what}: `)}; the server asks to wait ${
          Math.round(e.retryAfterMs / 1000)
        } s, longer than ${Math.round(ctx.maxRetryAfterMs / 1000)} s: try again later`,
      );
    }
    return e.retryAfterMs;
  }
  const base = ctx.backoffMs * 2 ** (attempt - 1);
  return Math.min(30_000, base * (0.75 + Math.random() * 0.5));
}

/** Runs `fn`, again after a RetryableError with backoff, up to `ctx.attempts` times; then NETWORK. */
export async function withRetries<T>(fn: () => Promise<T>, ctx: HttpContext, what: string): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof RetryableError)) throw e;
      if (attempt >= ctx.attempts) {
        throw new LoupeError("NETWORK", `${e.message} (${attempt} attempts)`, { cause: e });
      }
      await sleep(retryDelay(e, attempt, ctx, what), ctx.signal, what);
    }
  }
}
