/**
 * The token loop as TypeScript sees it: the engine generates for a time budget (or a number of
 * tokens) per native call and returns what it produced; this drives those steps for every
 * generating call (model, session, image chat), hands pieces to a stream and checks placement.
 *
 * @module
 */
import type { NativeContext } from "../../ffi/model.ts";
import { wrap } from "../util/native_error.ts";
import { addNativeStage, type NativeStage, type Timeline } from "../timeline/timeline.ts";
import type { StopReason } from "./result.ts";

/** How long one native step may run before returning to JavaScript. */
export interface Step {
  /** Time budget in milliseconds. */
  ms: number;
  /** Most tokens per step (0: no limit). */
  tokens: number;
}

/** A streaming step returns after 20 ms or 8 tokens: pieces arrive promptly, one FFI round trip per 8 tokens. */
export const STREAM_STEP: Step = { ms: 20, tokens: 8 };
/** A collecting call returns to JavaScript every 250 ms (for abort and placement checks), not per token. */
export const COLLECT_STEP: Step = { ms: 250, tokens: 0 };

/** What one native step reports (sessions add their own fields). */
export interface StepOutput {
  /** Text generated in this step. */
  text: string;
  /** Tokens generated in this step. */
  tokens: number[];
  /** Whether generation ended. */
  done: boolean;
  /** Why it ended, once it has. */
  stopReason: StopReason | null;
  /** Tokens in the context. */
  nPast: number;
  /** The stage counters so far ("prompt", "generation", "sampling", …). */
  stages: Record<string, NativeStage>;
}

/** What {@linkcode runSteps} needs besides the context. */
export interface StepLoop<O extends StepOutput> {
  /** The step size. */
  step: Step;
  /** Receives each non-empty piece of text (streaming). */
  onPiece?: (piece: string) => void;
  /** Called with each step's output (placement checks, bookkeeping); a throw aborts generation. */
  each?: (out: O) => void;
}

/**
 * Steps generation on `ctx` (begun by the caller) until it ends; returns the text, the tokens and
 * the last output. A failure aborts the native generation and is a LoupeError.
 */
export async function runSteps<O extends StepOutput>(
  ctx: NativeContext,
  loop: StepLoop<O>,
): Promise<{ text: string; tokens: number[]; last: O }> {
  let text = "";
  const tokens: number[] = [];
  try {
    while (true) {
      const done = await ctx.genStep(loop.step.ms, loop.step.tokens);
      const out = ctx.genOutput<O>();
      text += out.text;
      for (const t of out.tokens) tokens.push(t);
      if (out.text && loop.onPiece) loop.onPiece(out.text);
      loop.each?.(out);
      if (done) return { text, tokens, last: out };
    }
  } catch (e) {
    ctx.genAbort();
    throw wrap(e, "Cannot generate");
  }
}

/** Adds the generation stages of a step output to `timeline`: "generation", and "sampling" inside it. */
export function addGenerationStages(timeline: Timeline, stages: Record<string, NativeStage>): Timeline {
  if (stages.generation) addNativeStage(timeline, "generation", stages.generation);
  if (stages.sampling) {
    const gen = timeline.stage("generation");
    addNativeStage(
      timeline,
      "sampling",
      stages.sampling,
      gen ? { startMs: gen.startMs, interleavedWith: "generation" } : {},
    );
  }
  return timeline;
}
