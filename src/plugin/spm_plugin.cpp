// The sentencepiece plugin: wraps sentencepiece::SentencePieceProcessor behind the C table
// of sft/data/spm_api.h. Built as a MODULE library linked only to libsentencepiece.
#include <sentencepiece_processor.h>

#include <cstring>
#include <string>
#include <vector>

#include "sft/data/spm_api.h"

namespace {

using Processor = sentencepiece::SentencePieceProcessor;

Processor* P(void* h) { return static_cast<Processor*>(h); }

void* spm_load(const char* path, char* err, size_t err_cap) {
  auto* sp = new Processor();
  auto status = sp->Load(path);
  if (!status.ok()) {
    std::string msg = status.ToString();
    if (err && err_cap > 0) {
      std::strncpy(err, msg.c_str(), err_cap - 1);
      err[err_cap - 1] = '\0';
    }
    delete sp;
    return nullptr;
  }
  return sp;
}

void spm_free(void* h) { delete P(h); }
int32_t spm_vocab_size(void* h) { return P(h)->GetPieceSize(); }
int32_t spm_bos(void* h) { return P(h)->bos_id(); }
int32_t spm_eos(void* h) { return P(h)->eos_id(); }
int32_t spm_pad(void* h) { return P(h)->pad_id(); }
int32_t spm_unk(void* h) { return P(h)->unk_id(); }

int32_t spm_piece_to_id(void* h, const char* piece, size_t len) {
  return P(h)->PieceToId(std::string(piece, len));
}

int64_t spm_encode(void* h, const char* text, size_t len, int32_t* out, int64_t cap) {
  std::vector<int> ids;
  if (!P(h)->Encode(std::string(text, len), &ids).ok()) return -1;
  int64_t n = static_cast<int64_t>(ids.size());
  for (int64_t i = 0; i < n && i < cap; ++i) out[i] = ids[static_cast<size_t>(i)];
  return n;
}

int64_t spm_decode(void* h, const int32_t* ids, int64_t n, char* out, int64_t cap) {
  std::vector<int> v(ids, ids + n);
  std::string text;
  if (!P(h)->Decode(v, &text).ok()) return -1;
  int64_t len = static_cast<int64_t>(text.size());
  if (len <= cap) std::memcpy(out, text.data(), text.size());
  return len;
}

int64_t spm_id_to_piece(void* h, int32_t id, char* out, int64_t cap) {
  if (id < 0 || id >= P(h)->GetPieceSize()) return -1;
  const std::string& piece = P(h)->IdToPiece(id);
  int64_t len = static_cast<int64_t>(piece.size());
  if (len <= cap) std::memcpy(out, piece.data(), piece.size());
  return len;
}

int spm_is_control(void* h, int32_t id) { return P(h)->IsControl(id) ? 1 : 0; }
int spm_is_byte(void* h, int32_t id) { return P(h)->IsByte(id) ? 1 : 0; }
int spm_is_unknown(void* h, int32_t id) { return P(h)->IsUnknown(id) ? 1 : 0; }

const sft_spm_api kApi = {SFT_SPM_API_VERSION, spm_load, spm_free, spm_vocab_size, spm_bos, spm_eos, spm_pad,
                          spm_unk, spm_piece_to_id, spm_encode, spm_decode, spm_id_to_piece, spm_is_control,
                          spm_is_byte, spm_is_unknown};

}  // namespace

extern "C" __attribute__((visibility("default"))) const sft_spm_api* sft_spm_get_api(void) { return &kApi; }
