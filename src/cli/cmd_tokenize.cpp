// sft tokenize: a tokenizer's ids for texts, or the texts of ids (--decode), as users check a
// tokenizer against its library (`tokenizers`, sentencepiece) and as tests check sft from outside.
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "sft/data/tokenizer.h"
#include "sft/util/error.h"
#include "sft/util/fs.h"

namespace sft::cli {
namespace {

struct TokenizeArgs {
  std::string tokenizer, text, input, ids;
  bool json = false, decode = false, no_special = false;
};
TokenizeArgs T;

void print_ids(const std::vector<std::int32_t>& ids) {
  if (T.json) {
    std::cout << nlohmann::json{{"ids", ids}}.dump() << "\n";
    return;
  }
  for (std::size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
  std::cout << "\n";
}

void print_text(const std::string& text) {
  if (T.json)
    std::cout << nlohmann::json{{"text", text}}.dump() << "\n";
  else
    std::cout << text << "\n";
}

int run() {
  const int given = !T.text.empty() + !T.input.empty() + !T.ids.empty();
  if (given != 1) throw ConfigError("give exactly one of --text, --ids (with --decode), --input");
  if (!T.ids.empty() && !T.decode)
    throw ConfigError("--ids needs --decode (to tokenize, give --text or --input)");
  if (!T.text.empty() && T.decode)
    throw ConfigError("--decode reads ids: give --ids 1,2,3 or --input lines of {\"ids\": [...]}");
  auto tok = data::Tokenizer::load(T.tokenizer);
  auto encode = [&](const std::string& s) {
    return T.no_special ? tok->encode(s) : tok->encode_with_special(s);
  };
  auto decode = [&](const std::vector<std::int32_t>& ids) {
    for (auto id : ids)
      if (id >= tok->vocab_size())
        throw ConfigError("id " + std::to_string(id) + " is outside " + tok->path() + "'s vocabulary of " +
                          std::to_string(tok->vocab_size()));
    return tok->decode(ids);
  };
  if (!T.text.empty()) {
    print_ids(encode(T.text));
    return 0;
  }
  if (!T.ids.empty()) {
    const auto ids = parse_token_ids(T.ids, "--ids");
    print_text(decode(std::vector<std::int32_t>(ids.begin(), ids.end())));
    return 0;
  }
  // --input: JSON lines, each {"text": ...} (or {"ids": [...]} with --decode).
  const std::string key = T.decode ? "ids" : "text";
  std::istringstream in(fs::read_file(T.input));
  std::string line;
  for (std::int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = T.input + ":" + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw DataError(where + ": not a JSON line");
    }
    if (!j.is_object() || !j.contains(key))
      throw DataError(where + ": expected a JSON object with \"" + key + "\"");
    if (T.decode) {
      if (!j[key].is_array()) throw DataError(where + ": \"ids\" must be a list of token ids");
      std::vector<std::int32_t> ids;
      for (const auto& x : j[key]) {
        if (!x.is_number_integer() || x.get<std::int64_t>() < 0 || x.get<std::int64_t>() > INT32_MAX)
          throw DataError(where + ": " + x.dump() + " is not a token id");
        ids.push_back(x.get<std::int32_t>());
      }
      print_text(decode(ids));
    } else {
      if (!j[key].is_string()) throw DataError(where + ": \"text\" must be a string");
      print_ids(encode(j[key].get<std::string>()));
    }
  }
  return 0;
}

}  // namespace

std::vector<Command> register_tokenize(CLI::App& app) {
  auto* c = app.add_subcommand("tokenize",
                               "a tokenizer's ids for texts (as its library gives them), or --decode ids");
  c->add_option("--tokenizer", T.tokenizer, "tokenizer.model, tokenizer.json, or a model folder holding one")
      ->required();
  c->add_option("--text", T.text, "a text to tokenize");
  c->add_option("--input", T.input,
                "JSON lines: {\"text\": ...} per line (with --decode: {\"ids\": [...]}); one result each");
  c->add_option("--ids", T.ids, "with --decode: comma-separated ids, e.g. 128000,9906");
  c->add_flag("--decode", T.decode, "the inverse: ids to text (special tokens left out)");
  c->add_flag("--no-special", T.no_special,
              "without the tokenizer's own special tokens (its BOS: LLaMA's; Qwen adds none), as sft's chat "
              "templates encode");
  c->add_flag("--json", T.json,
              "{\"ids\": [...]} (or {\"text\": ...}) per input; default: ids separated by spaces");
  return {{c, run}};
}

}  // namespace sft::cli
