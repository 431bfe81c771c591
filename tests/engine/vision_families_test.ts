// Vision and audio families beyond LLaVA, each against llama.cpp's own llama-mtmd-cli from the
// pinned source, greedy and token for token: Qwen2-VL and Qwen2.5-VL (M-RoPE: an image takes
// fewer positions than tokens), Gemma 3 (non-causal image tokens), SmolVLM/idefics3 (tiles),
// InternVL, and Ultravox audio. Then images in sessions (reuse without a second encode,
// save/restore), and the context's edges (an image that cannot fit; a context filled after one).
// Every fixture is made by the project's own GGUF writer with deterministic weights.
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import { build, closesWithBlankLine, runLoggedTool, THREADS } from "../support/helpers.ts";
import { encodePng, picture } from "../support/vision_images.ts";
import { loadModel, LoupeError, type Model, PlacementError, type VisionMessage } from "../../mod.ts";
import { familyFixture } from "../../src/fixtures/families.ts";
import { makeToneWav } from "../../src/fixtures/audio.ts";
import { DISPLAY, type MimeBundle } from "../../display.ts";

const tmp = await Deno.makeTempDir({ prefix: "loupe-families-test-" });
const greedy = { temperature: 0 } as const;
const N = 12; // tokens to generate per comparison

interface Pair {
  model: string;
  projector: string;
}

/** The image families: how to get the pair, and whether its token count follows the image's size. */
const IMAGE_FAMILIES: Array<{ name: string; pair: () => Promise<Pair>; dynamic: boolean }> = [
  { name: "qwen2vl", pair: () => familyFixture("qwen2vl"), dynamic: true },
  { name: "qwen25vl", pair: () => familyFixture("qwen25vl"), dynamic: true },
  { name: "gemma3", pair: () => familyFixture("gemma3"), dynamic: false },
  { name: "idefics3", pair: () => familyFixture("smolvlm"), dynamic: true },
  { name: "internvl", pair: () => familyFixture("internvl"), dynamic: true },
];

async function writeTemp(name: string, bytes: Uint8Array): Promise<string> {
  const path = join(tmp, name);
  await Deno.writeFile(path, bytes);
  return path;
}

/**
 * Greedy output of llama-mtmd-cli for media and a prompt rendered by loupe with the media marker
 * (given through a pass-through chat template, so both see the same text).
 */
async function referenceMtmd(pair: Pair, media: Array<{ image: string } | { audio: string }>, prompt: string, n = N) {
  const args = ["-m", pair.model, "--mmproj", pair.projector, "-c", "4096"];
  for (const m of media) args.push(...("image" in m ? ["--image", m.image] : ["--audio", m.audio]));
  args.push("-p", prompt, "-n", String(n), "--temp", "0", "-t", String(THREADS));
  args.push("--jinja", "--chat-template", "{{ messages[0]['content'] }}");
  const out = await runLoggedTool(build.tools.mtmd, args, closesWithBlankLine);
  assert(out.startsWith("\n"), `llama-mtmd-cli's output: ${JSON.stringify(out)}`);
  return out.slice(1, -2);
}

/** The same conversation for loupe (parts) and for the reference (marker text). */
function conversation(
  model: Model,
  marker: string,
  turns: Array<{ role: string; parts: Array<string | { image: string | Uint8Array }> }>,
) {
  const messages: VisionMessage[] = turns.map((t) => ({ role: t.role, content: t.parts }));
  const prompt = model.applyChatTemplate(
    turns.map((t) => ({ role: t.role, content: t.parts.map((p) => typeof p === "string" ? p : marker).join("") })),
  );
  return { messages, prompt };
}

