// vision.cpp — projectors (mtmd contexts with measured CLIP graphs), images decoded by the
// engine's own decoder after their headers are checked, the multimodal prompt evaluated into a
// loupe_ctx in measured stages, and the Vulkan loader's driver list. See loupe_vision.h.

#include "loupe_internal.h"
#include "loupe_vision.h"

#include "gguf.h"
#include "mtmd-helper.h"
#include "mtmd.h"
#include "stb/stb_image.h"

#include <dlfcn.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>

struct loupe_projector : loupe::error_holder, loupe::measured {
    loupe_model * model = nullptr;  // not owned; must outlive the projector
    json params;
    mtmd_context * mctx = nullptr;
    std::atomic<float> progress{ 0.0f };
    std::atomic<bool> cancel{ false };
    std::string device;             // the device the encoder was given ("CPU" when none)
    std::string projector_type;
    uint32_t image_size = 0;
    uint32_t patch_size = 0;
    int32_t n_threads = 4;
    int64_t load_us = 0;
    std::map<std::string, loupe::stage_stats> stages;  // warm-up, and the last prefill's encoder stages
    std::string info;
    std::string output;
    loupe_ctx * prefilled = nullptr;  // the context the last prefill filled, and its position after
    int32_t prefill_n_past = 0;

    ~loupe_projector() {
        if (mctx) {
            mtmd_free(mctx);
        }
    }
};

struct loupe_image {
    mtmd_bitmap * bitmap = nullptr;
    uint32_t width = 0;
    uint32_t height = 0;
    int64_t decode_us = 0;
    std::string format;

    ~loupe_image() {
        if (bitmap) {
            mtmd_bitmap_free(bitmap);
        }
    }
};

