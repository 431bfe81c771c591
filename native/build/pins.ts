/**
 * The pinned engine: llama.cpp release v0.5.0 as built and packaged by node-llama-cpp 3.22.1.
 * Integrity values are the npm registry's sha512 of each tarball; every download is checked
 * against them before it is unpacked.
 */

/** An engine flavour: which prebuilt package (or the from-source build) provides the libraries. */
export type EngineVariant = "cpu" | "vulkan" | "cuda" | "cuda12" | "source";

/** One npm tarball with its pinned integrity. */
export interface PinnedPackage {
  /** npm package name. */
  name: string;
  /** Exact version. */
  version: string;
  /** `sha512-…` integrity of the tarball, as the registry publishes it. */
  integrity: string;
}

/** llama.cpp release the engine is built from. */
export const LLAMA_CPP_RELEASE = "v0.5.0";

/** Commit of the source inside `llama/gitRelease.bundle`. */
export const LLAMA_CPP_COMMIT = "de3ff815ea7d559ee917f063901b8986f038abc6";

/** node-llama-cpp version whose packages carry the engine. */
export const NODE_LLAMA_CPP_VERSION = "3.22.1";

/** The tarball that carries the pinned source as a git bundle. */
export const SOURCE_PACKAGE: PinnedPackage = {
  name: "node-llama-cpp",
  version: NODE_LLAMA_CPP_VERSION,
  integrity: "sha512-bltIipuWmc123H7tMIgDGKSsSrhmhlQYeVUC48XTjVW7XGJJiJJyCdlTMzQ/LiWoPkGDpcL4FviDpgw7qfTiDw==",
};

/** Prebuilt shared libraries per variant. */
export const PREBUILT_PACKAGES: Record<Exclude<EngineVariant, "source">, PinnedPackage> = {
  cpu: {
    name: "@node-llama-cpp/linux-x64",
    version: NODE_LLAMA_CPP_VERSION,
    integrity: "sha512-5uCCDNqWCNfaAm8aR/Uzxbo4HBpKgNF91kCHPepKhgMgV2OAmatoefbOlMihsqCiH2Od35E/eUHQCFbfRBJuOg==",
  },
  vulkan: {
    name: "@node-llama-cpp/linux-x64-vulkan",
    version: NODE_LLAMA_CPP_VERSION,
    integrity: "sha512-bBxqU+JOcBu1nb5Qj2zcMci+JByT1E8EajHvYodyNfVIPkEhXh+/HMwR1/BT7xP08YK0hks+kM8fglER0P8JEg==",
  },
  cuda: {
    name: "@node-llama-cpp/linux-x64-cuda",
    version: NODE_LLAMA_CPP_VERSION,
    integrity: "sha512-8rQCjyNNLZJUFit+YpjwlC4hwkKgOMIkB2wuycKBf8NU2O3ySKbiWZQ8aw9ku2nUTXjSnUIrE6KB88itduTBuA==",
  },
  cuda12: {
    name: "@node-llama-cpp/linux-x64-cuda-ext",
    version: NODE_LLAMA_CPP_VERSION,
    integrity: "sha512-4e5ajkiM2aR2WAdB/N/ACk4weEhHvOAIrzxZPsIX0xDFW5+6hhShuy1/vs88SK9NGdgAco9IyE28eYS0H1efpA==",
  },
};

/** Source folders needed to build our library and the reference tools (and to carry elsewhere). */
export const SOURCE_SUBSET = [
  "CMakeLists.txt",
  "cmake",
  "common",
  "ggml",
  "include",
  "src",
  "tools/CMakeLists.txt",
  "tools/completion",
  "examples/embedding",
  "tools/llama-bench",
  "tools/mtmd",
  "vendor",
  "models",
];

/** plotly.js for the notebook plots (inlined into each plot's HTML output, or loaded from a URL). */
export const PLOTLY_PACKAGE: PinnedPackage = {
  name: "plotly.js-dist-min",
  version: "4.1.2",
  integrity: "sha512-VSmS9KVNun16S8qFYYp9LlL/XBby4ueeGqB+K9AqRCVsup8dSpGULap4UyR1f2mz4pV3qjWp1sR5chwLgIKPoQ==",
};
