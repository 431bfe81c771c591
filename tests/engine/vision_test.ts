// Vision: image chat through the CLIP projector against llama.cpp's own llama-mtmd-cli, the
// measured timeline of a vision call, image formats, bad input, ownership, the device probe
// runner, and — in child processes with the Vulkan engine on Mesa's lavapipe — probes, the
// fallback when a probe crashes, and placement.
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { build, closesWithBlankLine, runLoggedTool, THREADS } from "../support/helpers.ts";
import { encodeBmp, encodeGif, encodePng, palettized, picture, pngHeader } from "../support/vision_images.ts";
import { RESULT_PREFIX } from "../children/vision_child.ts";
import { runTestChild, VULKAN_ENV } from "../support/child_runner.ts";
import { ensureBuild } from "../../native/build/engine.ts";
import {
  fixtureProjector,
  loadModel,
  LoupeError,
  PlacementError,
  probeVisionDevice,
  type Stage,
  type VisionMessage,
} from "../../mod.ts";
import { projectorPresetOptions } from "../../src/fixtures/vision.ts";
import { makeProjector } from "../../testing.ts";
import { mixedPlacement, projectorDeviceCandidates } from "../../src/vision/vision.ts";

const { model: tinyPath, projector: projectorPath } = await fixtureProjector("tiny");
const TEST_JPEG = join(build.sourceDir, "tools", "mtmd", "test-1.jpeg");
const tmp = await Deno.makeTempDir({ prefix: "loupe-vision-test-" });
const model = await loadModel(tinyPath, { threads: THREADS, progress: false });
const projector = await model.loadProjector(projectorPath);
const proj = projectorPresetOptions("tiny");
const TOKENS_PER_IMAGE = (proj.imageSize / proj.patchSize) ** 2;
const greedy = { temperature: 0 } as const;

/**
 * Greedy output of llama.cpp's own llama-mtmd-cli for images and a prompt. With `template` the
 * prompt is taken as it is (a pass-through chat template), so a whole conversation can be given.
 */
async function referenceMtmd(images: string[], prompt: string, n: number, passThrough = false): Promise<string> {
  const args = ["-m", tinyPath, "--mmproj", projectorPath, ...images.flatMap((i) => ["--image", i])];
  args.push("-p", prompt, "-n", String(n), "--temp", "0", "-t", String(THREADS));
  if (passThrough) args.push("--jinja", "--chat-template", "{{ messages[0]['content'] }}");
  // mtmd-cli prints "\n" after evaluating the prompt, then the reply, then "\n\n" at exit
  const out = await runLoggedTool(build.tools.mtmd, args, closesWithBlankLine);
  assert(out.startsWith("\n"), `llama-mtmd-cli's output: ${JSON.stringify(out)}`);
  return out.slice(1, -2);
}

function log(msg: string): void {
  console.log(`  ${msg.replaceAll("\n", "\n  ")}`);
}

async function writeTemp(name: string, bytes: Uint8Array): Promise<string> {
  const path = join(tmp, name);
  await Deno.writeFile(path, bytes);
  return path;
}

Deno.test("greedy image chat equals llama-mtmd-cli on the pinned source's test-1.jpeg", async () => {
  const prompt = "What is in this picture?";
  const ref = await referenceMtmd([TEST_JPEG], prompt, 32);
  const r = await model.chat([{ role: "user", content: [{ image: TEST_JPEG }, prompt] }], { ...greedy, maxTokens: 32 });
  assertEquals(r.stopReason, "maxTokens");
  assertEquals(r.tokens.length, 32);
  assertEquals(r.text, ref);
  assertEquals(model.detokenize(r.tokens), r.text, "the text is the tokens' text");
  assertEquals(r.imageTokens, TOKENS_PER_IMAGE);
  assertEquals(r.images, [{ width: 640, height: 488 }]);
  log(`reply: ${JSON.stringify(r.text)}`);
  // the same JPEG given as its bytes
  const bytes = await Deno.readFile(TEST_JPEG);
  const b = await model.chat([{ role: "user", content: [{ image: bytes }, prompt] }], { ...greedy, maxTokens: 32 });
  assertEquals(b.text, ref, "a JPEG given as bytes");
  assertEquals(b.images, r.images);
});