namespace loupe {
namespace {

// mtmd logs through its own logger: send it to the engine's (loupe's) log callback once.
void route_mtmd_logs() {
    static std::once_flag once;
    std::call_once(once, [] {
        ggml_log_callback cb = nullptr;
        void * ud = nullptr;
        llama_log_get(&cb, &ud);
        if (cb) {
            mtmd_helper_log_set(cb, ud);
        }
    });
}

bool projector_progress(float p, void * data) {
    auto * proj = static_cast<loupe_projector *>(data);
    proj->progress.store(p);
    return !proj->cancel.load();
}

// Reads a few keys of the projector's GGUF header (without tensor data).
void read_projector_header(loupe_projector * p, const std::string & path) {
    gguf_init_params gp = { /* no_alloc */ true, /* ctx */ nullptr };
    gguf_context * g = gguf_init_from_file(path.c_str(), gp);
    if (!g) {
        return;
    }
    auto u32 = [&](const char * key) -> uint32_t {
        int64_t i = gguf_find_key(g, key);
        return i >= 0 && gguf_get_kv_type(g, i) == GGUF_TYPE_UINT32 ? gguf_get_val_u32(g, i) : 0;
    };
    auto str = [&](const char * key) -> std::string {
        int64_t i = gguf_find_key(g, key);
        return i >= 0 && gguf_get_kv_type(g, i) == GGUF_TYPE_STRING ? gguf_get_val_str(g, i) : "";
    };
    p->projector_type = str("clip.projector_type");
    if (p->projector_type.empty()) {
        p->projector_type = str("clip.vision.projector_type");
    }
    p->image_size = u32("clip.vision.image_size");
    p->patch_size = u32("clip.vision.patch_size");
    gguf_free(g);
}

// ---- images --------------------------------------------------------------------------

bool starts_with(const uint8_t * d, size_t n, const char * magic, size_t m, size_t at = 0) {
    return n >= at + m && std::memcmp(d + at, magic, m) == 0;
}

// The format named by the first bytes: one of the four decoded, another known one, or "".
std::string sniff_format(const uint8_t * d, size_t n) {
    if (starts_with(d, n, "\xFF\xD8\xFF", 3)) return "JPEG";
    if (starts_with(d, n, "\x89PNG\r\n\x1A\n", 8)) return "PNG";
    if (starts_with(d, n, "GIF87a", 6) || starts_with(d, n, "GIF89a", 6)) return "GIF";
    if (starts_with(d, n, "BM", 2)) return "BMP";
    if (starts_with(d, n, "RIFF", 4) && starts_with(d, n, "WEBP", 4, 8)) return "WebP";
    if (starts_with(d, n, "RIFF", 4) && starts_with(d, n, "WAVE", 4, 8)) return "WAV audio";
    if (starts_with(d, n, "II*\0", 4) || starts_with(d, n, "MM\0*", 4)) return "TIFF";
    if (starts_with(d, n, "ftypavif", 8, 4)) return "AVIF";
    if (starts_with(d, n, "ftyphei", 7, 4) || starts_with(d, n, "ftypmif1", 8, 4)) return "HEIF";
    if (starts_with(d, n, "ftyp", 4, 4)) return "MP4/QuickTime";
    if (starts_with(d, n, "\x00\x00\x00\x0CjP  ", 8)) return "JPEG 2000";
    if (starts_with(d, n, "8BPS", 4)) return "Photoshop";
    if (starts_with(d, n, "%PDF", 4)) return "PDF";
    if (starts_with(d, n, "GGUF", 4)) return "GGUF";
    if (starts_with(d, n, "fLaC", 4)) return "FLAC audio";
    if (starts_with(d, n, "ID3", 3)) return "MP3 audio";
    if (starts_with(d, n, "<svg", 4) || starts_with(d, n, "<?xml", 5)) return "SVG/XML";
    return "";
}

// A JPEG is complete when an end-of-image marker follows its last start-of-scan. (In entropy-
// coded data 0xFF is always followed by 0x00 or a restart marker, so the markers are exact.)
bool jpeg_complete(const uint8_t * d, size_t n) {
    size_t last_sos = 0;
    bool found = false;
    for (size_t i = 0; i + 1 < n; i++) {
        if (d[i] == 0xFF && d[i + 1] == 0xDA) {
            last_sos = i;
            found = true;
        }
    }
    if (!found) {
        return false;
    }
    for (size_t i = last_sos + 2; i + 1 < n; i++) {
        if (d[i] == 0xFF && d[i + 1] == 0xD9) {
            return true;
        }
    }
    return false;
}

uint32_t be16(const uint8_t * p) { return (uint32_t) p[0] << 8 | p[1]; }
uint32_t be32(const uint8_t * p) { return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3]; }
uint32_t le16(const uint8_t * p) { return (uint32_t) p[0] | (uint32_t) p[1] << 8; }
int32_t le32(const uint8_t * p) { return (int32_t) ((uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24); }

// The size a file declares in its header, read before any decoder allocates pixels.
// Returns false when the header is too short or malformed to tell.
bool declared_size(const std::string & fmt, const uint8_t * d, size_t n, int64_t & w, int64_t & h) {
    if (fmt == "PNG") {
        if (n < 24 || std::memcmp(d + 12, "IHDR", 4) != 0) return false;
        w = be32(d + 16);
        h = be32(d + 20);
        return true;
    }
    if (fmt == "GIF") {
        if (n < 10) return false;
        w = le16(d + 6);
        h = le16(d + 8);
        return true;
    }
    if (fmt == "BMP") {
        if (n < 26) return false;
        int32_t header = le32(d + 14);
        if (header == 12) {
            w = le16(d + 18);
            h = le16(d + 20);
        } else {
            w = le32(d + 18);
            h = std::abs((int64_t) le32(d + 22));
        }
        return true;
    }
    if (fmt == "JPEG") {
        // walk the markers to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC)
        size_t i = 2;
        while (i + 4 <= n) {
            if (d[i] != 0xFF) return false;
            uint8_t m = d[i + 1];
            if (m == 0xFF) { i++; continue; }
            if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
            size_t seg = be16(d + i + 2);
            if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
                if (i + 9 > n) return false;
                h = be16(d + i + 5);
                w = be16(d + i + 7);
                return true;
            }
            if (m == 0xDA || seg < 2) return false;
            i += 2 + seg;
        }
        return false;
    }
    return false;
}

// Whether the data holds all that the header announces (stb_image decodes truncated BMP and GIF
// data without complaint, filling the rest with zeros).
bool complete(const std::string & fmt, const uint8_t * d, size_t n) {
    if (fmt == "JPEG") {
        return jpeg_complete(d, n);
    }
    if (fmt == "BMP") {
        if (n < 34) return false;
        const uint32_t offset = (uint32_t) le32(d + 10);
        const int32_t header = le32(d + 14);
        if (header == 12) return true;  // OS/2 bitmaps: leave it to the decoder
        const int32_t compression = le32(d + 30);
        if (compression != 0 && compression != 3) return true;  // RLE: sizes vary
        const int64_t w = le32(d + 18);
        const int64_t h = std::abs((int64_t) le32(d + 22));
        const int64_t bpp = le16(d + 28);
        const int64_t stride = ((w * bpp + 31) / 32) * 4;
        return (int64_t) offset + stride * h <= (int64_t) n;
    }
    if (fmt == "GIF") {
        // header, logical screen, global table, then blocks up to the end of the first image
        if (n < 13) return false;
        size_t i = 13;
        if (d[10] & 0x80) i += 3u << ((d[10] & 7) + 1);
        auto skip_sub_blocks = [&](size_t & j) {
            while (j < n) {
                uint8_t len = d[j++];
                if (len == 0) return true;
                j += len;
            }
            return false;
        };
        while (i < n) {
            if (d[i] == 0x21) {  // extension: label, then sub-blocks
                i += 2;
                if (!skip_sub_blocks(i)) return false;
            } else if (d[i] == 0x2C) {  // image: descriptor, local table, LZW size, sub-blocks
                if (i + 10 > n) return false;
                uint8_t packed = d[i + 9];
                i += 10;
                if (packed & 0x80) i += 3u << ((packed & 7) + 1);
                i += 1;
                return skip_sub_blocks(i);
            } else {
                return false;  // a trailer or anything else before the first image
            }
        }
        return false;
    }
    return true;  // PNG: the decoder checks its own chunks and stream
}

loupe_image * decode_image(const uint8_t * data, size_t len, std::string & err) {
    route_mtmd_logs();
    if (!data || len == 0) {
        err = "size: the image is empty (0 bytes)";
        return nullptr;
    }
    std::string fmt = sniff_format(data, len);
    if (fmt != "JPEG" && fmt != "PNG" && fmt != "GIF" && fmt != "BMP") {
        err = std::string("format: ") + (fmt.empty() ? "not a recognised image format" : fmt + " is not supported") +
              " (loupe decodes JPEG, PNG, BMP and GIF)";
        return nullptr;
    }
    if (len > (size_t) INT_MAX) {
        err = "size: the encoded " + fmt + " is larger than 2 GiB";
        return nullptr;
    }
    // the declared size first: nothing is allocated for an image loupe would refuse
    int64_t w = 0;
    int64_t h = 0;
    if (!declared_size(fmt, data, len, w, h)) {
        err = "corrupt: the " + fmt + " header is truncated or malformed (no image size in it)";
        return nullptr;
    }
    const std::string dims = std::to_string(w) + "x" + std::to_string(h);
    if (w <= 0 || h <= 0) {
        err = "size: the " + fmt + " declares a zero size (" + dims + ")";
        return nullptr;
    }
    if (w > LOUPE_IMAGE_MAX_SIDE || h > LOUPE_IMAGE_MAX_SIDE || w * h > LOUPE_IMAGE_MAX_PIXELS) {
        err = "size: the " + fmt + " declares " + dims + " pixels, more than loupe decodes (at most " +
              std::to_string(LOUPE_IMAGE_MAX_SIDE) + " per side and " + std::to_string(LOUPE_IMAGE_MAX_PIXELS) +
              " pixels)";
        return nullptr;
    }
    int x = 0;
    int y = 0;
    int comp = 0;
    if (!stbi_info_from_memory(data, (int) len, &x, &y, &comp)) {
        const char * why = stbi_failure_reason();
        err = "corrupt: the " + fmt + " header cannot be read" + (why ? std::string(" (") + why + ")" : "");
        return nullptr;
    }
    if (!complete(fmt, data, len)) {
        err = "corrupt: the " + fmt + " data is truncated" +
              (fmt == "JPEG" ? std::string(" (no end-of-image marker after its last scan)") : std::string(" (it ends before the pixel data it announces)"));
        return nullptr;
    }
    int64_t t0 = now_us();
    mtmd_helper_bitmap_wrapper res = mtmd_helper_bitmap_init_from_buf(nullptr, data, len, false, mtmd_helper_init_opt_default());
    if (!res.bitmap) {
        const char * why = stbi_failure_reason();
        err = "corrupt: the engine's decoder rejected the " + fmt + " data" + (why ? std::string(" (") + why + ")" : "");
        return nullptr;
    }
    auto img = std::make_unique<loupe_image>();
    img->bitmap = res.bitmap;
    img->width = mtmd_bitmap_get_nx(res.bitmap);
    img->height = mtmd_bitmap_get_ny(res.bitmap);
    img->format = fmt;
    img->decode_us = now_us() - t0;
    return img.release();
}

size_t count_markers(const std::string & text, const std::string & marker) {
    size_t n = 0;
    for (size_t pos = text.find(marker); pos != std::string::npos; pos = text.find(marker, pos + marker.size())) {
        n++;
    }
    return n;
}

// Encodes one image chunk, measured into `stage` on the projector's device table. Raising `stop`
// cuts the running encode short (see loupe::measured::stop): then LOUPE_ERR_ABORTED, with no
// message set (the caller words it).
int32_t encode_chunk(loupe_projector * p, const mtmd_input_chunk * chunk, stage_stats & stage,
                     const std::atomic<bool> & stop) {
    log_capture cap;
    p->cur_stage = &stage;
    p->stop = &stop;
    p->since_check = 0;
    int64_t t0 = now_us();
    int32_t rc = mtmd_encode_chunk(p->mctx, chunk);
    stage.wall_us += now_us() - t0;
    p->cur_stage = nullptr;
    p->stop = nullptr;
    if (stop.load()) {
        return LOUPE_ERR_ABORTED;
    }
    if (rc != 0) {
        return p->set_error(LOUPE_ERR_DECODE, "the image encoder failed" + (cap.lines.empty() ? "" : ": " + cap.lines));
    }
    stage.graphs += 1;
    stage.tokens += (int64_t) mtmd_input_chunk_get_n_tokens(chunk);
    return LOUPE_OK;
}

// ---- Vulkan loader -------------------------------------------------------------------

// The few Vulkan structures needed, laid out as in vulkan_core.h.
struct vk_app_info {
    int32_t sType;  // VK_STRUCTURE_TYPE_APPLICATION_INFO = 0
    const void * pNext;
    const char * pApplicationName;
    uint32_t applicationVersion;
    const char * pEngineName;
    uint32_t engineVersion;
    uint32_t apiVersion;
};

struct vk_instance_info {
    int32_t sType;  // VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO = 1
    const void * pNext;
    uint32_t flags;
    const vk_app_info * pApplicationInfo;
    uint32_t enabledLayerCount;
    const char * const * ppEnabledLayerNames;
    uint32_t enabledExtensionCount;
    const char * const * ppEnabledExtensionNames;
};

struct vk_driver_props {
    int32_t sType;  // VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES = 1000196000
    void * pNext;
    uint32_t driverID;
    char driverName[256];
    char driverInfo[256];
    uint8_t conformanceVersion[4];
};

struct vk_props2 {
    int32_t sType;  // VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2 = 1000059001
    void * pNext;
    alignas(8) unsigned char properties[4096];  // VkPhysicalDeviceProperties (about 824 bytes)
};

using vk_fn = void (*)(void);
using vk_get_instance_proc_addr_t = vk_fn (*)(void *, const char *);
using vk_create_instance_t = int32_t (*)(const vk_instance_info *, const void *, void **);
using vk_destroy_instance_t = void (*)(void *, const void *);
using vk_enumerate_devices_t = int32_t (*)(void *, uint32_t *, void **);
using vk_get_props_t = void (*)(void *, void *);
using vk_enumerate_version_t = int32_t (*)(uint32_t *);

std::string version_string(uint32_t v) {
    return std::to_string(v >> 22) + "." + std::to_string((v >> 12) & 0x3FF) + "." + std::to_string(v & 0xFFF);
}

json vulkan_drivers() {
    json out = json::array();
    void * lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        return out;
    }
    auto gipa = (vk_get_instance_proc_addr_t) dlsym(lib, "vkGetInstanceProcAddr");
    if (!gipa) {
        dlclose(lib);
        return out;
    }
    uint32_t loader_version = 0x400000;  // 1.0
    if (auto ev = (vk_enumerate_version_t) gipa(nullptr, "vkEnumerateInstanceVersion")) {
        ev(&loader_version);
    }
    const bool v11 = loader_version >= ((1u << 22) | (1u << 12));
    vk_app_info app = { 0, nullptr, "loupe", 1, "loupe", 1, v11 ? ((1u << 22) | (1u << 12)) : (1u << 22) };
    vk_instance_info ci = { 1, nullptr, 0, &app, 0, nullptr, 0, nullptr };
    auto create = (vk_create_instance_t) gipa(nullptr, "vkCreateInstance");
    void * instance = nullptr;
    if (!create || create(&ci, nullptr, &instance) != 0 || !instance) {
        dlclose(lib);
        return out;
    }
    auto destroy = (vk_destroy_instance_t) gipa(instance, "vkDestroyInstance");
    auto enumerate = (vk_enumerate_devices_t) gipa(instance, "vkEnumeratePhysicalDevices");
    auto props1 = (vk_get_props_t) gipa(instance, "vkGetPhysicalDeviceProperties");
    auto props2 = v11 ? (vk_get_props_t) gipa(instance, "vkGetPhysicalDeviceProperties2") : nullptr;
    uint32_t n = 0;
    if (enumerate && props1 && enumerate(instance, &n, nullptr) == 0 && n > 0) {
        std::vector<void *> devs(n);
        if (enumerate(instance, &n, devs.data()) == 0) {
            for (uint32_t i = 0; i < n; i++) {
                auto p2 = std::make_unique<vk_props2>();
                auto drv = std::make_unique<vk_driver_props>();
                std::memset(p2.get(), 0, sizeof(vk_props2));
                std::memset(drv.get(), 0, sizeof(vk_driver_props));
                drv->sType = 1000196000;
                p2->sType = 1000059001;
                p2->pNext = drv.get();
                bool has_driver = false;
                uint32_t api = 0;
                std::memcpy(&api, p2->properties, 4);
                if (props2) {
                    props2(devs[i], p2.get());
                    std::memcpy(&api, p2->properties, 4);
                    has_driver = api >= ((1u << 22) | (2u << 12));
                } else {
                    props1(devs[i], p2->properties);
                }
                const unsigned char * pr = p2->properties;
                uint32_t driver_version = 0;
                uint32_t vendor = 0;
                uint32_t device = 0;
                int32_t type = 0;
                std::memcpy(&api, pr, 4);
                std::memcpy(&driver_version, pr + 4, 4);
                std::memcpy(&vendor, pr + 8, 4);
                std::memcpy(&device, pr + 12, 4);
                std::memcpy(&type, pr + 16, 4);
                char name[257] = { 0 };
                std::memcpy(name, pr + 20, 256);
                static const char * types[] = { "other", "igpu", "gpu", "virtual", "cpu" };
                drv->driverName[255] = '\0';
                drv->driverInfo[255] = '\0';
                out.push_back({ { "index", i },
                                { "name", std::string(name) },
                                { "type", type >= 0 && type <= 4 ? types[type] : "unknown" },
                                { "apiVersion", version_string(api) },
                                { "driverVersion", driver_version },
                                { "vendorId", vendor },
                                { "deviceId", device },
                                { "driverName", has_driver ? json(std::string(drv->driverName)) : json(nullptr) },
                                { "driverInfo", has_driver ? json(std::string(drv->driverInfo)) : json(nullptr) } });
            }
        }
    }
    if (destroy) {
        destroy(instance, nullptr);
    }
    // The loader stays loaded: unloading a driver that the ggml backend also uses is not worth the risk.
    return out;
}

