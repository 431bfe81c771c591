// The hand-kept FFI symbol table must match native/loupe.h: names, parameter and result types,
// and which calls are nonblocking (the header marks them "nonblocking."). Every declaration must
// be exported (LOUPE_API: libloupe is compiled with -fvisibility=hidden) and named as loupe.h's
// conventions say (the prefix names the handle acted on, the context comes first).
import { assertEquals } from "../support/assert.ts";
import { symbols } from "../../ffi/symbols.ts";

interface CDecl {
  name: string;
  result: string;
  params: string[];
  nonblocking: boolean;
  /** Marked LOUPE_API (exported from libloupe). */
  exported: boolean;
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
    const start = line.match(/^(LOUPE_API\s+)?([A-Za-z_][\w\s]*?[\s*]+)(loupe_\w+)\(/);
    if (!start) {
      if (line.trim() === "") comment = [];
      continue;
    }
    let decl = line;
    while (!decl.includes(");")) decl += " " + lines[++i].trim();
    const params = decl.slice(decl.indexOf("(") + 1, decl.lastIndexOf(")")).split(",").map((p) => p.trim())
      .filter((p) => p !== "" && p !== "void");
    decls.push({
      name: start[3],
      result: start[2].trim(),
      params,
      nonblocking: comment.some((c) => /\bnonblocking\b/.test(c)),
      exported: start[1] !== undefined,
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
    if (!d.exported) problems.push(`${d.name}: declared without LOUPE_API, so libloupe does not export it`);
  }
  return problems;
}

/** The handle type a C type points to ("model" for `const loupe_model *`), or null. */
function handleOf(cType: string): string | null {
  return cType.match(/^(?:const\s+)?loupe_(\w+)\s*\*\s*\w*$/)?.[1] ?? null;
}

/**
 * Names against loupe.h's conventions: a function taking a handle first is named after it
 * (loupe_<handle>_*), or after the handle it returns (a constructor such as loupe_ctx_create);
 * a context among other handles comes first.
 */
export function namingProblems(decls: CDecl[]): string[] {
  const problems: string[] = [];
  for (const d of decls) {
    const handles = d.params.map(handleOf);
    const first = handles[0] ?? null;
    const made = handleOf(d.result);
    const named = (h: string | null) => h !== null && d.name.startsWith(`loupe_${h}_`);
    if ((first !== null || made !== null) && !named(first) && !named(made)) {
      problems.push(`${d.name}: named after neither its first handle (${first}) nor the handle it returns (${made})`);
    }
    if (handles.indexOf("ctx") > 0) problems.push(`${d.name}: the context is not the first argument`);
  }
  return problems;
}

// The public headers: native/loupe.h and any native/loupe_<feature>.h (not the internal one).
let header = "";
for await (const e of Deno.readDir(new URL("../../native/", import.meta.url))) {
  if (/^loupe(_\w+)?\.h$/.test(e.name) && e.name !== "loupe_internal.h") {
    header += await Deno.readTextFile(new URL(`../../native/${e.name}`, import.meta.url)) + "\n";
  }
}

Deno.test("symbol table matches the public headers in native/", () => {
  const decls = parseHeader(header);
  assertEquals(decls.length > 15, true, "the header parser found the declarations");
  assertEquals(compareTable(decls, symbols), []);
  assertEquals(namingProblems(decls), []);
});

Deno.test("symbol table check catches a declaration without LOUPE_API", () => {
  const hidden = header.replace("LOUPE_API int32_t loupe_abi_version(void);", "int32_t loupe_abi_version(void);");
  assertEquals(hidden !== header, true, "the declaration was found");
  assertEquals(compareTable(parseHeader(hidden), symbols), [
    "loupe_abi_version: declared without LOUPE_API, so libloupe does not export it",
  ]);
});

Deno.test("naming check catches a prefix that is not the first handle's and a context not first", () => {
  const decls = parseHeader([
    "LOUPE_API int32_t loupe_tokenize(loupe_model * model, const char * text, int32_t len);",
    "LOUPE_API int32_t loupe_projector_gen_begin(loupe_projector * proj, loupe_ctx * ctx, const char * params_json);",
    "LOUPE_API loupe_ctx * loupe_ctx_create(loupe_model * model, const char * params_json);",
    "LOUPE_API loupe_ctx * loupe_model_context(loupe_model * model);",
    "LOUPE_API char * loupe_init(const char * engine_dir);",
  ].join("\n\n"));
  assertEquals(decls.length, 5);
  assertEquals(namingProblems(decls), [
    "loupe_tokenize: named after neither its first handle (model) nor the handle it returns (null)",
    "loupe_projector_gen_begin: the context is not the first argument",
  ]);
});

Deno.test("symbol table check catches a wrong return type", () => {
  const broken = { ...symbols, loupe_abi_version: { parameters: [], result: "i64" } };
  const problems = compareTable(parseHeader(header), broken);
  assertEquals(problems, ["loupe_abi_version: result i64, header says int32_t"]);
});

Deno.test("symbol table check catches a missing nonblocking flag and a wrong parameter", () => {
  const broken = {
    ...symbols,
    loupe_ctx_gen_step: { parameters: ["pointer", "i64", "i32"], result: "i32" },
  };
  const problems = compareTable(parseHeader(header), broken);
  assertEquals(problems, [
    'loupe_ctx_gen_step: parameters ["pointer","i64","i32"], header says ["pointer","i32","i32"]',
    "loupe_ctx_gen_step: nonblocking false, header says true",
  ]);
});