Deno.test("several images and turns, given as bytes, raw pixels and paths, equal llama-mtmd-cli", async () => {
  const a = picture(72, 60, 1);
  const b = picture(40, 40, 3);
  const pngA = await encodePng(a);
  const pathA = await writeTemp("a.png", pngA);
  const pathB = await writeTemp("b.bmp", encodeBmp(b));
  const messages: VisionMessage[] = [
    { role: "system", content: "You describe pictures." },
    { role: "user", content: [{ image: pngA }, "Describe this one.", { image: { ...b } }] },
    { role: "assistant", content: "Two pictures." },
    { role: "user", content: ["And the first again?", { image: TEST_JPEG }] },
  ];
  const r = await model.chat(messages, { ...greedy, maxTokens: 24 });
  const marker = projector.info.marker;
  const prompt = model.applyChatTemplate([
    { role: "system", content: "You describe pictures." },
    { role: "user", content: `${marker}Describe this one.${marker}` },
    { role: "assistant", content: "Two pictures." },
    { role: "user", content: `And the first again?${marker}` },
  ]);
  const ref = await referenceMtmd([pathA, pathB, TEST_JPEG], prompt, 24, true);
  assertEquals(r.text, ref);
  assertEquals(r.imageTokens, 3 * TOKENS_PER_IMAGE);
  assertEquals(r.images, [{ width: 72, height: 60 }, { width: 40, height: 40 }, { width: 640, height: 488 }]);
  const encode = r.timeline.stage("image encode")!;
  assertEquals(encode.graphs, 3, "one encoder graph per image");
  assertEquals(encode.tokens, 3 * TOKENS_PER_IMAGE);
});

Deno.test("PNG, BMP and GIF decode to the same pixels as raw RGB (same greedy tokens)", async () => {
  const img = palettized(picture(50, 38, 4)); // exact in a 216-colour GIF
  const ask = (image: unknown) =>
    model.chat([{ role: "user", content: [{ image } as never, "What is it?"] }], { ...greedy, maxTokens: 8 });
  const raw = await ask(img);
  const gifPath = await writeTemp("c.gif", encodeGif(img));
  for (
    const [what, image] of [
      ["PNG bytes", await encodePng(img)],
      ["BMP bytes", encodeBmp(img)],
      ["GIF file", gifPath],
    ] as const
  ) {
    const r = await ask(image);
    assertEquals(r.tokens, raw.tokens, `${what} vs raw RGB`);
    assertEquals(r.images, [{ width: 50, height: 38 }]);
  }
  // and a different picture gives other tokens: the comparison can fail
  const other = await ask(palettized(picture(50, 38, 5)));
  assert(JSON.stringify(other.tokens) !== JSON.stringify(raw.tokens), "another picture, other tokens");
});

Deno.test("the timeline measures every stage of a vision call and the encoder's device", async () => {
  const r = await model.chat(
    [{ role: "user", content: ["Compare ", { image: picture(30, 30, 0) }, " with ", { image: TEST_JPEG }] }],
    { ...greedy, maxTokens: 6 },
  );
  const t = r.timeline;
  assertEquals(t.stages.map((s) => s.name), [
    "image preprocess",
    "image encode",
    "image decode",
    "prompt",
    "generation",
    "sampling",
  ]);
  const encode = t.stage("image encode")!;
  assertEquals(Object.keys(encode.devices), ["CPU"]);
  // per image: q, k, v, out, ffn up, ffn down in each block but the last, the patch
  // convolution (im2col + MUL_MAT), and the projector's mm.0 and mm.2
  const mulMats = (proj.nLayer - 1) * 6 + 3;
  assertEquals(encode.devices.CPU.ops.MUL_MAT, 2 * mulMats);
  const attn = encode.devices.CPU.ops.FLASH_ATTN_EXT ?? 0;
  assertEquals(encode.devices.CPU.heavy, 2 * mulMats + attn);
  assert(encode.devices.CPU.firstHeavy?.startsWith("MUL_MAT"), encode.devices.CPU.firstHeavy ?? "");
  assertEquals(encode.tokens, 2 * TOKENS_PER_IMAGE);
  const decode = t.stage("image decode")!;
  assertEquals(decode.tokens, 2 * TOKENS_PER_IMAGE);
  assertEquals(decode.graphs, 2);
  assertEquals(t.stage("prompt")!.tokens, r.promptTokens.length, "the text tokens");
  assertEquals(t.stage("prompt")!.graphs, 3, "text before, between and after the images");
  assertEquals(t.stage("generation")!.tokens, 5);
  assertEquals(t.devicesUsed(), ["CPU"]);
  assert(t.stage("image preprocess")!.wallMs > 0);
  for (let i = 1; i < 5; i++) {
    assert(Math.abs(t.stages[i].startMs - (t.stages[i - 1].startMs + t.stages[i - 1].wallMs)) < 1e-6, "stages follow");
  }
  const load = projector.loadTimeline;
  assertEquals(load.stages.map((s) => s.name), ["projector load", "projector warm-up"]);
  assertEquals(load.stage("projector warm-up")!.devices.CPU.ops.MUL_MAT, mulMats);
  assertEquals(projector.info.device, "CPU");
  assertEquals(projector.info.projectorType, "mlp");
  assertEquals(projector.info.nEmbd, model.info.nEmbd);
  assert(t.toString().includes("image encode"));
  log(t.toString());
});