// The mtmd parameters of a projector's JSON (gpu, device, threads, flashAttn; warm-up on), without
// callbacks; sets p->device and p->n_threads. Returns false with the reason for an unknown device.
bool projector_params(loupe_projector * p, mtmd_context_params & mp, std::string & err) {
    const json & params = p->params;
    mp = mtmd_context_params_default();
    mp.use_gpu = params.value("gpu", true);
    mp.print_timings = false;
    p->n_threads = params.value("threads", 4);
    mp.n_threads = p->n_threads;
    std::string fa = params.value("flashAttn", "auto");
    mp.flash_attn_type = fa == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                       : fa == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                     : LLAMA_FLASH_ATTN_TYPE_AUTO;
    mp.warmup = true;
    p->device = "CPU";
    if (mp.use_gpu) {
        std::string name = params.contains("device") && params["device"].is_string() ? params["device"].get<std::string>() : "";
        if (!name.empty()) {
            mp.device = ggml_backend_dev_by_name(name.c_str());
            if (!mp.device) {
                err = "no device named \"" + name + "\"";
                return false;
            }
        } else {
            // what mtmd picks without a device: the first GPU, else the first integrated GPU
            mp.device = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
            if (!mp.device) {
                mp.device = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_IGPU);
            }
        }
        if (mp.device) {
            p->device = ggml_backend_dev_name(mp.device);
        }
    }
    return true;
}

}  // namespace
}  // namespace loupe

