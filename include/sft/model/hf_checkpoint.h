// Hugging Face model folders in and out: config.json + model.safetensors, or sharded
// model-0000i-of-0000n.safetensors with model.safetensors.index.json, plus the tokenizer
// files. A saved folder loads in transformers (LlamaForCausalLM, Qwen2ForCausalLM or
// Qwen3ForCausalLM as config.json's model_type says; LlamaTokenizer) unchanged.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <functional>
#include <string>

#include "sft/model/llama.h"

namespace sft::model {

// True when `dir` holds weights (model.safetensors or an index).
bool has_weights(const std::string& dir);

// Checks that the folder's weights match `cfg` (names, shapes, files) without allocating the
// model. Missing and unexpected names and shape mismatches are reported together.
void check_weights(const LlamaConfig& cfg, const std::string& dir);

// Copies the folder's weights into `model` (converting dtype/device). Missing and unexpected
// tensor names and shape mismatches are reported together in one CheckpointError.
void load_weights(Llama& model, const std::string& dir);
// The folder's weights as a ParamSource (llama.h) for `model`'s parameters: checked like
// load_weights, then read range by range from the memory-mapped files, so that a rank
// touches only the bytes of the shards it owns. Converts to the destination's dtype.
ParamSource weights_source(const Llama& model, const std::string& dir);

// Builds a model from a folder: config.json, then the weights.
std::unique_ptr<Llama> load_hf_model(const std::string& dir, c10::Device device = c10::kCPU,
                                     c10::ScalarType dtype = c10::kFloat);

struct SaveOptions {
  c10::ScalarType dtype = c10::kFloat;       // dtype of the stored tensors (torch_dtype)
  std::int64_t max_shard_bytes = 5LL << 30;  // HF's default 5 GB shards; <= 0: one file
  std::string tokenizer_model;               // sentencepiece .model to copy alongside ("" = none)
  // Writes the tokenizer's files into the folder being built (data::Tokenizer::write_hf_files);
  // takes the place of tokenizer_model when set (the model module knows no tokenizer).
  std::function<void(const std::string& dir)> write_tokenizer;
};

// Writes the folder crash-safely (into DIR.tmp, then renamed over DIR). Load -> save ->
// load is bit-exact when the dtype is unchanged.
void save_hf_model(const Llama& model, const std::string& dir, const SaveOptions& opts);

// The same folder for a model whose parameters are handed over one at a time: `fetch(i)`
// is called once per parameter, in parameters() order (tied lm_head excluded), and its
// tensor (any device or dtype) is written and dropped before the next call. Shards
// (model-0000X-of-0000N.safetensors + index, max_shard_bytes each) are planned from the
// shapes up front, so memory holds one parameter at a time: how a ZeRO-3 run exports a
// model no rank holds whole (the fetch gathers one unit at a time).
void save_hf_model(const LlamaConfig& cfg, const std::function<at::Tensor(std::size_t)>& fetch,
                   const std::string& dir, const SaveOptions& opts);

}  // namespace sft::model
