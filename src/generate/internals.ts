/**
 * What a model lends to the modules that run on its handles (sessions, projectors). The model
 * (src/model/) sits above them: it registers what it lends here when it is made, and they ask
 * for it with {@linkcode internalsOf}; they never import the model.
 *
 * @module
 */
import type { NativeContext, NativeModel } from "../../ffi/model.ts";
import type { ChatTemplates } from "../chat/chat.ts";
import type { Device } from "../engine/engine.ts";
import type { LoadModelOptions } from "../engine/load_options.ts";
import { LoupeError } from "../util/errors.ts";

/** What a session or projector borrows from its model. */
export interface ModelInternals {
  /** The native model; its contexts are freed before it. */
  native: NativeModel;
  /** The model's chat templates (the engine's chat layer). */
  chats: ChatTemplates;
  /** Devices, for placement checks. */
  devices: Device[];
  /** The load options (threads, requireDevice, …). */
  options: LoadModelOptions;
  /** Registers something the model closes, and waits for, before it frees itself; returns the unregister. */
  adopt(child: { closeAsync(): Promise<void> }): () => void;
  /** The model's own context (image chats run on it); throws for vocabOnly. */
  context(): NativeContext;
  /** Runs `fn` in the model's call queue as a running call (close() aborts it); rejects once closed. */
  serial<T>(fn: () => Promise<T>): Promise<T>;
}

const lenders = new WeakMap<object, () => ModelInternals>();

/** Registers what `model` lends (called by the model when it is made); `lend` throws CLOSED once it is closed. */
export function lendInternals(model: object, lend: () => ModelInternals): void {
  lenders.set(model, lend);
}

/** What `model` lends; throws CLOSED once it is closed, INVALID_ARGUMENT for anything but a loaded model. */
export function internalsOf(model: object): ModelInternals {
  const lend = lenders.get(model);
  if (!lend) throw new LoupeError("INVALID_ARGUMENT", "Expected a model made by loadModel");
  return lend();
}