using namespace loupe;

extern "C" {

// ---- projectors ----------------------------------------------------------------------

loupe_projector * loupe_projector_create(loupe_model * model, const char * params_json) {
    if (!model || !model->model) {
        fail(LOUPE_ERR_STATE, "model is not loaded");
        return nullptr;
    }
    try {
        auto p = std::make_unique<loupe_projector>();
        p->model = model;
        p->params = json::parse(params_json ? params_json : "");
        if (!p->params.is_object() || !p->params.contains("path") || !p->params["path"].is_string()) {
            fail(LOUPE_ERR_INVALID, "projector parameters need a \"path\" string");
            return nullptr;
        }
        return p.release();
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INVALID, std::string("invalid projector parameters: ") + e.what());
        return nullptr;
    }
}

int32_t loupe_projector_load(loupe_projector * p) {
    if (!p) {
        return fail(LOUPE_ERR_INVALID, "projector is NULL");
    }
    return guarded(p, [&]() -> int32_t {
        if (p->mctx) {
            return p->set_error(LOUPE_ERR_STATE, "projector is already loaded");
        }
        route_mtmd_logs();
        const json & params = p->params;
        const std::string path = params["path"];
        int64_t t0 = now_us();
        mtmd_context_params mp;
        std::string err;
        if (!projector_params(p, mp, err)) {
            return p->set_error(LOUPE_ERR_LOAD, err);
        }
        mp.progress_callback = projector_progress;
        mp.progress_callback_user_data = p;
        if (params.value("measure", true)) {
            mp.cb_eval = eval_callback;
            mp.cb_eval_user_data = static_cast<measured *>(p);
        }
        if (p->cancel.load()) {
            return p->set_error(LOUPE_ERR_ABORTED, "loading was cancelled");
        }
        read_projector_header(p, path);
        {
            log_capture cap;
            p->mctx = mtmd_init_from_file(path.c_str(), p->model->model, mp);
            if (!p->mctx) {
                if (p->cancel.load()) {
                    return p->set_error(LOUPE_ERR_ABORTED, "loading was cancelled");
                }
                return p->set_error(LOUPE_ERR_LOAD, cap.lines.empty() ? "the engine could not load the projector" : cap.lines);
            }
        }
        if (!mtmd_support_vision(p->mctx) && !mtmd_support_audio(p->mctx)) {
            mtmd_free(p->mctx);
            p->mctx = nullptr;
            return p->set_error(LOUPE_ERR_LOAD, "the projector has neither a vision nor an audio encoder");
        }
        p->load_us = now_us() - t0;
        p->progress.store(1.0f);
        return LOUPE_OK;
    });
}

float loupe_projector_progress(const loupe_projector * p) {
    return p ? p->progress.load() : 0.0f;
}

void loupe_projector_cancel(loupe_projector * p) {
    if (p) {
        p->cancel.store(true);
    }
}

char * loupe_projector_memory_estimate(loupe_projector * p) {
    if (!p) {
        fail(LOUPE_ERR_INVALID, "projector is NULL");
        return nullptr;
    }
    char * out = nullptr;
    int32_t rc = guarded(p, [&]() -> int32_t {
        if (p->mctx) {
            return p->set_error(LOUPE_ERR_STATE, "projector is already loaded");
        }
        const int64_t t0 = now_us();
        mtmd_context_params mp;
        std::string err;
        if (!projector_params(p, mp, err)) {
            return p->set_error(LOUPE_ERR_LOAD, err);
        }
        route_mtmd_logs();
        const std::string path = p->params["path"];
        std::map<ggml_backend_dev_t, size_t> usage;
        {
            log_capture cap;
            usage = mtmd_get_memory_usage(path.c_str(), mp);
            if (usage.empty()) {
                return p->set_error(LOUPE_ERR_LOAD, "cannot lay out the projector" +
                                                        (cap.lines.empty() ? std::string() : ": " + cap.lines));
            }
        }
        const json host = host_memory();
        json devices = json::array();
        for (const auto & [dev, bytes] : usage) {
            json d = { { "name", "CPU" }, { "type", "cpu" },
                       { "free", host["available"] }, { "total", host["total"] }, { "bytes", bytes } };
            if (dev && ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU) {
                size_t free = 0;
                size_t total = 0;
                ggml_backend_dev_memory(dev, &free, &total);
                const auto type = ggml_backend_dev_type(dev);
                if (free > 0 || total > 0 || type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) {
                    d = { { "name", ggml_backend_dev_name(dev) },
                          { "type", type == GGML_BACKEND_DEVICE_TYPE_GPU ? "gpu" : type == GGML_BACKEND_DEVICE_TYPE_IGPU ? "igpu" : "accel" },
                          { "free", free }, { "total", total }, { "bytes", bytes } };
                }
            }
            bool merged = false;
            for (auto & e : devices) {
                if (e["name"] == d["name"]) {
                    e["bytes"] = e["bytes"].get<uint64_t>() + bytes;
                    merged = true;
                }
            }
            if (!merged) {
                devices.push_back(d);
            }
        }
        out = dup_string(json{ { "device", p->device }, { "host", host }, { "devices", devices },
                               { "wallUs", now_us() - t0 } }.dump());
        return out ? LOUPE_OK : p->set_error(LOUPE_ERR_INTERNAL, "out of memory");
    });
    return rc == LOUPE_OK ? out : nullptr;
}