Deno.test("requireDevice: cpu passes; gpu on a CPU-only engine fails, naming the encoder stage", async () => {
  const r = await model.chat([{ role: "user", content: [{ image: TEST_JPEG }, "Hi"] }], {
    ...greedy,
    maxTokens: 2,
    requireDevice: "cpu",
  });
  assertEquals(r.tokens.length, 2);
  const { devices } = await import("../../mod.ts");
  if ((await devices()).some((d) => d.type === "gpu" || d.type === "igpu")) return;
  // the call-level check that would have caught the source documents' bug on its first day
  const e = await assertRejects(
    () => model.chat([{ role: "user", content: [{ image: TEST_JPEG }, "Hi"] }], { maxTokens: 2, requireDevice: "gpu" }),
    PlacementError,
    'Stage "image encode" ran on the wrong device',
  );
  assertEquals([e.stage, e.device, e.required], ["image encode", "CPU", "gpu"]);
  assert(e.op.startsWith("MUL_MAT"), e.op);
  const load = await assertRejects(
    () => model.loadProjector(projectorPath, { requireDevice: "gpu" }),
    LoupeError,
    "No device matches",
  );
  assertEquals(load.code, "BACKEND_UNAVAILABLE");
  assert(!projector.closed, "a failed load leaves the loaded projector alone");
});

Deno.test("the encoder's device: the model's GPU by default, `device` picks another, `gpu: false` the CPU", () => {
  const cpu = { name: "CPU", type: "cpu" as const };
  const two = [cpu, { name: "CUDA0", type: "gpu" as const }, { name: "CUDA1", type: "gpu" as const }];
  const pick = projectorDeviceCandidates;
  assertEquals(pick({}, ["CUDA1"], two), ["CUDA1", "CUDA0", "CPU"], "the GPU with the model's weights first");
  assertEquals(pick({}, [], two), ["CUDA0", "CUDA1", "CPU"], "a model on the CPU: the first GPU");
  assertEquals(pick({ device: "CUDA0" }, ["CUDA1"], two), ["CUDA0", "CPU"], "an explicit device, then only the CPU");
  assertEquals(pick({ gpu: false }, ["CUDA1"], two), ["CPU"], "kept on the CPU on purpose");
  assertEquals(pick({ device: "CPU" }, ["CUDA1"], two), ["CPU"]);
  assertEquals(pick({}, [], [cpu]), ["CPU"], "no GPU");
  const igpu = [cpu, { name: "Vulkan0", type: "igpu" as const }];
  assertEquals(pick({}, [], igpu), ["Vulkan0", "CPU"], "an integrated GPU counts");
});

