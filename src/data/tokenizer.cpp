#include "sft/data/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <mutex>

#include "sft/data/spm_api.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/hash.h"

namespace sft::data {

struct Tokenizer::Plugin {
  const sft_spm_api* api = nullptr;
  std::string path;
};

namespace {

// A character no tokenizer merges with its neighbours (it falls back to a byte piece):
// encoding kSentinel + text and dropping the sentinel's ids yields text's ids without the
// dummy-prefix space that sentencepiece adds at the start of every encode.
constexpr std::string_view kSentinel = "\x01";

std::string exe_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  buf[n] = '\0';
  return fs::dirname(buf);
}

std::vector<std::string> plugin_candidates() {
  std::vector<std::string> c;
  if (const char* env = std::getenv("SFT_SPM_PLUGIN"); env && *env) c.push_back(env);
  std::string dir = exe_dir();
  c.push_back(fs::join(dir, "libsft_spm.so"));
  c.push_back(fs::join(dir, "../lib/sft/libsft_spm.so"));
  c.push_back(fs::join(dir, "../libsft_spm.so"));
  return c;
}

const Tokenizer::Plugin* load_plugin_impl() {
  static Tokenizer::Plugin plugin;
  std::string tried;
  for (const auto& path : plugin_candidates()) {
    if (!fs::exists(path)) {
      tried += "\n  " + path + " (absent)";
      continue;
    }
    // RTLD_DEEPBIND: the plugin's sentencepiece binds to its own protobuf, not libtorch's.
    void* lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!lib) {
      tried += "\n  " + path + " (" + ::dlerror() + ")";
      continue;
    }
    auto get = reinterpret_cast<sft_spm_get_api_fn>(::dlsym(lib, SFT_SPM_GET_API_SYMBOL));
    if (!get || !get() || get()->version != SFT_SPM_API_VERSION) {
      tried += "\n  " + path + " (not an sft sentencepiece plugin of API version " +
               std::to_string(SFT_SPM_API_VERSION) + ")";
      continue;
    }
    plugin.api = get();
    plugin.path = path;
    return &plugin;
  }
  throw Error("cannot load the sentencepiece plugin libsft_spm.so; tried:" + tried +
              "\nset SFT_SPM_PLUGIN to its path (it is built next to the sft binary)");
}

const Tokenizer::Plugin* load_plugin() {
  static std::once_flag once;
  static const Tokenizer::Plugin* plugin = nullptr;
  static std::string error;
  std::call_once(once, [] {
    try {
      plugin = load_plugin_impl();
    } catch (const Error& e) {
      error = e.what();
    }
  });
  if (!plugin) throw Error(error);
  return plugin;
}

}  // namespace

std::string spm_plugin_path() {
  try {
    return load_plugin()->path;
  } catch (const Error&) {
    return "(not found)";
  }
}

std::shared_ptr<const Tokenizer> Tokenizer::load(const std::string& model_path) {
  if (!fs::exists(model_path)) throw Error(model_path + ": tokenizer model not found");
  const Plugin* plugin = load_plugin();
  char err[512] = {0};
  void* h = plugin->api->load(model_path.c_str(), err, sizeof err);
  if (!h) throw Error(model_path + ": not a sentencepiece model: " + err);
  std::shared_ptr<Tokenizer> t(new Tokenizer());
  t->plugin_ = plugin;
  t->handle_ = h;
  t->path_ = model_path;
  t->sha256_ = sha256_file(model_path);
  const auto* api = plugin->api;
  t->bos_ = api->bos_id(h);
  t->eos_ = api->eos_id(h);
  t->pad_ = api->pad_id(h);
  t->unk_ = api->unk_id(h);
  t->vocab_ = api->vocab_size(h);
  auto a = t->encode("a");
  t->dummy_prefix_ = !a.empty() && t->piece(a[0]).rfind("\xe2\x96\x81", 0) == 0;  // U+2581 '▁'
  t->sentinel_ids_ = t->encode(kSentinel);
  return t;
}

Tokenizer::~Tokenizer() {
  if (handle_) plugin_->api->free(handle_);
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> ids(text.size() + 8);
  std::int64_t n = plugin_->api->encode(handle_, text.data(), text.size(), ids.data(),
                                        static_cast<std::int64_t>(ids.size()));
  if (n < 0) throw Error(path_ + ": sentencepiece failed to encode a text of " + std::to_string(text.size()) + " bytes");
  if (static_cast<std::size_t>(n) > ids.size()) {
    ids.resize(static_cast<std::size_t>(n));
    plugin_->api->encode(handle_, text.data(), text.size(), ids.data(), n);
  }
  ids.resize(static_cast<std::size_t>(n));
  return ids;
}

std::vector<std::int32_t> Tokenizer::encode_continuation(std::string_view text) const {
  if (!dummy_prefix_ || text.empty()) return encode(text);
  std::string s(kSentinel);
  s.append(text);
  std::vector<std::int32_t> ids = encode(s);
  if (ids.size() >= sentinel_ids_.size() &&
      std::equal(sentinel_ids_.begin(), sentinel_ids_.end(), ids.begin())) {
    ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(sentinel_ids_.size()));
    return ids;
  }
  return encode(text);  // the sentinel merged with the text: fall back to a plain encode
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::string out(ids.size() * 8 + 16, '\0');
  std::int64_t n = plugin_->api->decode(handle_, ids.data(), static_cast<std::int64_t>(ids.size()), out.data(),
                                        static_cast<std::int64_t>(out.size()));
  if (n < 0) throw Error(path_ + ": sentencepiece failed to decode");
  if (static_cast<std::size_t>(n) > out.size()) {
    out.resize(static_cast<std::size_t>(n));
    plugin_->api->decode(handle_, ids.data(), static_cast<std::int64_t>(ids.size()), out.data(), n);
  }
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string Tokenizer::piece(std::int32_t id) const {
  char buf[256];
  std::int64_t n = plugin_->api->id_to_piece(handle_, id, buf, sizeof buf);
  if (n < 0) return "<invalid:" + std::to_string(id) + ">";
  if (n > static_cast<std::int64_t>(sizeof buf)) {
    std::string s(static_cast<std::size_t>(n), '\0');
    plugin_->api->id_to_piece(handle_, id, s.data(), n);
    return s;
  }
  return std::string(buf, static_cast<std::size_t>(n));
}

std::optional<std::int32_t> Tokenizer::piece_id(std::string_view piece) const {
  std::int32_t id = plugin_->api->piece_to_id(handle_, piece.data(), piece.size());
  if (id < 0 || id == unk_) return std::nullopt;
  return id;
}

bool Tokenizer::is_control(std::int32_t id) const { return plugin_->api->is_control(handle_, id) != 0; }

}  // namespace sft::data