int32_t loupe_projector_warmup(loupe_projector * p) {
    if (!p) {
        return fail(LOUPE_ERR_INVALID, "projector is NULL");
    }
    return guarded(p, [&]() -> int32_t {
        if (!p->mctx) {
            return p->set_error(LOUPE_ERR_STATE, "projector is not loaded");
        }
        // a blank image of the encoder's size, or (an audio-only projector) a second of silence
        const uint32_t side = p->image_size > 0 ? p->image_size : 224;
        const bool audio = !mtmd_support_vision(p->mctx);
        std::vector<unsigned char> gray(audio ? 0 : (size_t) side * side * 3, 128);
        std::vector<float> silence(audio ? (size_t) std::max(1, mtmd_get_audio_sample_rate(p->mctx)) : 0, 0.0f);
        mtmd::bitmap bm(audio ? mtmd_bitmap_init_from_audio(silence.size(), silence.data())
                              : mtmd_bitmap_init(side, side, gray.data()));
        const mtmd_bitmap * bms[] = { bm.ptr.get() };
        mtmd::input_chunks chunks(mtmd_input_chunks_init());
        const std::string marker = mtmd_get_marker(p->mctx);
        mtmd_input_text text = { marker.c_str(), marker.size(), false, true };
        stage_stats & stage = p->stages["projector warm-up"];
        stage = stage_stats();
        {
            log_capture cap;
            int64_t t0 = now_us();
            if (mtmd_tokenize(p->mctx, chunks.ptr.get(), &text, bms, 1) != 0) {
                return p->set_error(LOUPE_ERR_INTERNAL, "cannot preprocess the warm-up image" + (cap.lines.empty() ? "" : ": " + cap.lines));
            }
            stage.wall_us += now_us() - t0;
        }
        for (size_t i = 0; i < chunks.size(); i++) {
            if (mtmd_input_chunk_get_type(chunks[i]) != MTMD_INPUT_CHUNK_TYPE_TEXT) {
                // cancelling the load cuts the warm-up encode short
                int32_t rc = encode_chunk(p, chunks[i], stage, p->cancel);
                if (rc == LOUPE_ERR_ABORTED) {
                    return p->set_error(rc, "loading was cancelled");
                }
                if (rc != LOUPE_OK) {
                    return rc;
                }
            }
        }
        return LOUPE_OK;
    });
}

const char * loupe_projector_error(const loupe_projector * p) {
    return p ? p->error.c_str() : "projector is NULL";
}

const char * loupe_projector_info(loupe_projector * p) {
    if (!p || !p->mctx) {
        fail(LOUPE_ERR_STATE, "projector is not loaded");
        return nullptr;
    }
    try {
        json stages = json::object();
        for (const auto & [name, s] : p->stages) {
            if (name == "projector warm-up") {
                stages[name] = stage_json(s, p->devices);
            }
        }
        json info = {
            { "projectorType", p->projector_type },
            { "device", p->device },
            { "gpu", p->params.value("gpu", true) },
            { "marker", mtmd_get_marker(p->mctx) },
            { "nEmbd", llama_model_n_embd_inp(p->model->model) },
            { "imageSize", p->image_size },
            { "patchSize", p->patch_size },
            { "vision", mtmd_support_vision(p->mctx) },
            { "audio", mtmd_support_audio(p->mctx) },
            { "audioSampleRate", mtmd_support_audio(p->mctx) ? mtmd_get_audio_sample_rate(p->mctx) : 0 },
            // how the engine places an image's tokens: M-RoPE (positions by row and column, fewer
            // than the tokens) and non-causal attention inside an image
            { "mrope", mtmd_decode_use_mrope(p->mctx) },
            { "nonCausal", mtmd_support_vision(p->mctx) && mtmd_decode_use_non_causal(p->mctx, nullptr) },
            // the projector types whose images mtmd splits into tiles (its slicing preprocessors in mtmd.cpp)
            { "tiles", p->projector_type == "idefics3" || p->projector_type == "internvl" || p->projector_type == "minicpmv" ||
                           p->projector_type == "llama4" || p->projector_type == "lfm2" ||
                           p->projector_type == "step3vl" || p->projector_type == "minicpmv4_6" },
            { "threads", p->n_threads },
            { "loadUs", p->load_us },
            { "stages", stages },
        };
        p->info = info.dump();
        return p->info.c_str();
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INTERNAL, e.what());
        return nullptr;
    }
}

void loupe_projector_free(loupe_projector * p) {
    delete p;
}

// ---- images --------------------------------------------------------------------------

loupe_image * loupe_image_from_bytes(const uint8_t * data, size_t len, char * err, int32_t err_cap) {
    std::string msg;
    try {
        loupe_image * img = decode_image(data, len, msg);
        if (img) {
            return img;
        }
    } catch (const std::exception & e) {
        msg = std::string("corrupt: ") + e.what();
    }
    fail_into(LOUPE_ERR_INVALID, msg, err, err_cap);
    return nullptr;
}

loupe_image * loupe_image_from_file(const char * path, char * err, int32_t err_cap) {
    std::string msg;
    try {
        if (!path) {
            msg = "file: the path is NULL";
        } else {
            std::ifstream f(path, std::ios::binary | std::ios::ate);
            if (!f) {
                msg = std::string("file: cannot open \"") + path + "\": " + std::strerror(errno);
            } else {
                std::streamoff size = f.tellg();
                if (size < 0) {
                    msg = std::string("file: cannot read \"") + path + "\"";
                } else if ((uint64_t) size > (uint64_t) INT_MAX) {
                    msg = "size: the encoded image is larger than 2 GiB";
                } else {
                    std::vector<uint8_t> buf((size_t) size);
                    f.seekg(0);
                    if (size > 0 && !f.read(reinterpret_cast<char *>(buf.data()), size)) {
                        msg = std::string("file: cannot read \"") + path + "\"";
                    } else {
                        loupe_image * img = decode_image(buf.data(), buf.size(), msg);
                        if (img) {
                            return img;
                        }
                    }
                }
            }
        }
    } catch (const std::exception & e) {
        msg = std::string("corrupt: ") + e.what();
    }
    fail_into(LOUPE_ERR_INVALID, msg, err, err_cap);
    return nullptr;
}

loupe_image * loupe_image_from_rgb(uint32_t width, uint32_t height, const uint8_t * rgb, size_t len) {
    try {
        if (width == 0 || height == 0) {
            fail(LOUPE_ERR_INVALID, "the image has a zero size (" + std::to_string(width) + "x" + std::to_string(height) + ")");
            return nullptr;
        }
        if (width > LOUPE_IMAGE_MAX_SIDE || height > LOUPE_IMAGE_MAX_SIDE ||
            (uint64_t) width * height > LOUPE_IMAGE_MAX_PIXELS) {
            fail(LOUPE_ERR_INVALID, "the image is " + std::to_string(width) + "x" + std::to_string(height) +
                                        " pixels, more than loupe takes (at most " + std::to_string(LOUPE_IMAGE_MAX_SIDE) +
                                        " per side and " + std::to_string(LOUPE_IMAGE_MAX_PIXELS) + " pixels)");
            return nullptr;
        }
        const uint64_t need = (uint64_t) width * height * 3;
        if (!rgb || len != need) {
            fail(LOUPE_ERR_INVALID, "RGB data of a " + std::to_string(width) + "x" + std::to_string(height) + " image needs " +
                                        std::to_string(need) + " bytes (3 per pixel), not " + std::to_string(rgb ? len : 0));
            return nullptr;
        }
        auto img = std::make_unique<loupe_image>();
        int64_t t0 = now_us();
        img->bitmap = mtmd_bitmap_init(width, height, rgb);
        if (!img->bitmap) {
            fail(LOUPE_ERR_INTERNAL, "cannot make the image bitmap");
            return nullptr;
        }
        img->width = width;
        img->height = height;
        img->format = "RGB";
        img->decode_us = now_us() - t0;
        return img.release();
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INTERNAL, e.what());
        return nullptr;
    }
}