Deno.test("a signal cuts a running image encode short, and cancels a projector's warm-up; the model stays usable", async () => {
  // a projector whose encode takes a while on a CPU (12 blocks of width 512, 576 image tokens)
  const slow = await makeProjector(join(tmp, "slow-projector.gguf"), {
    nEmbdText: proj.nEmbdText,
    nEmbd: 512,
    nLayer: 12,
    nHead: 8,
    nFf: 2048,
    imageSize: 336,
    patchSize: 14,
    type: "f32",
    seed: 3,
    name: "loupe-slow-projector",
  });
  await using m = await loadModel(tinyPath, { threads: THREADS, gpuLayers: 0, progress: false });
  await m.loadProjector(slow.path, { warmup: false });
  const img = picture(336, 336);
  const messages: VisionMessage[] = [{ role: "user", content: [{ image: img }, "What is it?"] }];
  const full = await m.chat(messages, { ...greedy, maxTokens: 2 });
  const fullEncode = full.timeline.stage("image encode")!;
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), fullEncode.wallMs / 4);
  const cut = await m.chat(messages, { ...greedy, maxTokens: 2, signal: ac.signal });
  clearTimeout(timer);
  assertEquals(cut.stopReason, "aborted");
  assertEquals(cut.tokens, []);
  const cutEncode = cut.timeline.stage("image encode");
  assert(cutEncode, `the aborted call's timeline shows the encode that ran: ${cut.timeline}`);
  const nodes = (s: Stage) => Object.values(s.devices).reduce((a, d) => a + d.nodes, 0);
  log(`encode: ${nodes(cutEncode)} of ${nodes(fullEncode)} nodes before the abort`);
  assert(
    nodes(cutEncode) > 0 && nodes(cutEncode) < nodes(fullEncode),
    `cut short: ${nodes(cutEncode)} of ${nodes(fullEncode)} nodes ran`,
  );
  const again = await m.chat(messages, { ...greedy, maxTokens: 2 });
  assertEquals(again.tokens, full.tokens, "the next call is whole again");

  // cancelling a load during the projector's warm-up encode
  await using m2 = await loadModel(tinyPath, { threads: THREADS, gpuLayers: 0, progress: false });
  const ac2 = new AbortController();
  setTimeout(() => ac2.abort(), fullEncode.wallMs / 4);
  const err = await assertRejects(() => m2.loadProjector(slow.path, { signal: ac2.signal }), LoupeError);
  assertEquals(err.code, "ABORTED");
  await m2.loadProjector(slow.path, { warmup: false }); // the model can take a projector after that
});

Deno.test("streamChat (and stream) with images yields the chat's text; a signal aborts", async () => {
  const messages: VisionMessage[] = [{ role: "user", content: [{ image: TEST_JPEG }, "Tell me more."] }];
  const full = await model.chat(messages, { ...greedy, maxTokens: 24 });
  for (
    const stream of [
      model.streamChat(messages, { ...greedy, maxTokens: 24 }),
      model.stream(messages, { ...greedy, maxTokens: 24 }),
    ]
  ) {
    const pieces: string[] = [];
    for await (const p of stream) pieces.push(p);
    assertEquals(pieces.join(""), full.text);
    assertEquals((await stream.result).tokens, full.tokens);
    assert(pieces.length >= 2, `several pieces (${pieces.length})`);
  }
  const pre = new AbortController();
  pre.abort();
  const aborted = await model.chat(messages, { maxTokens: 50, signal: pre.signal });
  assertEquals(aborted.stopReason, "aborted");
  assertEquals(aborted.tokens, []);
  const ac = new AbortController();
  const s2 = model.streamChat(messages, { ...greedy, maxTokens: 100000, ignoreEos: true, signal: ac.signal });
  let n = 0;
  for await (const _ of s2) if (++n === 2) ac.abort();
  const r2 = await s2.result;
  assertEquals(r2.stopReason, "aborted");
  assert(r2.tokens.length < 1000);
});

Deno.test("mixed placement is named: which ops ran where", () => {
  const stage: Pick<Stage, "name" | "devices"> = {
    name: "image encode",
    devices: {
      Vulkan0: { nodes: 300, heavy: 120, ops: { MUL_MAT: 120, ADD: 180 }, firstHeavy: "MUL_MAT Qcur-0" },
      CPU: { nodes: 69, heavy: 0, ops: { SOFT_MAX: 23, CONT: 46 }, firstHeavy: null },
    },
  };
  assertEquals(
    mixedPlacement(stage),
    "image encode: mixed placement: Vulkan0 ran 300 of 369 nodes; CPU ran SOFT_MAX ×23, CONT ×46 " +
      "(ops the Vulkan0 backend does not support run on another device)",
  );
  assertEquals(mixedPlacement({ name: "x", devices: { CPU: stage.devices.CPU } }), null);
});