for (const fam of IMAGE_FAMILIES) {
  Deno.test(`${fam.name}: images at several sizes, two in a message, a follow-up turn and bytes equal llama-mtmd-cli`, async () => {
    const pair = await fam.pair();
    await using model = await loadModel(pair.model, { threads: THREADS, progress: false, contextSize: 4096 });
    const projector = await model.loadProjector(pair.projector);
    const marker = projector.info.marker;
    const counts: number[] = [];
    const sizes: Array<[number, number]> = [[56, 56], [112, 84], [140, 196], [224, 224], [300, 120]];
    const paths: string[] = [];
    for (const [i, [w, h]] of sizes.entries()) {
      const path = await writeTemp(`${fam.name}-${w}x${h}.png`, await encodePng(picture(w, h, i + 1)));
      paths.push(path);
      const c = conversation(model, marker, [{ role: "user", parts: [{ image: path }, "What is in this picture?"] }]);
      const r = await model.chat(c.messages, { ...greedy, maxTokens: N });
      assertEquals(r.text, await referenceMtmd(pair, [{ image: path }], c.prompt), `${fam.name} ${w}x${h}`);
      counts.push(r.imageTokens);
      if (projector.info.mrope) assert(r.positions < r.imageTokens + r.promptTokens.length, "M-RoPE: fewer positions");
    }
    console.log(`  ${fam.name}: image tokens by size ${sizes.map((s, i) => `${s[0]}x${s[1]}:${counts[i]}`).join(" ")}`);
    if (fam.dynamic) assert(new Set(counts).size > 1, `${fam.name}'s token count follows the image size: ${counts}`);
    // two images in one message
    const two = conversation(model, marker, [{
      role: "user",
      parts: ["Compare ", { image: paths[1] }, " with ", { image: paths[3] }, "."],
    }]);
    const r2 = await model.chat(two.messages, { ...greedy, maxTokens: N });
    assertEquals(
      r2.text,
      await referenceMtmd(pair, [{ image: paths[1] }, { image: paths[3] }], two.prompt),
      "two images",
    );
    // an image, a reply, then a text turn
    const turns = conversation(model, marker, [
      { role: "user", parts: [{ image: paths[2] }, "Describe it."] },
      { role: "assistant", parts: ["A pattern of colours."] },
      { role: "user", parts: ["Which colour is most common?"] },
    ]);
    const r3 = await model.chat(turns.messages, { ...greedy, maxTokens: N });
    assertEquals(r3.text, await referenceMtmd(pair, [{ image: paths[2] }], turns.prompt), "a follow-up turn");
    // the image as bytes: the same as its path
    const bytes = await Deno.readFile(paths[1]);
    const viaPath = await model.chat([{ role: "user", content: [{ image: paths[1] }, "Say more."] }], {
      ...greedy,
      maxTokens: N,
    });
    const viaBytes = await model.chat([{ role: "user", content: [{ image: bytes }, "Say more."] }], {
      ...greedy,
      maxTokens: N,
    });
    assertEquals(viaBytes.tokens, viaPath.tokens, "bytes and path");
  });

  Deno.test(`${fam.name}: the projector's facts, and requireDevice on the encode stage`, async () => {
    const pair = await fam.pair();
    await using model = await loadModel(pair.model, { threads: THREADS, progress: false, contextSize: 4096 });
    const projector = await model.loadProjector(pair.projector);
    const info = projector.info;
    assert(info.vision, "it encodes images");
    assertEquals(info.mrope, fam.name.startsWith("qwen"), "M-RoPE for the Qwen families");
    assertEquals(info.nonCausal, fam.name === "gemma3", "non-causal image tokens for Gemma 3");
    assertEquals(info.tiles, fam.name === "idefics3" || fam.name === "internvl", "tiles for idefics3 and InternVL");
    // the projector's view says the same
    const shown = String((await projector[DISPLAY]() as MimeBundle)["text/plain"]);
    const placement = info.mrope ? "M-RoPE" : info.nonCausal ? "non-causal" : "causal, one position each";
    assert(shown.includes(placement) && shown.includes(info.projectorType), shown);
    assertEquals(shown.includes("large images in tiles"), info.tiles, shown);
    const msg = [{ role: "user", content: [{ image: picture(64, 64, 9) }, "What is it?"] }];
    const ok = await model.chat(msg, { ...greedy, maxTokens: 2, requireDevice: "cpu" });
    assert(ok.timeline.stage("image encode")!.devices.CPU, "the encoder ran on the CPU");
    const err = await assertRejects(
      () => model.chat(msg, { ...greedy, maxTokens: 2, requireDevice: "gpu" }),
      PlacementError,
    );
    assert(err.message.includes("image encode"), err.message);
  });
}

Deno.test("idefics3: an image becomes a grid of tiles plus the overview, by its shape", async () => {
  // the fixture has clip.vision.preproc_image_size (as current SmolVLM conversions): mtmd scales
  // every image to a longest edge of 192 pixels, so the grid follows the aspect ratio
  const pair = await familyFixture("smolvlm");
  await using model = await loadModel(pair.model, { threads: THREADS, progress: false, contextSize: 4096 });
  await model.loadProjector(pair.projector);
  const chat = (w: number, h: number) =>
    model.chat([{ role: "user", content: [{ image: picture(w, h, 2) }, "Hi"] }], { ...greedy, maxTokens: 1 });
  const wide = await chat(400, 80);
  const square = await chat(400, 300);
  assert(square.imageTokens > wide.imageTokens, `tiles: ${square.imageTokens} vs ${wide.imageTokens} tokens`);
  const tiles = (r: typeof wide) => r.timeline.stage("image encode")!.graphs;
  assertEquals([tiles(wide), tiles(square)], [3, 5], "2x1 and 2x2 tiles, each with the overview: one graph each");
});