char * loupe_image_info(const loupe_image * img) {
    if (!img) {
        fail(LOUPE_ERR_INVALID, "image is NULL");
        return nullptr;
    }
    try {
        json info = { { "width", img->width }, { "height", img->height }, { "decodeUs", img->decode_us }, { "format", img->format },
                      { "audio", img->bitmap && mtmd_bitmap_is_audio(img->bitmap) } };
        return dup_string(info.dump());
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INTERNAL, e.what());
        return nullptr;
    }
}

void loupe_image_free(loupe_image * img) {
    delete img;
}

loupe_image * loupe_projector_audio_from_bytes(loupe_projector * p, const uint8_t * data, size_t len, char * err, int32_t err_cap) {
    std::string msg;
    try {
        const auto at = [&](size_t i) { return i < len ? data[i] : 0; };
        std::string fmt;
        if (!p || !p->mctx) {
            msg = "state: the projector is not loaded";
        } else if (!mtmd_support_audio(p->mctx)) {
            msg = "unsupported: this projector (" + p->projector_type + ") has no audio encoder";
        } else if (!data || len == 0) {
            msg = "size: the audio is empty (0 bytes)";
        } else if (len > (size_t) LOUPE_AUDIO_MAX_BYTES) {
            msg = "size: the audio file has " + std::to_string(len) + " bytes, more than loupe decodes (" +
                  std::to_string(LOUPE_AUDIO_MAX_BYTES) + ")";
        } else if (len >= 12 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WAVE", 4) == 0) {
            fmt = "WAV";
            const uint64_t riff = (uint64_t) at(4) | ((uint64_t) at(5) << 8) | ((uint64_t) at(6) << 16) | ((uint64_t) at(7) << 24);
            if (len < 44 || riff + 8 > len) {
                msg = "corrupt: the WAV data is truncated (its header announces " + std::to_string(riff + 8) +
                      " bytes, the file has " + std::to_string(len) + ")";
            }
        } else if (len >= 4 && std::memcmp(data, "fLaC", 4) == 0) {
            fmt = "FLAC";
        } else if ((len >= 3 && std::memcmp(data, "ID3", 3) == 0) || (len >= 2 && at(0) == 0xFF && (at(1) & 0xE0) == 0xE0)) {
            fmt = "MP3";
        } else {
            msg = "format: not a WAV, MP3 or FLAC file";
        }
        if (msg.empty()) {
            int64_t t0 = now_us();
            log_capture cap;
            mtmd_helper_bitmap_wrapper res = mtmd_helper_bitmap_init_from_buf(p->mctx, data, len, false, mtmd_helper_init_opt_default());
            if (!res.bitmap || !mtmd_bitmap_is_audio(res.bitmap)) {
                if (res.bitmap) {
                    mtmd_bitmap_free(res.bitmap);
                }
                msg = "corrupt: the engine's decoder rejected the " + fmt + " data" + (cap.lines.empty() ? "" : ": " + cap.lines);
            } else {
                auto img = std::make_unique<loupe_image>();
                img->bitmap = res.bitmap;
                img->width = mtmd_bitmap_get_nx(res.bitmap);  // samples
                img->height = 1;
                img->format = fmt;
                img->decode_us = now_us() - t0;
                const int rate = std::max(1, mtmd_get_audio_sample_rate(p->mctx));
                if (img->width == 0) {
                    msg = "size: the " + fmt + " audio has no samples";
                } else if ((int64_t) img->width > (int64_t) rate * LOUPE_AUDIO_MAX_SECONDS) {
                    msg = "size: the audio lasts " + std::to_string(img->width / rate) + " s, more than loupe takes (" +
                          std::to_string(LOUPE_AUDIO_MAX_SECONDS) + " s)";
                } else {
                    return img.release();
                }
            }
        }
    } catch (const std::exception & e) {
        msg = std::string("corrupt: ") + e.what();
    }
    fail_into(LOUPE_ERR_INVALID, msg, err, err_cap);
    return nullptr;
}

// ---- multimodal prompts --------------------------------------------------------------

