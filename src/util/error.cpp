#include "sft/util/error.h"

namespace sft {

ConfigError::ConfigError(const std::string& file, int line, const std::string& key,
                         const std::string& msg)
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
