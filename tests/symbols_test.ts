// The hand-kept FFI symbol table must match native/loupe.h: names, parameter and result types,
// and which calls are nonblocking (the header marks them "nonblocking.").
import { assertEquals } from "./assert.ts";
import { symbols } from "../ffi/symbols.ts";

interface CDecl {
  name: string;
  result: string;
  params: string[];
  nonblocking: boolean;
}

/** Parses the function declarations of a C header (one prototype each, possibly over several lines). */
export function parseHeader(text: string): CDecl[] {
  const decls: CDecl[] = [];
  const lines = text.split("\n");
  let comment: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.startsWith("//")) {
      comment.push(line);
      continue;
    }
    const start = line.match(/^([A-Za-z_][\w\s]*?[\s*]+)(loupe_\w+)\(/);
    if (!start) {
      if (line.trim() === "") comment = [];
      continue;
    }
    let decl = line;
    while (!decl.includes(");")) decl += " " + lines[++i].trim();
    const params = decl.slice(decl.indexOf("(") + 1, decl.lastIndexOf(")")).split(",").map((p) => p.trim())
      .filter((p) => p !== "" && p !== "void");
    decls.push({
      name: start[2],
      result: start[1].trim(),
      params,
      nonblocking: comment.some((c) => /\bnonblocking\b/.test(c)),
    });
    comment = [];
  }
  return decls;
}

/** The FFI type a C type must have. Pointers may be "pointer" or "buffer". */
export function ffiKind(cType: string): string {
  const t = cType.replace(/\b(const|struct)\b/g, "").trim();
  if (t.includes("*")) return "pointer";
  const map: Record<string, string> = {
    int32_t: "i32",
    uint32_t: "u32",
    int64_t: "i64",
    float: "f32",
    double: "f64",
    void: "void",
    size_t: "usize",
  };
  const base = t.split(/\s+/)[0];
  if (!(base in map)) throw new Error(`Unmapped C type "${cType}"`);
  return map[base];
}

function normalise(ffi: string): string {
  return ffi === "buffer" ? "pointer" : ffi;
}

/** Differences between a header and a symbol table, as readable lines. */
export function compareTable(
  decls: CDecl[],
  table: Record<string, { parameters: readonly string[]; result: string; nonblocking?: boolean }>,
): string[] {
  const problems: string[] = [];
  const declared = new Map(decls.map((d) => [d.name, d]));
  for (const [name, sym] of Object.entries(table)) {
    const d = declared.get(name);
    if (!d) {
      problems.push(`${name}: in the symbol table but not in loupe.h`);
      continue;
    }
    const want = d.params.map((p) => ffiKind(p.replace(/\s*\w+$/, "")));
    const got = sym.parameters.map(normalise);
    if (JSON.stringify(want) !== JSON.stringify(got)) {
      problems.push(`${name}: parameters ${JSON.stringify(got)}, header says ${JSON.stringify(want)}`);
    }
    if (ffiKind(d.result) !== normalise(sym.result)) {
      problems.push(`${name}: result ${sym.result}, header says ${d.result}`);
    }
    if ((sym.nonblocking ?? false) !== d.nonblocking) {
      problems.push(`${name}: nonblocking ${sym.nonblocking ?? false}, header says ${d.nonblocking}`);
    }
  }
  for (const d of decls) {
    if (!(d.name in table)) problems.push(`${d.name}: declared in loupe.h but missing from the symbol table`);
  }
  return problems;
}

// The public headers: native/loupe.h and any native/loupe_<feature>.h (not the internal one).
let header = "";
for await (const e of Deno.readDir(new URL("../native/", import.meta.url))) {
  if (/^loupe(_\w+)?\.h$/.test(e.name) && e.name !== "loupe_internal.h") {
    header += await Deno.readTextFile(new URL(`../native/${e.name}`, import.meta.url)) + "\n";
  }
}

Deno.test("symbol table matches the public headers in native/", () => {
  const decls = parseHeader(header);
  assertEquals(decls.length > 15, true, "the header parser found the declarations");
  assertEquals(compareTable(decls, symbols), []);
});

Deno.test("symbol table check catches a wrong return type", () => {
  const broken = { ...symbols, loupe_abi_version: { parameters: [], result: "i64" } };
  const problems = compareTable(parseHeader(header), broken);
  assertEquals(problems, ["loupe_abi_version: result i64, header says int32_t"]);
});

Deno.test("symbol table check catches a missing nonblocking flag and a wrong parameter", () => {
  const broken = {
    ...symbols,
    loupe_gen_step: { parameters: ["pointer", "i64", "i32"], result: "i32" },
  };
  const problems = compareTable(parseHeader(header), broken);
  assertEquals(problems, [
    'loupe_gen_step: parameters ["pointer","i64","i32"], header says ["pointer","i32","i32"]',
    "loupe_gen_step: nonblocking false, header says true",
  ]);
});