Deno.test("ultravox audio: a WAV the test makes equals llama-mtmd-cli --audio; bad audio is typed", async () => {
  const pair = await familyFixture("ultravox");
  await using model = await loadModel(pair.model, { threads: THREADS, progress: false, contextSize: 4096 });
  const projector = await model.loadProjector(pair.projector);
  assert(projector.info.audio && projector.info.audioSampleRate === 16000, JSON.stringify(projector.info));
  const wav = makeToneWav({ durationMs: 500, sampleRate: 16000 });
  const path = await writeTemp("tone.wav", wav);
  const marker = projector.info.marker;
  const prompt = model.applyChatTemplate([{ role: "user", content: `${marker}What do you hear?` }]);
  const r = await model.chat([{ role: "user", content: [{ audio: path }, "What do you hear?"] }], {
    ...greedy,
    maxTokens: N,
  });
  assertEquals(r.text, await referenceMtmd(pair, [{ audio: path }], prompt), "audio vs llama-mtmd-cli --audio");
  assert(r.audioTokens > 0 && r.imageTokens === 0, `audio tokens ${r.audioTokens}`);
  const encode = r.timeline.stage("audio encode")!;
  assert(encode.graphs >= 1 && encode.devices.CPU, "the audio encode stage and its device");
  const bytes = await model.chat([{ role: "user", content: [{ audio: wav }, "What do you hear?"] }], {
    ...greedy,
    maxTokens: N,
  });
  assertEquals(bytes.tokens, r.tokens, "bytes and path");
  await assertRejects(
    () =>
      model.chat([{ role: "user", content: [{ audio: wav }, "Hi"] }], {
        ...greedy,
        maxTokens: 1,
        requireDevice: "gpu",
      }),
    PlacementError,
  );
  const bad: Array<[string, Uint8Array, string]> = [
    ["truncated", wav.subarray(0, 100), "BAD_FORMAT"],
    ["not audio", new TextEncoder().encode("this is not a sound file at all"), "BAD_FORMAT"],
    ["empty", new Uint8Array(0), "INVALID_ARGUMENT"],
  ];
  for (const [what, data, code] of bad) {
    const e = await assertRejects(
      () => model.chat([{ role: "user", content: [{ audio: data }, "Hi"] }], greedy),
      LoupeError,
    );
    assertEquals(e.code, code, `${what}: ${e.message}`);
  }
  const big = new Uint8Array(65 * 1024 * 1024);
  big.set(wav.subarray(0, 44));
  const e = await assertRejects(
    () => model.chat([{ role: "user", content: [{ audio: big }, "Hi"] }], greedy),
    LoupeError,
  );
  assertEquals(e.code, "INVALID_ARGUMENT", e.message);
  const after = await model.chat([{ role: "user", content: [{ audio: path }, "What do you hear?"] }], {
    ...greedy,
    maxTokens: N,
  });
  assertEquals(after.tokens, r.tokens, "the model goes on after bad audio");
});

Deno.test("audio given to an image-only projector is INVALID_ARGUMENT", async () => {
  const pair = await familyFixture("gemma3");
  await using model = await loadModel(pair.model, { threads: THREADS, progress: false });
  await model.loadProjector(pair.projector);
  const e = await assertRejects(
    () =>
      model.chat(
        [{ role: "user", content: [{ audio: makeToneWav({ durationMs: 200, sampleRate: 16000 }) }, "Hi"] }],
        greedy,
      ),
    LoupeError,
  );
  assertEquals(e.code, "INVALID_ARGUMENT", e.message);
  assert(e.message.includes("no audio encoder"), e.message);
});