Deno.test("bad images are typed errors and the model stays usable", async () => {
  const jpeg = await Deno.readFile(TEST_JPEG);
  const png = await encodePng(picture(20, 20, 1));
  const withHeader = (header: Uint8Array) => {
    const b = new Uint8Array(png);
    b.set(header);
    return b;
  };
  const cases: Array<[string, unknown, string, string]> = [
    ["truncated JPEG", jpeg.slice(0, jpeg.length >> 1), "BAD_FORMAT", "the JPEG data is truncated"],
    ["truncated PNG", png.slice(0, png.length - 30), "BAD_FORMAT", "rejected the PNG data"],
    ["truncated BMP", encodeBmp(picture(20, 20)).slice(0, 300), "BAD_FORMAT", "the BMP data is truncated"],
    ["truncated GIF", encodeGif(palettized(picture(20, 20))).slice(0, 900), "BAD_FORMAT", "the GIF data is truncated"],
    [
      "corrupt JPEG tables",
      jpeg.map((v, i) => (i >= 4 && i < 400 ? (i * 131) & 255 : v)),
      "BAD_FORMAT",
      "the JPEG header is truncated or malformed",
    ],
    ["corrupt PNG data", png.map((v, i) => (i >= 45 && i < png.length - 20 ? (i * 37) & 255 : v)), "BAD_FORMAT", "PNG"],
    ["empty bytes", new Uint8Array(0), "INVALID_ARGUMENT", "the image is empty (0 bytes)"],
    ["a PNG of 0x0", withHeader(pngHeader(0, 0)), "INVALID_ARGUMENT", "declares a zero size (0x0)"],
    ["raw 0x0", { data: new Uint8Array(0), width: 0, height: 0 }, "INVALID_ARGUMENT", "zero size (0x0)"],
    [
      "raw of the wrong length",
      { data: new Uint8Array(10), width: 2, height: 2 },
      "INVALID_ARGUMENT",
      "needs 12 bytes",
    ],
    [
      "a PNG declaring 50000x50000",
      withHeader(pngHeader(50000, 50000)),
      "INVALID_ARGUMENT",
      "declares 50000x50000 pixels, more than loupe decodes",
    ],
    [
      "raw 20000x20000",
      { data: new Uint8Array(3), width: 20000, height: 20000 },
      "INVALID_ARGUMENT",
      "more than loupe takes",
    ],
    ["WebP", new TextEncoder().encode("RIFF\x10\0\0\0WEBPVP8 ........"), "BAD_FORMAT", "WebP is not supported"],
    ["TIFF", new Uint8Array([0x49, 0x49, 0x2a, 0, 8, 0, 0, 0]), "BAD_FORMAT", "TIFF is not supported"],
    ["text", new TextEncoder().encode("not an image at all"), "BAD_FORMAT", "not a recognised image format"],
    ["a missing file", join(tmp, "missing.png"), "NOT_FOUND", "no such file"],
    ["a directory", tmp, "NOT_A_FILE", "it is a directory"],
    ["a number", 42, "INVALID_ARGUMENT", "must be a path, a Uint8Array"],
  ];
  for (const [what, image, code, text] of cases) {
    const t0 = performance.now();
    const e = await assertRejects(
      () => model.chat([{ role: "user", content: [{ image } as never, "Hi"] }], { maxTokens: 2 }),
      LoupeError,
      text,
    );
    assertEquals(e.code, code, `${what}: ${e.message}`);
    assert(e.message.startsWith("Cannot"), `${what}: a sentence: ${e.message}`);
    if (what.includes("50000")) log(`${what}: refused in ${(performance.now() - t0).toFixed(1)} ms: ${e.message}`);
  }
  const ok = await model.chat([{ role: "user", content: [{ image: TEST_JPEG }, "Hi"] }], { ...greedy, maxTokens: 2 });
  assertEquals(ok.tokens.length, 2, "the model and its projector still work");
});

Deno.test("bad messages and prompts are typed errors", async () => {
  const marker = projector.info.marker;
  for (
    const [messages, text] of [
      [[{ role: "user", content: [{ image: TEST_JPEG }, `say ${marker}`] }], "contains the media marker"],
      [[{ role: "user", content: [{ picture: "x" }] }], "is neither text, { image } nor { audio }"],
      [[{ role: 3, content: [{ image: TEST_JPEG }] }], "needs a string role"],
      [[{ role: "user", content: [{ image: TEST_JPEG }] }, { role: "user", content: 5 }], "needs string content"],
    ] as Array<[unknown[], string]>
  ) {
    const e = await assertRejects(() => model.chat(messages as VisionMessage[], { maxTokens: 1 }), LoupeError, text);
    assertEquals(e.code, "INVALID_ARGUMENT");
  }
  // a prompt with images that does not fit is refused whole: an image is never cut
  await using small = await loadModel(tinyPath, { contextSize: 32, threads: THREADS, progress: false });
  await small.loadProjector(projectorPath);
  const n = Math.ceil(small.info.nCtx / TOKENS_PER_IMAGE); // llama.cpp rounds the context up
  const many = [...Array.from({ length: n }, (_, i) => ({ image: picture(20, 20, i) })), "Which is larger?"];
  const e = await assertRejects(
    () => small.chat([{ role: "user", content: many }], { maxTokens: 4 }),
    LoupeError,
    "an image's tokens are never cut",
  );
  assertEquals(e.code, "CONTEXT_OVERFLOW");
  assert(e.message.includes(`${n * TOKENS_PER_IMAGE} for ${n} image(s)`), e.message);
  assert(e.message.includes(`context holds ${small.info.nCtx}`), e.message);
  const ok = await small.chat([{ role: "user", content: [{ image: TEST_JPEG }, "Hi"] }], { ...greedy, maxTokens: 2 });
  assertEquals(ok.tokens.length, 2, "the model stays usable");
});

