// The sampling options' one home: defaults filled in for the engine, bad values refused by name.
import { assertEquals, assertThrows } from "../support/assert.ts";
import { DEFAULT_MAX_TOKENS, NO_GRAMMAR, SAMPLING_DEFAULTS, samplingParams } from "../../src/generate/options.ts";
import { LoupeError } from "../../src/util/errors.ts";

Deno.test("samplingParams fills every value the engine takes from SAMPLING_DEFAULTS", () => {
  assertEquals(samplingParams({}), {
    maxTokens: DEFAULT_MAX_TOKENS,
    temperature: SAMPLING_DEFAULTS.temperature,
    topK: SAMPLING_DEFAULTS.topK,
    topP: SAMPLING_DEFAULTS.topP,
    minP: SAMPLING_DEFAULTS.minP,
    repeatPenalty: SAMPLING_DEFAULTS.repeatPenalty,
    repeatLastN: SAMPLING_DEFAULTS.repeatLastN,
    seed: SAMPLING_DEFAULTS.seed,
    stop: [],
    ignoreEos: false,
    ...NO_GRAMMAR,
  });
  // llama.cpp's own sampling defaults (common/common.h), with the repeat penalty off
  assertEquals([SAMPLING_DEFAULTS.topK, SAMPLING_DEFAULTS.topP, SAMPLING_DEFAULTS.minP], [40, 0.95, 0.05]);
  const given = samplingParams({ maxTokens: 3, temperature: 0, topK: 0, stop: ["x"], ignoreEos: true, seed: 7 });
  assertEquals([given.maxTokens, given.temperature, given.topK, given.stop, given.ignoreEos, given.seed], [
    3,
    0,
    0,
    ["x"],
    true,
    7,
  ]);
});

Deno.test("samplingParams refuses bad values with INVALID_ARGUMENT naming the option", () => {
  const bad: Array<[Record<string, unknown>, string]> = [
    [{ maxTokens: -1 }, "maxTokens must be a whole number"],
    [{ maxTokens: 2 ** 31 }, "maxTokens must be at most 2147483647"],
    [{ temperature: NaN }, "temperature must be a finite number"],
    [{ topK: 1.5 }, "topK must be a whole number"],
    [{ seed: "1" }, "seed must be a finite number"],
    [{ stop: "x" }, "stop must be an array of strings"],
  ];
  for (const [options, message] of bad) {
    const e = assertThrows(() => samplingParams(options), LoupeError, message);
    assertEquals(e.code, "INVALID_ARGUMENT");
  }
});