int32_t loupe_ctx_vision_prefill(loupe_ctx * c, loupe_projector * p, const char * prompt, loupe_image * const * images,
                                 int32_t n_images, const char * params_json) {
    if (!p) {
        return fail(LOUPE_ERR_INVALID, "projector is NULL");
    }
    if (!c || !c->ctx) {
        return p->set_error(LOUPE_ERR_STATE, "context is NULL");
    }
    loupe::idle_on_return idle{ c->threads };  // no worker spinning while the host handles the result
    return guarded(p, [&]() -> int32_t {
        if (!p->mctx) {
            return p->set_error(LOUPE_ERR_STATE, "projector is not loaded");
        }
        if (c->owner != p->model) {
            return p->set_error(LOUPE_ERR_INVALID, "the context belongs to another model than the projector");
        }
        if (!prompt) {
            return p->set_error(LOUPE_ERR_INVALID, "the prompt is NULL");
        }
        if (n_images < 0 || (n_images > 0 && !images)) {
            return p->set_error(LOUPE_ERR_INVALID, "invalid image list");
        }
        std::vector<const mtmd_bitmap *> bitmaps;
        int64_t decode_us = 0;
        json image_list = json::array();
        for (int32_t i = 0; i < n_images; i++) {
            if (!images[i] || !images[i]->bitmap) {
                return p->set_error(LOUPE_ERR_INVALID, "image " + std::to_string(i) + " is NULL");
            }
            bitmaps.push_back(images[i]->bitmap);
            decode_us += images[i]->decode_us;
            image_list.push_back({ { "width", images[i]->width }, { "height", images[i]->height } });
        }
        json params = json::parse(params_json ? params_json : "{}");
        const std::string text(prompt);
        const std::string marker = mtmd_get_marker(p->mctx);
        const size_t n_markers = count_markers(text, marker);
        if (n_markers != bitmaps.size()) {
            return p->set_error(LOUPE_ERR_INVALID, "the prompt has " + std::to_string(n_markers) + " media markers (\"" + marker +
                                                       "\") for " + std::to_string(bitmaps.size()) + " images");
        }

        const bool reuse = params.value("reuse", false);  // a session: keep the common prefix

        // nothing of an earlier generation stays; a session keeps its cache until the prefix is known
        c->abort.store(false);
        c->active = false;
        c->done = false;
        c->stages.clear();
        c->events = json::array();
        c->reused = 0;
        c->begin_us = now_us();
        p->prefilled = nullptr;
        p->prefill_n_past = 0;
        if (!reuse) {
            clear_cache(c);
            c->n_keep = 0;
            c->shift_enabled = false;
        }
        for (auto it = p->stages.begin(); it != p->stages.end();) {  // the warm-up stays
            it = it->first == "projector warm-up" ? std::next(it) : p->stages.erase(it);
        }
        const size_t n_clips = (size_t) std::count_if(bitmaps.begin(), bitmaps.end(), mtmd_bitmap_is_audio);
        const bool only_audio = n_clips > 0 && n_clips == bitmaps.size();
        stage_stats & preprocess = p->stages[only_audio ? "audio preprocess" : "image preprocess"];
        stage_stats & encode = p->stages["image encode"];
        stage_stats & audio_encode = p->stages["audio encode"];
        stage_stats & image_decode = c->stages["image decode"];
        stage_stats & audio_decode = c->stages["audio decode"];
        stage_stats & prompt_stage = c->stages["prompt"];
        // the output: what ran, also when an abort cut the prompt short (then with aborted: true)
        p->output.clear();
        auto record = [&](json out) {
            json stages = json::object();
            for (const auto & [name, st] : p->stages) {
                if (name != "projector warm-up") {
                    stages[name] = stage_json(st, p->devices);
                }
            }
            for (const auto & [name, st] : c->stages) {
                stages[name] = stage_json(st, c->devices);
            }
            out["stages"] = stages;
            p->output = out.dump();
        };
        auto aborted = [&]() {
            record({ { "aborted", true } });
            return p->set_error(LOUPE_ERR_ABORTED, "aborted");
        };

        // tokenize: text is tokenized, images are preprocessed (resized, normalized), audio turned into mel frames
        mtmd::input_chunks chunks(mtmd_input_chunks_init());
        {
            log_capture cap;
            mtmd_input_text in = { text.data(), text.size(), params.value("addSpecial", true), params.value("parseSpecial", true) };
            int64_t t0 = now_us();
            int32_t rc = mtmd_tokenize(p->mctx, chunks.ptr.get(), &in, bitmaps.data(), bitmaps.size());
            preprocess.wall_us += now_us() - t0 + decode_us;
            if (rc != 0) {
                return p->set_error(LOUPE_ERR_INVALID, "cannot prepare the prompt's media" + (cap.lines.empty() ? "" : ": " + cap.lines));
            }
        }
        // the cells the prompt takes: its text tokens, and -1 for each medium's tokens
        const size_t n_chunks = chunks.size();
        int64_t n_text = 0;
        int64_t n_image = 0;
        int64_t n_audio = 0;
        int64_t n_pos_total = 0;
        json chunk_list = json::array();
        json text_tokens = json::array();
        std::vector<llama_token> cells;
        std::vector<int32_t> chunk_start;
        // a session's turn: the cells before the new text (what the cache holds, the token sampled
        // last, a reply's closing); -1 only where the cache holds a medium, kept as it is
        const std::vector<llama_token> prefix = params.value("prefix", std::vector<llama_token>());
        if (!prefix.empty() && !reuse) {
            return p->set_error(LOUPE_ERR_INVALID, "a prefix needs reuse");
        }
        {
            const int32_t n_vocab = llama_vocab_n_tokens(c->owner->vocab);
            size_t mi = 0;
            for (size_t k = 0; k < prefix.size();) {
                if (prefix[k] >= 0 && prefix[k] < n_vocab) {
                    k++;
                    continue;
                }
                if (prefix[k] != -1 || mi >= c->media.size() || c->media[mi].start != (int32_t) k ||
                    (size_t) c->media[mi].end > prefix.size() ||
                    std::any_of(prefix.begin() + (ptrdiff_t) k, prefix.begin() + c->media[mi].end,
                                [](llama_token t) { return t != -1; })) {
                    return p->set_error(LOUPE_ERR_INVALID, "prefix token " + std::to_string(prefix[k]) + " at " +
                                                               std::to_string(k) +
                                                               " is out of range and not a medium the cache holds");
                }
                k = (size_t) c->media[mi].end;
                mi++;
            }
            cells = prefix;
        }
        for (size_t i = 0; i < n_chunks; i++) {
            const mtmd_input_chunk * ch = chunks[i];
            const auto type = mtmd_input_chunk_get_type(ch);
            const int64_t n = (int64_t) mtmd_input_chunk_get_n_tokens(ch);
            const int64_t n_pos = (int64_t) mtmd_input_chunk_get_n_pos(ch);
            chunk_start.push_back((int32_t) cells.size());
            n_pos_total += n_pos;
            if (type == MTMD_INPUT_CHUNK_TYPE_TEXT) {
                n_text += n;
                chunk_list.push_back({ { "type", "text" }, { "tokens", n } });
                size_t nt = 0;
                const llama_token * toks = mtmd_input_chunk_get_tokens_text(ch, &nt);
                for (size_t k = 0; k < nt; k++) {
                    text_tokens.push_back(toks[k]);
                    cells.push_back(toks[k]);
                }
                continue;
            }
            if (type != MTMD_INPUT_CHUNK_TYPE_IMAGE && type != MTMD_INPUT_CHUNK_TYPE_AUDIO) {
                return p->set_error(LOUPE_ERR_INVALID, "the prompt has a media chunk of an unknown type");
            }
            const bool audio = type == MTMD_INPUT_CHUNK_TYPE_AUDIO;
            (audio ? n_audio : n_image) += n;
            chunk_list.push_back({ { "type", audio ? "audio" : "image" }, { "tokens", n }, { "positions", n_pos } });
            cells.insert(cells.end(), (size_t) n, -1);
        }
        preprocess.tokens += n_image + n_audio;
        if (n_chunks == 0 || cells.empty()) {
            return p->set_error(LOUPE_ERR_INVALID, "the prompt is empty");
        }
        if (mtmd_input_chunk_get_type(chunks[n_chunks - 1]) != MTMD_INPUT_CHUNK_TYPE_TEXT) {
            return p->set_error(LOUPE_ERR_INVALID, "the prompt must end with text after its last image");
        }
        // capacity is counted in cells (tokens), never positions: under M-RoPE an image takes
        // fewer positions than the cells it fills
        const int64_t n_ctx = (int64_t) llama_n_ctx(c->ctx);
        if ((int64_t) cells.size() + 1 > n_ctx) {
            return p->set_error(LOUPE_ERR_CONTEXT,
                                "the prompt has " + std::to_string(cells.size()) + " tokens (" + std::to_string(n_text) +
                                    " of text and " + std::to_string(n_image + n_audio) + " for " +
                                    std::to_string(bitmaps.size()) + (n_clips > 0 ? " media" : " image(s)") +
                                    ") but the context holds " + std::to_string(n_ctx) +
                                    " (including one token to generate); an image's tokens are never cut");
        }

        // a session keeps the longest common prefix of cells: the prefix's media are the cache's
        // own (checked above); a new medium is never taken for a cached one
        int32_t n_common = 0;
        if (reuse) {
            const int32_t n_hist = n_cells(c);
            while (n_common < n_hist && n_common < (int32_t) cells.size() && c->history[n_common] == cells[n_common] &&
                   (cells[n_common] != -1 || n_common < (int32_t) prefix.size())) {
                n_common++;
            }
            n_common = std::min(n_common, (int32_t) cells.size() - 1);  // the last token is evaluated again
            n_common = keep_cells(c, n_common);
            c->reused = n_common;
            std::vector<int32_t> turns;
            for (int32_t t : c->turn_starts) {
                if (t < n_common) {
                    turns.push_back(t);
                }
            }
            for (int32_t t : params.value("turns", std::vector<int32_t>())) {
                if (t >= n_common && t < (int32_t) cells.size()) {
                    turns.push_back(t);
                }
            }
            std::sort(turns.begin(), turns.end());
            turns.erase(std::unique(turns.begin(), turns.end()), turns.end());
            c->turn_starts.swap(turns);
        }
        if (n_common < (int32_t) prefix.size()) {
            if (std::find(prefix.begin() + n_common, prefix.end(), -1) != prefix.end()) {
                return p->set_error(LOUPE_ERR_INVALID, "the prompt reuses an image the cache no longer holds");
            }
            // the prefix's text past what the cache holds
            std::vector<llama_token> rest(prefix.begin() + n_common, prefix.end());
            for (size_t done = 0; done < rest.size();) {
                int32_t n = (int32_t) std::min<size_t>(llama_n_batch(c->ctx), rest.size() - done);
                int32_t rc = decode_tokens(c, rest.data() + done, n, prompt_stage);
                if (rc != LOUPE_OK) {
                    return p->set_error(rc, c->error);
                }
                done += n;
            }
        }

        // evaluate, chunk by chunk, what the cache does not hold yet
        const int32_t n_batch = (int32_t) llama_n_batch(c->ctx);
        auto ctx_failed = [&](int32_t rc) { return p->set_error(rc, c->error); };
        for (size_t i = 0; i < n_chunks; i++) {
            if (c->abort.load()) {
                return aborted();
            }
            const mtmd_input_chunk * ch = chunks[i];
            const auto type = mtmd_input_chunk_get_type(ch);
            const int32_t first = chunk_start[i];
            if (type == MTMD_INPUT_CHUNK_TYPE_TEXT) {
                size_t nt = 0;
                const llama_token * toks = mtmd_input_chunk_get_tokens_text(ch, &nt);
                const size_t skip = (size_t) std::max(0, std::min<int32_t>(n_common - first, (int32_t) nt));
                std::vector<llama_token> buf(toks + skip, toks + nt);
                for (size_t done = 0; done < buf.size();) {
                    int32_t n = (int32_t) std::min<size_t>(n_batch, buf.size() - done);
                    int32_t rc = decode_tokens(c, buf.data() + done, n, prompt_stage);
                    if (rc != LOUPE_OK) {
                        return ctx_failed(rc);
                    }
                    done += n;
                }
                continue;
            }
            const int32_t n_tokens = (int32_t) mtmd_input_chunk_get_n_tokens(ch);
            if (first + n_tokens <= n_common) {
                continue;  // in the cache already: not encoded again
            }
            const bool audio = type == MTMD_INPUT_CHUNK_TYPE_AUDIO;
            int32_t rc = encode_chunk(p, ch, audio ? audio_encode : encode, c->abort);  // an abort cuts the encode short
            if (rc == LOUPE_ERR_ABORTED) {
                return aborted();
            }
            if (rc != LOUPE_OK) {
                return rc;
            }
            float * embd = mtmd_get_output_embd(p->mctx);
            stage_stats & decode = audio ? audio_decode : image_decode;
            llama_pos new_n_past = c->n_past;
            log_capture cap;
            c->cur_stage = &decode;
            int64_t t0 = now_us();
            rc = mtmd_helper_decode_image_chunk(p->mctx, c->ctx, ch, embd, c->n_past, 0, n_batch, &new_n_past, nullptr, nullptr);
            c->cur_stage = nullptr;
            if (rc != 0) {
                if (rc == 2 || c->abort.load()) {
                    return aborted();
                }
                return p->set_error(LOUPE_ERR_DECODE, std::string("decoding the ") + (audio ? "audio" : "image") +
                                                          " embeddings failed with code " + std::to_string(rc) +
                                                          (cap.lines.empty() ? "" : ": " + cap.lines));
            }
            llama_synchronize(c->ctx);
            decode.wall_us += now_us() - t0;
            decode.graphs += (n_tokens + n_batch - 1) / n_batch;
            decode.tokens += n_tokens;
            // the history mirrors the KV cache cell by cell: a medium's cells hold -1 (never a
            // token), and its span (which a shift never cuts) may take fewer positions than
            // cells (M-RoPE)
            const int32_t start = n_cells(c);
            c->history.resize(c->history.size() + (size_t) n_tokens, -1);
            c->media.push_back({ start, n_cells(c), (int32_t) (new_n_past - c->n_past) });
            c->n_past = new_n_past;
        }
        p->prefilled = c;
        p->prefill_n_past = c->n_past;

        record({ { "nPast", n_cells(c) },
                 { "nPos", c->n_past },
                 { "reused", n_common },
                 { "textTokens", text_tokens },
                 { "imageTokens", n_image },
                 { "audioTokens", n_audio },
                 { "positions", n_pos_total },
                 { "chunks", chunk_list },
                 { "images", image_list } });
        return LOUPE_OK;
    });
}

