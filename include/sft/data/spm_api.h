/* C ABI between sft and its sentencepiece plugin (libsft_spm.so).
 *
 * Debian's libsentencepiece carries its own protobuf, which clashes with libtorch's in one
 * process; the plugin is therefore loaded with dlopen(RTLD_LOCAL | RTLD_DEEPBIND) and only
 * this plain-C table crosses the boundary. Buffers are caller-owned: a call that needs more
 * room than `cap` returns the size it needs and writes nothing past `cap`. */
#ifndef SFT_DATA_SPM_API_H_
#define SFT_DATA_SPM_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SFT_SPM_API_VERSION 1

typedef struct sft_spm_api {
  int version;
  /* Returns a handle, or NULL with a message in err. */
  void* (*load)(const char* path, char* err, size_t err_cap);
  void (*free)(void* h);
  int32_t (*vocab_size)(void* h);
  int32_t (*bos_id)(void* h);
  int32_t (*eos_id)(void* h);
  int32_t (*pad_id)(void* h);
  int32_t (*unk_id)(void* h);
  int32_t (*piece_to_id)(void* h, const char* piece, size_t len);
  /* Encodes text (no BOS/EOS added) into out; returns the number of ids, or -1 on error. */
  int64_t (*encode)(void* h, const char* text, size_t len, int32_t* out, int64_t cap);
  /* Decodes ids into UTF-8 text; returns its length (may exceed cap), or -1 on error. */
  int64_t (*decode)(void* h, const int32_t* ids, int64_t n, char* out, int64_t cap);
  int64_t (*id_to_piece)(void* h, int32_t id, char* out, int64_t cap);
  int (*is_control)(void* h, int32_t id);
  int (*is_byte)(void* h, int32_t id);
  int (*is_unknown)(void* h, int32_t id);
} sft_spm_api;

typedef const sft_spm_api* (*sft_spm_get_api_fn)(void);
#define SFT_SPM_GET_API_SYMBOL "sft_spm_get_api"

#ifdef __cplusplus
}
#endif

#endif /* SFT_DATA_SPM_API_H_ */
