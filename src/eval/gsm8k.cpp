#include "sft/eval/gsm8k.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "sft/eval/jsonl.h"
#include "sft/util/error.h"

namespace sft::eval {
namespace {

bool digit(const std::string& s, std::size_t i) {
  return i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]));
}

// The length of the minus sign that ends just before position i: '-' (1 byte) or U+2212 '−'
// (3 bytes in UTF-8; models and references write it too), 0 when there is none.
std::size_t minus_before(const std::string& s, std::size_t i) {
  if (i >= 1 && s[i - 1] == '-') return 1;
  if (i >= 3 && s.compare(i - 3, 3, "\xE2\x88\x92") == 0) return 3;
  return 0;
}

// A sign starting at k belongs to the number only when no letter or digit is glued before it.
bool sign_stands_alone(const std::string& s, std::size_t k) {
  return k == 0 || !std::isalnum(static_cast<unsigned char>(s[k - 1]));
}

// Numbers in text order: an optional minus sign, '-' or '−' (not after a letter or digit, so
// "5-3" is 5 and 3), digits with optional thousands commas (exactly three digits after each), an
// optional decimal part. A sentence's final period is not a decimal point.
std::vector<double> numbers(const std::string& s) {
  std::vector<double> out;
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const bool lead_dot = s[i] == '.' && digit(s, i + 1) && (i == 0 || !digit(s, i - 1));
    if (!digit(s, i) && !lead_dot) {
      ++i;
      continue;
    }
    // "$-5" and "-$5" are negative; "5-3" and "x-3" are not.
    bool neg = false;
    if (const std::size_t m = minus_before(s, i)) {
      neg = sign_stands_alone(s, i - m);
    } else if (i > 0 && s[i - 1] == '$') {
      if (const std::size_t m = minus_before(s, i - 1)) neg = sign_stands_alone(s, i - 1 - m);
    }
    std::string num;
    std::size_t j = i;
    bool dot = false;
    if (lead_dot) {
      num = "0.";
      dot = true;
      ++j;
    }
    while (j < n) {
      if (digit(s, j)) {
        num.push_back(s[j++]);
      } else if (s[j] == ',' && !dot && !num.empty() && digit(s, j + 1) && digit(s, j + 2) &&
                 digit(s, j + 3) && !digit(s, j + 4)) {
        ++j;  // thousands separator
      } else if (s[j] == '.' && !dot && digit(s, j + 1)) {
        num.push_back('.');
        dot = true;
        ++j;
      } else {
        break;
      }
    }
    out.push_back((neg ? -1.0 : 1.0) * std::strtod(num.c_str(), nullptr));
    i = j;
  }
  return out;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

std::optional<double> gsm8k_reference_answer(const std::string& answer) {
  auto p = answer.rfind("####");
  if (p == std::string::npos) return std::nullopt;
  auto v = numbers(answer.substr(p + 4));
  if (v.empty()) return std::nullopt;
  return v.front();
}

std::optional<double> gsm8k_predicted_answer(const std::string& text) {
  auto p = text.find("####");
  if (p != std::string::npos) {
    auto v = numbers(text.substr(p + 4));
    if (!v.empty()) return v.front();
  }
  auto v = numbers(text);
  if (v.empty()) return std::nullopt;
  return v.back();
}

bool gsm8k_match(std::optional<double> predicted, std::optional<double> reference) {
  if (!predicted || !reference) return false;
  return std::fabs(*predicted - *reference) <= 1e-6 * std::max(1.0, std::fabs(*reference));
}

std::vector<Gsm8kItem> load_gsm8k(const std::string& path, std::int64_t limit) {
  std::vector<Gsm8kItem> items;
  for_each_json_line(path, [&](const nlohmann::json& j, const std::string& where) {
    if (limit > 0 && static_cast<std::int64_t>(items.size()) >= limit) return;
    Gsm8kItem it{string_field(j, "question", where), string_field(j, "answer", where)};
    if (!gsm8k_reference_answer(it.answer))
      throw DataError(where + ": \"answer\" has no final \"#### <number>\" line");
    items.push_back(std::move(it));
  });
  if (items.empty()) throw DataError(path + ": no GSM8K records");
  return items;
}

