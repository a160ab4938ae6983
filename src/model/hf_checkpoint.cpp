#include "sft/model/hf_checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "sft/model/safetensors.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::model {
namespace {

using nlohmann::json;

// Tensors that old checkpoints carry but the model recomputes.
bool ignorable(const std::string& name) { return name.find("rotary_emb.inv_freq") != std::string::npos; }

std::string torch_dtype_name(c10::ScalarType t) {
  if (t == c10::kBFloat16) return "bfloat16";
  if (t == c10::kHalf) return "float16";
  return "float32";
}

// name -> shard path
std::map<std::string, std::string> weight_map(const std::string& dir) {
  std::map<std::string, std::string> out;
  const std::string single = fs::join(dir, "model.safetensors");
  const std::string index = fs::join(dir, "model.safetensors.index.json");
  if (fs::exists(index)) {
    json j;
    try {
      j = json::parse(fs::read_file(index));
    } catch (const json::parse_error& e) {
      throw CheckpointError(index + ": malformed JSON: " + e.what());
    }
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      throw CheckpointError(index + ": missing \"weight_map\" object");
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        throw CheckpointError(index + ": weight_map." + it.key() + " must be a file name");
      std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
        throw CheckpointError(index + ": weight_map." + it.key() + ": \"" + f +
                              "\" must be a file in the folder");
      out[it.key()] = fs::join(dir, f);
    }
    return out;
  }
  if (fs::exists(single)) {
    auto f = SafetensorsFile::open(single);
    for (const auto& t : f->header().tensors) out[t.name] = single;
    return out;
  }
  std::string hint;
  if (fs::exists(fs::join(dir, "pytorch_model.bin")) ||
      fs::exists(fs::join(dir, "pytorch_model.bin.index.json")))
    hint =
        " (pytorch_model.bin is not supported: convert it with transformers' "
        "save_pretrained(safe_serialization=True))";
  throw CheckpointError(
      dir + ": no weights found: expected model.safetensors or model.safetensors.index.json" + hint);
}

}  // namespace

bool has_weights(const std::string& dir) {
  return fs::exists(fs::join(dir, "model.safetensors")) ||
         fs::exists(fs::join(dir, "model.safetensors.index.json"));
}

namespace {

struct Located {
  std::map<std::string, std::string> file_of;                           // name -> shard
  std::map<std::string, std::shared_ptr<const SafetensorsFile>> files;  // shard -> file
};

Located locate_weights(const std::vector<std::pair<std::string, std::vector<std::int64_t>>>& expected,
                       const std::string& dir) {
  Located loc;
  loc.file_of = weight_map(dir);
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> names;
  for (const auto& e : expected) names.insert(e.first);
  for (const auto& [name, file] : loc.file_of)
    if (!names.count(name) && !ignorable(name)) unexpected.push_back(name);
  for (const auto& [name, shape] : expected) {
    auto it = loc.file_of.find(name);
    if (it == loc.file_of.end()) {
      missing.push_back(name);
      continue;
    }
    auto& f = loc.files[it->second];
    if (!f) {
      if (!fs::exists(it->second))
        throw CheckpointError(it->second + ": shard named in the index is missing");
      f = SafetensorsFile::open(it->second);
    }
    const TensorEntry* e = f->find(name);
    if (!e) {
      missing.push_back(name + " (the index names " + fs::basename(it->second) + ", which lacks it)");
      continue;
    }
    if (e->dtype != "F32" && e->dtype != "F16" && e->dtype != "BF16" && e->dtype != "F64")
      mismatched.push_back(name + ": dtype " + e->dtype + " is not a floating-point type sft loads");
    if (e->shape != shape) {
      std::string want, got;
      for (auto s : shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
      for (auto s : e->shape) got += (got.empty() ? "" : ", ") + std::to_string(s);
      mismatched.push_back(name + ": checkpoint [" + got + "], config.json implies [" + want + "]");
    }
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::string msg = dir + ": the weights do not match config.json:";
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      msg += "\n  " + std::string(what) + " (" + std::to_string(v.size()) + "):";
      for (std::size_t i = 0; i < v.size() && i < 20; ++i) msg += "\n    " + v[i];
      if (v.size() > 20) msg += "\n    ...";
    };
    list("missing", missing);
    list("unexpected", unexpected);
    list("mismatched", mismatched);
    throw CheckpointError(msg);
  }
  return loc;
}

}  // namespace

void check_weights(const LlamaConfig& cfg, const std::string& dir) {
  locate_weights(expected_parameters(cfg), dir);
}

void load_weights(Llama& model, const std::string& dir) {
  const ParamSource source = weights_source(model, dir);
  at::NoGradGuard ng;
  for (std::size_t i = 0; i < model.parameters().size(); ++i)
    source(i, 0, model.parameters()[i].tensor.view({-1}));
}