for (const name of ["qwen2vl", "gemma3"] as const) {
  Deno.test(`${name}: a session's image conversation equals one chat(); a later turn does not encode again; save/restore`, async () => {
    const pair = await familyFixture(name);
    await using model = await loadModel(pair.model, { threads: THREADS, progress: false, contextSize: 4096 });
    await model.loadProjector(pair.projector);
    const img2 = await writeTemp(`${name}-s2.png`, await encodePng(picture(84, 112, 4)));
    // raw pixels first (kept by a hash of the pixels), then a file (by the SHA-256 of its bytes)
    const u1: VisionMessage = { role: "user", content: [{ image: picture(112, 84, 3) }, "Describe it."] };
    await using s = await model.session({ contextSize: 4096 });
    // the first reply is empty (maxTokens 0), so the one-chat reference holds the same tokens
    const t1 = await s.chat(u1, { ...greedy, maxTokens: 0 });
    assertEquals(t1.text, "");
    assert(t1.imageTokens! > 0 && t1.timeline.stage("image encode"), "the first turn encodes its image");
    const path = join(tmp, `${name}.session`);
    await s.save(path);
    const t2 = await s.chat("Which colour is most common?", { ...greedy, maxTokens: N });
    const ref2 = await model.chat([u1, { role: "assistant", content: "" }, {
      role: "user",
      content: "Which colour is most common?",
    }], { ...greedy, maxTokens: N });
    assertEquals(t2.text, ref2.text, "a text turn after an image, as one chat()");
    assert(!t2.timeline.stage("image encode"), "no encode in the second turn");
    assert(t2.reusedTokens > t1.imageTokens!, `the image's cells are reused (${t2.reusedTokens})`);
    // restored from the file saved after the first turn: the same second turn
    await using restored = await model.loadSession(path);
    const t2b = await restored.chat("Which colour is most common?", { ...greedy, maxTokens: N });
    assertEquals(t2b.text, t2.text, "save/restore changes nothing");
    // a turn with a new image: only the new image is encoded, the rest is kept
    const s3 = await model.session({ contextSize: 4096 });
    await s3.chat(u1, { ...greedy, maxTokens: 0 });
    const u2: VisionMessage = { role: "user", content: ["And this one? ", { image: img2 }] };
    const t3 = await s3.chat(u2, { ...greedy, maxTokens: N });
    const ref3 = await model.chat([u1, { role: "assistant", content: "" }, u2], { ...greedy, maxTokens: N });
    assertEquals(t3.text, ref3.text, "a second image turn, as one chat()");
    assertEquals(t3.timeline.stage("image encode")!.graphs, ref3.timeline.stage("image encode")!.graphs / 2);
    assert(t3.reusedTokens >= t1.imageTokens!, `the first image is kept (${t3.reusedTokens} reused)`);
    await s3.closeAsync();
  });
}

Deno.test("qwen2vl: an image that cannot fit is CONTEXT_OVERFLOW before any encode; a full context is contextFull", async () => {
  const pair = await familyFixture("qwen2vl");
  const big = await writeTemp("big.png", await encodePng(picture(448, 448, 5)));
  {
    await using model = await loadModel(pair.model, { threads: THREADS, progress: false, contextSize: 256 });
    await model.loadProjector(pair.projector);
    const t0 = performance.now();
    const e = await assertRejects(
      () => model.chat([{ role: "user", content: [{ image: big }, "Hi"] }], greedy),
      LoupeError,
    );
    assertEquals(e.code, "CONTEXT_OVERFLOW", e.message);
    assert(e.message.includes("never cut"), e.message);
    console.log(`  refused in ${(performance.now() - t0).toFixed(0)} ms: ${e.message}`);
  }
  // an image that fits, then generation until the context is full: contextFull, no DECODE_FAILED
  await using model = await loadModel(pair.model, { threads: THREADS, progress: false, contextSize: 512 });
  await model.loadProjector(pair.projector);
  const small = await writeTemp("small.png", await encodePng(picture(224, 224, 6)));
  const r = await model.chat([{ role: "user", content: [{ image: small }, "Hi"] }], {
    ...greedy,
    maxTokens: 100000,
    ignoreEos: true,
  });
  assertEquals(r.stopReason, "contextFull");
  assert(
    r.positions < r.imageTokens + r.promptTokens.length,
    `M-RoPE: ${r.imageTokens} image tokens, ${r.positions} positions`,
  );
  // a session at the same edge, with contextShift on: an M-RoPE context cannot shift, it stops
  await using s = await model.session({ contextSize: 512, contextShift: true });
  const t = await s.chat({ role: "user", content: [{ image: small }, "Hi"] }, {
    ...greedy,
    maxTokens: 100000,
    ignoreEos: true,
  });
  assertEquals(t.stopReason, "contextFull");
  const failed = t.timeline.events.find((e) => e.kind === "contextShiftFailed");
  assert(failed && failed.what.includes("M-RoPE"), JSON.stringify(t.timeline.events));
});
