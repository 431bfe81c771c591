/**
 * What a generating call returns, and the chat message it takes.
 *
 * @module
 */
import type { ChatTurn, ToolCall } from "../chat/chat.ts";
import type { Timeline } from "../timeline/timeline.ts";

/** Why generation stopped. */
export type StopReason = "eos" | "stop" | "maxTokens" | "contextFull" | "aborted" | "toolCalls";

/** The result of generate or chat. */
export interface GenerateResult {
  /** Generated text (stop strings removed). */
  text: string;
  /** Generated token ids. */
  tokens: number[];
  /** Prompt token ids. */
  promptTokens: number[];
  /** Why it stopped. */
  stopReason: StopReason;
  /** Measured stages. */
  timeline: Timeline;
  /** A chat's thinking text, parsed apart from `text` (models with thinking tags; "" when none). */
  reasoning?: string;
  /** The tool calls of a chat reply (then `stopReason` is "toolCalls"). */
  toolCalls?: ToolCall[];
  /** The parsed value, when a `jsonSchema` was given. */
  json?: unknown;
  /** Things the caller should know (e.g. the model has no chat template). */
  warnings?: string[];
}

/** A chat message: text, an assistant's tool calls, or a tool's answer (see {@linkcode ChatTurn}). */
export type ChatMessage = ChatTurn;