int32_t loupe_ctx_vision_gen_begin(loupe_ctx * c, loupe_projector * p, const char * params_json) {
    if (!p) {
        return fail(LOUPE_ERR_INVALID, "projector is NULL");
    }
    if (!c || !c->ctx) {
        return p->set_error(LOUPE_ERR_STATE, "context is NULL");
    }
    return guarded(p, [&]() -> int32_t {
        if (p->prefilled != c || c->n_past != p->prefill_n_past || c->n_past <= 0 || c->active || c->done) {
            return p->set_error(LOUPE_ERR_STATE, "the context does not hold this projector's last prompt");
        }
        json params = json::parse(params_json ? params_json : "{}");
        const int32_t reused = c->reused;
        begin_generation(c, params, nullptr, 0);  // no new tokens: the prompt is in the KV cache
        c->reused = reused;
        // a session's generation may shift (never cutting a medium; see loupe_session.h)
        c->shift_enabled = params.value("contextShift", false);
        const int32_t n_keep = params.value("nKeep", 0);
        if (c->shift_enabled && (n_keep < 0 || n_keep > (int32_t) llama_n_ctx(c->ctx) - 2)) {
            c->active = false;
            return p->set_error(LOUPE_ERR_INVALID, "nKeep is " + std::to_string(n_keep) + " but a context of " +
                                                       std::to_string(llama_n_ctx(c->ctx)) + " tokens keeps at most " +
                                                       std::to_string(llama_n_ctx(c->ctx) - 2) + " when it shifts");
        }
        c->n_keep = n_keep;
        p->prefilled = nullptr;
        return LOUPE_OK;
    });
}

const char * loupe_projector_output(loupe_projector * p) {
    if (!p) {
        fail(LOUPE_ERR_INVALID, "projector is NULL");
        return nullptr;
    }
    return p->output.empty() ? "{}" : p->output.c_str();
}

// ---- Vulkan drivers ------------------------------------------------------------------

char * loupe_vulkan_drivers(void) {
    try {
        return dup_string(vulkan_drivers().dump(-1, ' ', false, json::error_handler_t::replace));
    } catch (const std::exception & e) {
        fail(LOUPE_ERR_INTERNAL, e.what());
        return nullptr;
    }
}

}  // extern "C"