Deno.test("wrong projector files, models and pairings are typed errors", async () => {
  // a projector for a model of another width
  const narrow = join(tmp, "narrow-mmproj.gguf");
  await makeProjector(narrow, { nEmbdText: 32, nEmbd: 32, nLayer: 2, nHead: 2, imageSize: 28 });
  const wrong = await assertRejects(() => model.loadProjector(narrow), LoupeError, "32 wide but the model's");
  assertEquals(wrong.code, "WRONG_MODEL");
  // the language model given as the projector, and the projector given as the model
  const asProj = await assertRejects(() => model.loadProjector(tinyPath), LoupeError, "not a multimodal projector");
  assertEquals(asProj.code, "WRONG_KIND");
  const asModel = await assertRejects(() => loadModel(projectorPath), LoupeError, "it is a multimodal projector");
  assertEquals(asModel.code, "WRONG_KIND");
  // missing, directory, not GGUF
  assertEquals((await assertRejects(() => model.loadProjector(join(tmp, "none.gguf")), LoupeError)).code, "NOT_FOUND");
  assertEquals((await assertRejects(() => model.loadProjector(tmp), LoupeError)).code, "NOT_A_FILE");
  const text = await writeTemp("text.gguf", new TextEncoder().encode("plain text, not GGUF"));
  assertEquals((await assertRejects(() => model.loadProjector(text), LoupeError)).code, "BAD_FORMAT");
  // images with a text-only model (no projector)
  await using plain = await loadModel(tinyPath, { threads: THREADS, progress: false });
  const none = await assertRejects(
    () => plain.chat([{ role: "user", content: [{ image: TEST_JPEG }, "Hi"] }]),
    LoupeError,
    "no projector is loaded",
  );
  assertEquals(none.code, "INVALID_ARGUMENT");
  assertEquals((await plain.chat([{ role: "user", content: "Hi" }], { maxTokens: 2 })).tokens.length, 2);
  assert(!projector.closed);
});

Deno.test("projectors close with their model, replace each other, and refuse use after close", async () => {
  const m = await loadModel(tinyPath, { threads: THREADS, progress: false });
  const p1 = await m.loadProjector(projectorPath, { warmup: false });
  assertEquals(p1.loadTimeline.stages.map((s) => s.name), ["projector load"], "no warm-up when asked not to");
  const p2 = await m.loadProjector(projectorPath);
  assert(p1.closed, "loading another projector closes the previous one");
  assert(!p2.closed);
  const running = m.chat([{ role: "user", content: [{ image: TEST_JPEG }, "Go"] }], {
    maxTokens: 100000,
    ignoreEos: true,
    temperature: 0,
  });
  await new Promise((r) => setTimeout(r, 300));
  await m.closeAsync();
  assertEquals((await running).stopReason, "aborted", "closing the model aborts the call");
  assert(p2.closed, "the projector closed with its model");
  p2.close();
  assertEquals(
    (await assertRejects(() => m.chat([{ role: "user", content: [{ image: TEST_JPEG }] }]), LoupeError)).code,
    "CLOSED",
  );
  assertEquals((await assertRejects(() => m.loadProjector(projectorPath), LoupeError)).code, "CLOSED");
  // a projector closed on its own: the model is text-only again
  await using m2 = await loadModel(tinyPath, { threads: THREADS, progress: false });
  const p3 = await m2.loadProjector(projectorPath, { warmup: false });
  await p3.closeAsync();
  await assertRejects(() => m2.chat([{ role: "user", content: [{ image: TEST_JPEG }] }]), LoupeError, "no projector");
});

