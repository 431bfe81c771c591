// The layers hold: every module's imports are read from its source, and a value import that runs
// upward (to a higher layer) or closes a cycle fails, naming the file and the import. Type-only
// imports (`import type`, `export type`, or every name marked `type`) may point anywhere: an
// owner passing itself in is a type back-edge, not a dependency.
import { dirname, join, normalize, relative } from "node:path";
import { assert, assertEquals } from "../support/assert.ts";

const ROOT = normalize(join(dirname(new URL(import.meta.url).pathname), "..", ".."));

/** Layers from the ground up; a module may value-import its own layer and those below. */
export const LAYERS: ReadonlyArray<readonly [prefix: string, rank: number]> = [
  ["native/build/", 0],
  ["ffi/", 1],
  ["src/util/", 2],
  ["src/gguf/", 3],
  ["src/timeline/", 4],
  ["src/fixtures/", 4],
  ["src/engine/", 5],
  ["src/hub/", 5],
  ["src/generate/", 6],
  ["src/chat/", 6],
  ["src/session/", 7],
  ["src/vision/", 7],
  ["src/embed/", 7],
  ["src/model/", 8],
  ["src/notebook/", 9],
  ["src/serve/", 10],
  ["src/children/", 11],
  ["mod.ts", 12],
  ["display.ts", 12],
  ["testing.ts", 12],
];

/** What the public may import: examples and notebooks use these and nothing else. */
const PUBLIC = new Set(["mod.ts", "display.ts", "testing.ts"]);

export interface Import {
  /** The module, relative to the repository root. */
  from: string;
  /** The imported module, relative to the root ("" for a bare or remote specifier). */
  to: string;
  /** The specifier as written. */
  specifier: string;
  /** Whether only types are imported. */
  typeOnly: boolean;
  /** 1-based line. */
  line: number;
}

/** The imports of one module's source (static, re-exports, side effects, dynamic). */
export function importsOf(file: string, source: string): Import[] {
  const out: Import[] = [];
  const code = source.replace(/\/\*[\s\S]*?\*\//g, (m) => m.replace(/[^\n]/g, " "))
    .replace(/(^|[^:"'`\\])\/\/[^\n]*/g, (m, p) => p + " ".repeat(m.length - p.length));
  const add = (index: number, specifier: string, typeOnly: boolean) => {
    const line = code.slice(0, index).split("\n").length;
    const to = specifier.startsWith(".") ? relative(ROOT, normalize(join(ROOT, dirname(file), specifier))) : "";
    out.push({ from: file, to, specifier, typeOnly, line });
  };
  // import/export clauses: `* as x`, `{ … }`, `x`, `x, { … }`, `x, * as y`, then `from "…"`
  const clauseRe = String.raw`(\*(?:\s+as\s+[\w$]+)?|\{[^}]*\}|[\w$]+(?:\s*,\s*(?:\{[^}]*\}|\*\s+as\s+[\w$]+))?)`;
  const statement = new RegExp(String.raw`\b(import|export)\s+(type\s+)?${clauseRe}\s*from\s*["']([^"']+)["']`, "g");
  for (const m of code.matchAll(statement)) {
    const clause = m[3];
    const names = clause.match(/\{([\s\S]*)\}/)?.[1].split(",").map((n) => n.trim()).filter(Boolean);
    const defaultOrStar = clause.replace(/\{[\s\S]*\}/, "").replace(/,/g, "").trim();
    const allTypes = !!m[2] || (!defaultOrStar && !!names && names.length > 0 && names.every((n) => /^type\s/.test(n)));
    add(m.index!, m[4], allTypes);
  }
  for (const m of code.matchAll(/\bimport\s*["']([^"']+)["']/g)) add(m.index!, m[1], false);
  for (const m of code.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)) add(m.index!, m[1], false);
  return out;
}

export function rankOf(file: string): number | null {
  for (const [prefix, rank] of LAYERS) if (file === prefix || file.startsWith(prefix)) return rank;
  return null;
}

async function modules(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(join(ROOT, dir))) {
    const path = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory && !e.name.startsWith(".") && !["tests", "notebooks", "examples"].includes(path)) {
      out.push(...await modules(path));
    } else if (e.isFile && e.name.endsWith(".ts")) out.push(path);
  }
  return out.sort();
}

/** Every rule the layers break: upward value imports, ffi/ reaching out, value cycles. */
export function violations(graph: Map<string, Import[]>): string[] {
  const found: string[] = [];
  for (const [file, imports] of graph) {
    const rank = rankOf(file);
    if (rank === null) {
      found.push(`${file} is in no layer: add its folder to LAYERS in tests/unit/layers_test.ts`);
      continue;
    }
    for (const i of imports) {
      if (!i.to || i.typeOnly) continue;
      const target = rankOf(i.to);
      if (file.startsWith("ffi/") && !i.to.startsWith("ffi/")) {
        found.push(`${file}:${i.line} imports "${i.specifier}": ffi/ is a leaf and imports only ffi/`);
      } else if (target === null) {
        found.push(`${file}:${i.line} imports "${i.specifier}", which is in no layer`);
      } else if (target > rank) {
        found.push(`${file}:${i.line} imports "${i.specifier}" upward (layer ${rank} -> ${target})`);
      }
    }
  }
  // cycles of value imports (depth-first search, white/grey/black)
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, 1);
    stack.push(file);
    for (const i of graph.get(file) ?? []) {
      if (!i.to || i.typeOnly || !graph.has(i.to)) continue;
      if (state.get(i.to) === 1) {
        const cycle = stack.slice(stack.indexOf(i.to));
        found.push(`cycle: ${[...cycle, i.to].join(" -> ")} (closed by ${file}:${i.line})`);
      } else if (!state.has(i.to)) visit(i.to);
    }
    stack.pop();
    state.set(file, 2);
  };
  for (const file of graph.keys()) if (!state.has(file)) visit(file);
  return found;
}

