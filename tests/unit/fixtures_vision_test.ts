// The projector fixtures: deterministic files in the layout mtmd loads, presets of the right shapes.
import { join } from "node:path";
import { assert, assertEquals, assertThrows } from "../support/assert.ts";
import { readGGUFFile } from "../../src/gguf/gguf.ts";
import { FIXTURE_PRESETS } from "../../src/fixtures/text.ts";
import {
  makeProjector,
  projectorPresetOptions,
  projectorTensors,
  resolveProjectorOptions,
} from "../../src/fixtures/vision.ts";

Deno.test("makeProjector writes the same bytes for the same options, in mtmd's mlp layout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "loupe-proj-" });
  try {
    const options = { nEmbdText: 48, nEmbd: 32, nLayer: 2, nHead: 2, imageSize: 28, seed: 7 };
    const a = await makeProjector(join(dir, "a.gguf"), options);
    const b = await makeProjector(join(dir, "b.gguf"), options);
    const c = await makeProjector(join(dir, "c.gguf"), { ...options, seed: 8 });
    assertEquals(a.sha256, b.sha256);
    assert(a.sha256 !== c.sha256, "another seed, other weights");
    assertEquals(a.nImageTokens, 4);
    const file = await readGGUFFile(a.path);
    const str = (k: string) => file.kv.get(k)?.value;
    assertEquals([str("general.architecture"), str("clip.projector_type")], ["clip", "mlp"]);
    assertEquals([str("clip.has_vision_encoder"), str("clip.vision.image_size"), str("clip.vision.patch_size")], [
      true,
      28,
      14,
    ]);
    const expected = projectorTensors(resolveProjectorOptions(options));
    assertEquals(file.tensors.map((t) => t.name), expected.map((t) => t.name));
    for (const [i, t] of file.tensors.entries()) assertEquals(t.dims.map(Number), expected[i].dims, t.name);
    const out = file.tensors.find((t) => t.name === "mm.2.weight")!;
    assertEquals(Number(out.dims[1]), 48, "the projection's output is the text model's width");
    assertEquals(file.tensors.find((t) => t.name === "v.position_embd.weight")!.dims.map(Number), [32, 5]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("projector presets: tiny for the tiny model, CLIP ViT-L/14-336 shapes for the bench model", () => {
  const tiny = projectorPresetOptions("tiny");
  assertEquals(tiny.nEmbdText, 64);
  const l = projectorPresetOptions("clip-vit-l-336");
  assertEquals([l.nLayer, l.nEmbd, l.nHead, l.nFf, l.imageSize, l.patchSize, l.type], [
    24,
    1024,
    16,
    4096,
    336,
    14,
    "f16",
  ]);
  assertEquals(l.nEmbdText, FIXTURE_PRESETS.bench.nEmbd);
  assertEquals((l.imageSize / l.patchSize) ** 2, 576);
});

Deno.test("projector options are checked", () => {
  assertThrows(() => resolveProjectorOptions({ nEmbdText: 0 }), RangeError, "nEmbdText");
  assertThrows(() => resolveProjectorOptions({ nEmbdText: 8, nEmbd: 30, nHead: 4 }), RangeError, "heads");
  assertThrows(() => resolveProjectorOptions({ nEmbdText: 8, imageSize: 30 }), RangeError, "multiple of 14");
  assertThrows(() => resolveProjectorOptions({ nEmbdText: 8, nLayer: 1 }), RangeError, "at least 2");
});