Deno.test("the probe runner reports a crashing, failing, hanging or silent child, and remembers verdicts", async () => {
  const fake = new URL("../children/vision_probe_fake.ts", import.meta.url).pathname;
  const cacheFile = join(tmp, "probes.json");
  const config = { device: "CPU", modelDevices: [] as string[], flashAttn: "auto" as const };
  const run = async (mode: string, extra: Record<string, unknown> = {}) => {
    Deno.env.set("LOUPE_FAKE_PROBE", mode);
    try {
      return await probeVisionDevice(config, { module: fake, cacheFile, force: true, ...extra });
    } finally {
      Deno.env.delete("LOUPE_FAKE_PROBE");
    }
  };
  const crash = await run("crash");
  assertEquals(crash.ok, false);
  assert(crash.reason.includes("crashed its child process with SIGSEGV"), crash.reason);
  assert(crash.stderrTail?.includes("reading the null page on purpose"), "the child's stderr is kept");
  const remembered = await probeVisionDevice(config, { module: fake, cacheFile });
  assertEquals([remembered.fromCache, remembered.ok, remembered.reason], [true, false, crash.reason]);
  const exit = await run("exit");
  assert(!exit.ok && exit.reason.includes("failed (exit code 3)"), exit.reason);
  const silent = await run("silent");
  assert(!silent.ok && silent.reason.includes("exit code 0"), silent.reason);
  const hang = await run("hang", { timeoutMs: 1500 });
  assert(!hang.ok && hang.reason.includes("hung and was killed"), hang.reason);
  const stored = JSON.parse(await Deno.readTextFile(cacheFile));
  assertEquals(stored[hang.key].reason, silent.reason, "a hang is not remembered (the machine may be busy)");
  // the real probe: the tiny fixtures' image chat in a child, with this engine
  const real = await probeVisionDevice(config, { cacheFile, force: true });
  assert(real.ok, `${real.reason}\n${real.stderrTail ?? ""}`);
  assertEquals(real.placement?.["image encode"], ["CPU"]);
  log(`a crashing probe: ${crash.reason}; the real one: ${real.reason} (${real.wallMs.toFixed(0)} ms)`);
});

// ---- the Vulkan engine on lavapipe, in child processes ---------------------------------------

const CHILD = new URL("../children/vision_child.ts", import.meta.url).pathname;
let vulkanBuild: ReturnType<typeof ensureBuild> | null = null;

/** Runs `tests/vision_child.ts <mode>` on the Vulkan engine and returns its result (see tests/child_runner.ts). */
async function runChild<T>(mode: string, env: Record<string, string> = {}, timeoutMs = 400_000): Promise<T> {
  vulkanBuild ??= ensureBuild({ variant: "vulkan", verbose: false });
  await vulkanBuild;
  const label = `vision child "${mode}"`;
  const options = { prefix: RESULT_PREFIX, label, env: { ...VULKAN_ENV, ...env }, timeoutMs };
  return (await runTestChild<T>(CHILD, [mode], options)).result;
}

interface LavapipeResult {
  devices: Array<{ name: string; description: string }>;
  device: string;
  warnings: string[];
  verdicts: Record<string, { ok: boolean; reason: string; placement?: Record<string, string[]> }>;
  remembered: { ok: boolean; fromCache: boolean; wallMs: number };
  loadTimeline: { stages: Stage[] };
  timeline: { stages: Stage[] };
  text: string;
  tokens: number[];
  cpuTokens: number[];
}

Deno.test("vulkan engine: lavapipe is probed in a child before images go to it; the verdict is remembered", async () => {
  const verdictFile = join(tmp, "lavapipe-probes.json");
  const r = await runChild<LavapipeResult>("lavapipe", { LOUPE_VISION_PROBES: verdictFile });
  log(r.text);
  const keys = Object.keys(r.verdicts);
  assertEquals(keys.length, 1, "one probe ran");
  const key = JSON.parse(keys[0]);
  const vk0 = r.devices.find((d) => d.name === "Vulkan0")!;
  assertEquals([key.device, key.model, key.engine], ["Vulkan0", ["Vulkan0"], "vulkan"]);
  assert(key.drivers.Vulkan0.startsWith(vk0.description), `the key names the device: ${key.drivers.Vulkan0}`);
  assert(/Mesa \d+\.\d+/.test(key.drivers.Vulkan0), `and the driver version: ${key.drivers.Vulkan0}`);
  const verdict = r.verdicts[keys[0]];
  log(`verdict: ${verdict.reason}`);
  // loupe's image path does not crash this Mesa (llama-mtmd-cli's does, after its warm-up decode)
  assert(verdict.ok, `the probe on lavapipe failed: ${verdict.reason}`);
  assertEquals(verdict.placement?.["image encode"], ["Vulkan0"]);
  assertEquals(r.warnings, []);
  assertEquals(r.device, "Vulkan0");
  assertEquals([r.remembered.fromCache, r.remembered.ok, r.remembered.wallMs], [true, true, 0]);
  const stage = (name: string) => r.timeline.stages.find((s) => s.name === name)!;
  assertEquals(Object.keys(stage("image encode").devices), ["Vulkan0"], "the encoder ran on lavapipe");
  assertEquals(
    stage("image decode").devices.Vulkan0.heavy > 0,
    true,
    "the image embeddings went into the model on lavapipe",
  );
  assertEquals(stage("image decode").devices.CPU?.heavy ?? 0, 0);
  const warm = r.loadTimeline.stages.find((s) => s.name === "projector warm-up")!;
  assertEquals(Object.keys(warm.devices), ["Vulkan0"]);
  assertEquals(r.tokens, r.cpuTokens, "the same greedy tokens as the CPU");
});

