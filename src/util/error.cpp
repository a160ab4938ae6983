#include "sft/util/error.h"

#include "sft/util/safe_io.h"

namespace sft {

// Here rather than in safe_io.cpp: the safetensors fuzz harness (tests/model/safetensors_test.cpp)
// links the header parser with this file alone.
std::string json_error_text(const std::exception& e) {
  std::string w = e.what();
  if (w.rfind("[json.exception.", 0) == 0) {
    const auto close = w.find("] ");
    if (close != std::string::npos) w = w.substr(close + 2);
  }
  return w;
}

ConfigError::ConfigError(const std::string& file, int line, const std::string& key, const std::string& msg)
    : Error((file.empty() ? std::string() : file + (line > 0 ? ":" + std::to_string(line) : "") + ": ") +
            (key.empty() ? std::string() : key + ": ") + msg) {}

void rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (const ConfigError& e) {
    throw ConfigError(context + ": " + e.what());
  } catch (const DataError& e) {
    throw DataError(context + ": " + e.what());
  } catch (const CheckpointError& e) {
    throw CheckpointError(context + ": " + e.what());
  } catch (const RunLockedError& e) {
    throw RunLockedError(context + ": " + e.what());
  } catch (const std::exception& e) {
    throw Error(context + ": " + e.what());
  }
}

}  // namespace sft