std::vector<std::string> load_gsm8k_predictions(const std::string& path, const std::vector<Gsm8kItem>& items,
                                                std::int64_t references_in_file) {
  struct Line {
    std::optional<std::int64_t> idx;
    std::optional<std::string> question;
    std::string prediction, where;
  };
  std::vector<Line> lines;
  for_each_json_line(path, [&](const nlohmann::json& j, const std::string& where) {
    Line l;
    l.where = where;
    l.prediction = string_field(j, "prediction", where);
    if (j.contains("idx")) {
      if (!j["idx"].is_number_integer())
        throw DataError(where + ": \"idx\" must be an integer (0-based reference index)");
      l.idx = j["idx"].get<std::int64_t>();
    }
    if (j.contains("question") && j["question"].is_string()) l.question = j["question"].get<std::string>();
    lines.push_back(std::move(l));
  });
  const bool by_idx = !lines.empty() && std::all_of(lines.begin(), lines.end(),
                                                    [](const Line& l) { return l.idx.has_value(); });
  const auto n = static_cast<std::int64_t>(items.size());
  const std::int64_t in_file = references_in_file < 0 ? n : references_in_file;
  std::vector<std::optional<std::string>> out(items.size());
  for (std::size_t k = 0; k < lines.size(); ++k) {
    const Line& l = lines[k];
    const std::int64_t i = by_idx ? *l.idx : static_cast<std::int64_t>(k);
    if (by_idx && (i < 0)) throw DataError(l.where + ": \"idx\" " + std::to_string(i) + " is negative");
    if (i >= in_file)
      throw DataError(l.where +
                      (by_idx ? ": \"idx\" " + std::to_string(i) + " is past"
                              : ": prediction " + std::to_string(i + 1) + " but") +
                      " the reference file's " + std::to_string(in_file) +
                      " records; the predictions are for another file (or have extra lines)");
    if (i >= n) continue;  // beyond the scored range (--limit)
    auto& slot = out[static_cast<std::size_t>(i)];
    if (slot) throw DataError(l.where + ": a second prediction for reference " + std::to_string(i));
    if (l.question && trim(*l.question) != trim(items[static_cast<std::size_t>(i)].question))
      throw DataError(l.where + ": \"question\" differs from reference " + std::to_string(i) +
                      "'s; the predictions are not aligned with the reference file (give \"idx\" fields)");
    slot = l.prediction;
  }
  std::vector<std::string> preds;
  std::int64_t missing = 0;
  for (auto& p : out) {
    if (!p) ++missing;
    preds.push_back(p.value_or(""));
  }
  if (missing > 0)
    throw DataError(path + ": " + std::to_string(missing) + " of " + std::to_string(n) +
                    " references have no prediction (score a prefix with --limit N)");
  return preds;
}

nlohmann::ordered_json score_gsm8k(const std::vector<Gsm8kItem>& items,
                                   const std::vector<std::string>& predictions) {
  nlohmann::ordered_json samples = nlohmann::ordered_json::array();
  std::int64_t correct = 0, no_answer = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto ref = gsm8k_reference_answer(items[i].answer);
    const auto got = gsm8k_predicted_answer(predictions[i]);
    const bool ok = gsm8k_match(got, ref);
    correct += ok;
    no_answer += !got;
    samples.push_back({{"idx", i},
                       {"question", items[i].question},
                       {"reference", ref ? nlohmann::ordered_json(*ref) : nlohmann::ordered_json()},
                       {"prediction", predictions[i]},
                       {"extracted", got ? nlohmann::ordered_json(*got) : nlohmann::ordered_json()},
                       {"correct", ok}});
  }
  const double acc = items.empty() ? 0.0 : static_cast<double>(correct) / static_cast<double>(items.size());
  nlohmann::ordered_json summary = {{"metric", "accuracy"}, {"score", acc},      {"accuracy", acc},
                                    {"correct", correct},   {"n", items.size()}, {"no_answer", no_answer}};
  return {{"summary", summary}, {"samples", samples}};
}

}  // namespace sft::eval