interface FallbackResult {
  device: string;
  warnings: string[];
  consoleWarnings: string[];
  loadEvents: Array<{ what: string; kind?: string }>;
  resultWarnings: string[];
  events: Array<{ what: string; kind?: string }>;
  encode: string[];
  tokens: number;
  required: Record<string, string | null> | null;
  afterTokens: number;
}

Deno.test("vulkan engine: a crashing probe is reported, the encoder runs on the CPU, requireDevice then fails clearly", async () => {
  const r = await runChild<FallbackResult>("fallback", {
    LOUPE_FAKE_PROBE: "crash",
    LOUPE_VISION_PROBES: join(tmp, "fallback-probes.json"),
  });
  assertEquals(r.warnings.length, 1);
  const w = r.warnings[0];
  log(`the warning: ${w}`);
  assert(/^Vulkan0 \(llvmpipe.*\) was skipped for images: a vision probe on Vulkan0 \(.*Mesa/.test(w), w);
  assert(w.includes("crashed its child process with SIGSEGV"), w);
  assertEquals(r.consoleWarnings, [`loupe: ${w}`], "the user is told plainly");
  assertEquals(r.loadEvents.map((e) => [e.kind, e.what]), [["deviceSkipped", w]]);
  assertEquals(r.device, "CPU");
  assertEquals(r.encode, ["CPU"], "the call ran on a device that works");
  assertEquals(r.tokens, 8);
  assertEquals(r.resultWarnings, [w], "the result says so too");
  assert(r.events.some((e) => e.what === w), "and its timeline");
  const e = r.required!;
  log(`with requireDevice Vulkan0: ${e.message}`);
  assertEquals(e.code, "BACKEND_UNAVAILABLE");
  assert(String(e.message).includes('requireDevice is "Vulkan0" but the image encoder would run on CPU'), e.message!);
  assert(String(e.message).includes("crashed its child process with SIGSEGV (remembered verdict)"), e.message!);
  assertEquals(r.afterTokens, 8, "the loaded projector stays usable");
});

interface PlacementResult {
  cpuKept: Record<string, unknown> | null;
  device: string;
  warmup: Record<string, { heavy: number }> | null;
  encode: Record<string, { heavy: number }> | null;
  decode: string[];
  tokens: number;
  call: Record<string, string | null> | null;
}

Deno.test("vulkan engine: requireDevice Vulkan0 on a projector kept on the CPU fails with PlacementError", async () => {
  const r = await runChild<PlacementResult>("placement");
  const e = r.cpuKept!;
  log(`gpu: false with requireDevice Vulkan0: ${e.message}`);
  assertEquals(e.isPlacementError, true);
  assertEquals([e.code, e.stage, e.device, e.required], ["PLACEMENT", "projector warm-up", "CPU", "Vulkan0"]);
  assert(String(e.op).startsWith("MUL_MAT"), String(e.op));
  assertEquals(r.device, "Vulkan0");
  assertEquals(Object.keys(r.warmup!), ["Vulkan0"]);
  assertEquals(Object.keys(r.encode!), ["Vulkan0"]);
  assertEquals(r.decode, ["CPU"], "the model itself stays on the CPU (gpuLayers 0)");
  assertEquals(r.tokens, 8);
  assertEquals([r.call?.code, r.call?.stage, r.call?.device], ["PLACEMENT", "image decode", "CPU"]);
});

globalThis.addEventListener("unload", () => {
  model.close();
  Deno.removeSync(tmp, { recursive: true });
});