ParamSource weights_source(const Llama& model, const std::string& dir) {
  auto loc = std::make_shared<Located>(locate_weights(expected_parameters(model.config()), dir));
  std::vector<std::string> names;
  for (const auto& p : model.parameters()) names.push_back(p.name);
  return [loc, names](std::size_t index, std::int64_t begin, at::Tensor dst) {
    at::NoGradGuard ng;
    const std::string& name = names.at(index);
    dst.copy_(loc->files.at(loc->file_of.at(name))->flat_range(name, begin, dst.numel()));
  };
}

std::unique_ptr<Llama> load_hf_model(const std::string& dir, c10::Device device, c10::ScalarType dtype) {
  LlamaConfig cfg = load_llama_config(dir);
  check_weights(cfg, dir);  // before allocating: a 7B config without weights fails fast
  auto model = std::make_unique<Llama>(cfg, device, dtype);
  load_weights(*model, dir);
  return model;
}

void save_hf_model(const Llama& model, const std::string& dir, const SaveOptions& opts) {
  save_hf_model(
      model.config(), [&](std::size_t i) { return model.parameters()[i].tensor; }, dir, opts);
}

void save_hf_model(const LlamaConfig& model_cfg, const std::function<at::Tensor(std::size_t)>& fetch,
                   const std::string& dir, const SaveOptions& opts) {
  const std::string tmp = dir + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::make_dirs(tmp);

  // Shard greedily in parameter order, like transformers' save_pretrained, from the shapes.
  const auto params = expected_parameters(model_cfg);  // parameters() order; no tied lm_head
  std::vector<std::vector<SafetensorsStreamWriter::Entry>> shards(1);
  std::int64_t shard_bytes = 0, total = 0;
  for (const auto& [name, shape] : params) {
    std::int64_t bytes = static_cast<std::int64_t>(at::elementSize(opts.dtype));
    for (auto d : shape) bytes *= d;
    if (opts.max_shard_bytes > 0 && shard_bytes > 0 && shard_bytes + bytes > opts.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back({name, opts.dtype, shape});
    shard_bytes += bytes;
    total += bytes;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", json::object()}};
  std::size_t next = 0;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    const std::string file = shards.size() == 1 ? "model.safetensors" : name;
    for (const auto& e : shards[i]) index["weight_map"][e.name] = file;
    SafetensorsStreamWriter w(fs::join(tmp, file), shards[i]);
    for (std::size_t k = 0; k < shards[i].size(); ++k) w.write(fetch(next++));
    w.commit();
  }
  if (shards.size() > 1)
    fs::write_file_atomic(fs::join(tmp, "model.safetensors.index.json"), index.dump(2) + "\n");

  LlamaConfig cfg = model_cfg;
  cfg.torch_dtype = torch_dtype_name(opts.dtype);
  json config = cfg.to_json();
  fs::write_file_atomic(fs::join(tmp, "config.json"), config.dump(2) + "\n");
  json gen = {{"bos_token_id", cfg.bos_token_id}, {"_from_model_config", true}};
  gen["eos_token_id"] = cfg.eos_token_ids.size() == 1 ? json(cfg.eos_token_ids[0]) : json(cfg.eos_token_ids);
  fs::write_file_atomic(fs::join(tmp, "generation_config.json"), gen.dump(2) + "\n");

  if (opts.write_tokenizer) {
    opts.write_tokenizer(tmp);
  } else if (!opts.tokenizer_model.empty()) {
    fs::write_file_atomic(fs::join(tmp, "tokenizer.model"), fs::read_file(opts.tokenizer_model));
    // A slow LlamaTokenizer config, so AutoTokenizer needs nothing but tokenizer.model.
    json tc = {{"tokenizer_class", "LlamaTokenizer"},
               {"bos_token", "<s>"},
               {"eos_token", "</s>"},
               {"unk_token", "<unk>"},
               {"add_bos_token", true},
               {"add_eos_token", false},
               {"clean_up_tokenization_spaces", false},
               {"legacy", true},
               {"model_max_length", cfg.max_position_embeddings},
               {"pad_token", nullptr},
               {"sp_model_kwargs", json::object()}};
    fs::write_file_atomic(fs::join(tmp, "tokenizer_config.json"), tc.dump(2) + "\n");
    json sm = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}};
    fs::write_file_atomic(fs::join(tmp, "special_tokens_map.json"), sm.dump(2) + "\n");
  }
  fs::fsync_dir(tmp);
  // Swap in: the old folder (if any) is moved aside first so a crash leaves one complete copy.
  const std::string old = dir + ".old." + std::to_string(::getpid());
  bool had_old = fs::exists(dir);
  if (had_old && ::rename(dir.c_str(), old.c_str()) != 0)
    throw Error(dir + ": cannot replace the existing folder");
  if (::rename(tmp.c_str(), dir.c_str()) != 0) throw Error(dir + ": cannot rename " + tmp + " into place");
  if (had_old) fs::remove_all(old);
  fs::fsync_dir(fs::dirname(dir).empty() ? "." : fs::dirname(dir));
}

}  // namespace sft::model