Deno.test("the import reader sees static, re-exported, side-effect and dynamic imports, and type-only ones", () => {
  const src = `import { a, type B } from "./a.ts";
import type { C } from "../c.ts";
export { type D, type E } from "./d.ts";
export * from "./e.ts";
import "./side.ts";
// import { x } from "./commented.ts";
const m = await import("./lazy.ts");`;
  const found = importsOf("src/x/m.ts", src).map((i) => [i.to, i.typeOnly]);
  assertEquals(found, [
    ["src/x/a.ts", false],
    ["src/c.ts", true],
    ["src/x/d.ts", true],
    ["src/x/e.ts", false],
    ["src/x/side.ts", false],
    ["src/x/lazy.ts", false],
  ]);
});

Deno.test("the rules catch an upward import, ffi/ reaching out, and a cycle", () => {
  const g = new Map<string, Import[]>([
    ["ffi/a.ts", importsOf("ffi/a.ts", `import { p } from "../src/util/errors.ts";`)],
    ["src/util/errors.ts", importsOf("src/util/errors.ts", `import { m } from "../model/model.ts";`)],
    ["src/model/model.ts", importsOf("src/model/model.ts", `import { e } from "../util/errors.ts";`)],
    ["src/session/s.ts", importsOf("src/session/s.ts", `import type { Model } from "../model/model.ts";`)],
  ]);
  const v = violations(g);
  assert(v.some((s) => s.startsWith("ffi/a.ts:1") && s.includes("leaf")), v.join("\n"));
  assert(v.some((s) => s.startsWith("src/util/errors.ts:1") && s.includes("upward (layer 2 -> 8)")), v.join("\n"));
  assert(v.some((s) => s.startsWith("cycle: ") && s.includes("src/model/model.ts")), v.join("\n"));
  assert(!v.some((s) => s.startsWith("src/session/")), "a type-only back-edge is allowed");
});

Deno.test("the library's layers import only downward, with no cycle", async () => {
  const graph = new Map<string, Import[]>();
  for (const file of await modules("")) {
    graph.set(file, importsOf(file, await Deno.readTextFile(join(ROOT, file))));
  }
  assert(graph.size > 40, `read ${graph.size} modules`);
  assertEquals(violations(graph), []);
});

Deno.test("examples and notebooks use the public exports only", async () => {
  const bad: string[] = [];
  for await (const e of Deno.readDir(join(ROOT, "examples"))) {
    if (!e.name.endsWith(".ts")) continue;
    const file = `examples/${e.name}`;
    for (const i of importsOf(file, await Deno.readTextFile(join(ROOT, file)))) {
      if (i.to && !PUBLIC.has(i.to)) bad.push(`${file}:${i.line} imports "${i.specifier}"`);
    }
  }
  for await (const e of Deno.readDir(join(ROOT, "notebooks"))) {
    if (!e.name.endsWith(".ipynb")) continue;
    const nb = JSON.parse(await Deno.readTextFile(join(ROOT, "notebooks", e.name)));
    for (const cell of nb.cells) {
      if (cell.cell_type !== "code") continue;
      const source = [cell.source].flat().join("");
      for (const i of importsOf(`notebooks/${e.name}`, source)) {
        const to = i.specifier.replace(/^(\.\.\/|\.\/loupe\/)/, "");
        if (i.specifier.startsWith(".") && !PUBLIC.has(to)) bad.push(`notebooks/${e.name} imports "${i.specifier}"`);
      }
    }
  }
  assertEquals(bad, []);
});
