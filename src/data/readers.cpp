// Dataset files read record by record: JSON Lines, JSON arrays (each element on its own),
// plain text, each of them gzip-compressed as ".gz" too; bad records counted or fatal (readers.h).
// A path that is not a regular file (a folder, FIFO or device) is refused, exit code 2. The
// formats: record_formats.cpp.
#include "sft/data/readers.h"

#include "data/record_formats.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <functional>
#include <optional>

#include "sft/util/error.h"
#include "sft/util/safe_io.h"
#include "sft/util/fs.h"

namespace sft::data {
namespace {

using nlohmann::json;

struct Chunk {
  std::size_t begin, end;
  std::int64_t line;
};

// Splits a JSON array document into its top-level elements without parsing them, so each
// element can be parsed (and reported) on its own with its starting line.
std::vector<Chunk> split_json_array(const std::string& text, std::size_t start, const std::string& file) {
  std::vector<Chunk> out;
  std::int64_t line = 1;
  for (std::size_t i = 0; i < start; ++i)
    if (text[i] == '\n') ++line;
  std::size_t i = start + 1;  // past '['
  int depth = 0;
  bool in_string = false;
  std::size_t elem_begin = std::string::npos;
  std::int64_t elem_line = 0;
  bool expect_value = true;
  for (; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\n') ++line;
    if (in_string) {
      if (c == '\\') {
        ++i;
        if (i < text.size() && text[i] == '\n') ++line;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    if (depth == 0) {
      if (c == ']') {
        if (elem_begin != std::string::npos)
          out.push_back({elem_begin, i, elem_line});
        else if (!expect_value || !out.empty())
          throw DataError(file + ":" + std::to_string(line) + ": malformed JSON: trailing comma before ']'");
        for (std::size_t k = i + 1; k < text.size(); ++k)
          if (!std::isspace(static_cast<unsigned char>(text[k])))
            throw DataError(file + ":" + std::to_string(line) +
                            ": malformed JSON: unexpected text after the closing ']'");
        return out;
      }
      if (c == ',') {
        if (elem_begin == std::string::npos)
          throw DataError(file + ":" + std::to_string(line) + ": malformed JSON: unexpected ','");
        out.push_back({elem_begin, i, elem_line});
        elem_begin = std::string::npos;
        expect_value = true;
        continue;
      }
      if (elem_begin == std::string::npos) {
        if (!expect_value)
          throw DataError(file + ":" + std::to_string(line) +
                          ": malformed JSON: missing ',' between elements");
        elem_begin = i;
        elem_line = line;
        expect_value = false;
      }
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[')
      ++depth;
    else if (c == '}' || c == ']') {
      if (--depth < 0)
        throw DataError(file + ":" + std::to_string(line) + ": malformed JSON: unbalanced '" + c + "'");
    }
  }
  throw DataError(file + ":" + std::to_string(line) +
                  ": malformed JSON: the file ends inside the top-level array (truncated?)");
}

std::string parse_error_text(const json::parse_error& e) {
  std::string w = e.what();
  // "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error ..." -> the tail
  auto pos = w.find(": ", w.find("parse error"));
  return pos == std::string::npos ? w : w.substr(pos + 2);
}

// One dataset file's records, read by the reader its text calls for: bad records counted or
// fatal, each named by file:line (and array element).
class DatasetReader {
 public:
  DatasetReader(const config::DatasetSpec& spec, const std::string& text, config::OnBadRecord on_bad_record,
                bool keep_unanswered, std::int64_t max_record_bytes)
      : spec_(spec),
        file_(spec.path),
        text_(text),
        skip_(on_bad_record == config::OnBadRecord::kSkip),
        keep_unanswered_(keep_unanswered),
        // A record larger than this is refused before it is parsed: a 50 MB line would take
        // gigabytes as a JSON tree. Real records are kilobytes.
        max_bytes_(static_cast<std::size_t>(std::max<std::int64_t>(1, max_record_bytes))) {}

  ReadResult take() { return std::move(res_); }

  // Plain-text corpora: one document per blank-line separated paragraph.
  void read_text() {
    std::int64_t line = 1, doc_line = 0, index = 0;
    std::string doc;
    std::size_t i = 0;
    auto flush = [&]() {
      if (doc.empty()) return;
      ++res_.read;
      Record r;
      r.origin = {file_, doc_line, index, spec_.name + ":" + std::to_string(index)};
      ++index;
      if (doc.size() > max_bytes_) {
        bad(doc_line, too_large(doc.size()));
      } else if (!valid_utf8(doc)) {
        bad(doc_line, "invalid UTF-8");
      } else {
        r.is_text = true;
        r.text = doc;
        res_.records.push_back(std::move(r));
      }
      doc.clear();
    };
    while (i < text_.size()) {
      std::size_t nl = text_.find('\n', i);
      if (nl == std::string::npos) nl = text_.size();
      std::string_view l(text_.data() + i, nl - i);
      if (!l.empty() && l.back() == '\r') l.remove_suffix(1);  // CRLF files train on the same text as LF ones
      bool blank = l.find_first_not_of(" \t\r") == std::string_view::npos;
      if (blank)
        flush();
      else {
        if (doc.empty())
          doc_line = line;
        else
          doc.push_back('\n');
        doc.append(l);
      }
      i = nl + 1;
      ++line;
    }
    flush();
  }

  // A JSON array starting at text[start], each element parsed (and reported) on its own.
  void read_array(std::size_t start) {
    std::vector<Chunk> chunks = split_json_array(text_, start, file_);
    if (chunks.empty()) throw DataError(file_ + ": the JSON array is empty (datasets." + spec_.name + ")");
    std::int64_t index = 0;
    for (const auto& c : chunks) {
      ++res_.read;
      element_ = index;
      json j;
      try {
        j = parse(c.begin, c.end);
      } catch (const json::parse_error& e) {
        std::int64_t line = c.line;
        std::size_t upto = std::min(c.begin + (e.byte > 0 ? e.byte - 1 : 0), c.end);
        for (std::size_t k = c.begin; k < upto; ++k)
          if (text_[k] == '\n') ++line;
        bad(line, "malformed JSON: " + parse_error_text(e));
        ++index;
        continue;
      } catch (const BadInput& b) {
        bad(c.line, b.reason);
        ++index;
        continue;
      }
      handle(j, c.line, index++);
    }
  }

  // JSON Lines.
  void read_lines() {
    std::int64_t line = 1, index = 0;
    std::size_t i = 0;
    while (i < text_.size()) {
      std::size_t nl = text_.find('\n', i);
      if (nl == std::string::npos) nl = text_.size();
      std::size_t b = i, e = nl;
      while (b < e && std::isspace(static_cast<unsigned char>(text_[b]))) ++b;
      while (e > b && std::isspace(static_cast<unsigned char>(text_[e - 1]))) --e;
      if (b < e) {
        ++res_.read;
        json j;
        bool ok = true;
        try {
          j = parse(b, e);
        } catch (const BadInput& bi) {
          ok = false;
          bad(line, bi.reason);
        } catch (const json::parse_error& err) {
          ok = false;
          std::string why = parse_error_text(err);
          if (line == 1 && text_[b] == '{' && why.find("end of input") != std::string::npos)
            why += " (is this a pretty-printed JSON object? expected one object per line or a JSON array)";
          bad(line, "malformed JSON: " + why);
        }
        if (ok) handle(j, line, index);
        ++index;
      }
      i = nl + 1;
      ++line;
    }
  }

 private:
  void bad(std::int64_t line, std::string reason) {
    const std::string where = file_ + ":" + std::to_string(line);
    if (element_ >= 0) reason += " (array element " + std::to_string(element_) + ", from 0)";
    if (!skip_)
      throw DataError(where + ": " + reason + " (data.on_bad_record: skip counts and skips bad records)");
    res_.bad.push_back({where, reason});
  }

  void handle(const json& j, std::int64_t line, std::int64_t index) {
    Record r;
    r.origin = {file_, line, index, ""};
    try {
      if (!j.is_object()) throw BadInput{std::string("expected a JSON object, got a ") + type_name(j)};
      if (!spec_.filter_field.empty()) {
        auto it = j.find(spec_.filter_field);
        if (it == j.end() || *it != spec_.filter_equals) {
          ++res_.filtered;
          return;
        }
      }
      parse_record(spec_, j, r, res_, keep_unanswered_);
      r.origin.id = id_of(j, spec_.format == config::Format::kMtbench ? "question_id" : "id");
      if (r.origin.id.empty()) r.origin.id = spec_.name + ":" + std::to_string(index);
      res_.records.push_back(std::move(r));
    } catch (const BadInput& b) {
      bad(line, b.reason);
    }
  }

  std::string too_large(std::size_t bytes) const {
    return "a record of " + std::to_string(bytes) + " bytes, above data.max_record_bytes (" +
           std::to_string(max_bytes_) +
           "): a corrupt or non-dataset file? (raise data.max_record_bytes if it is real)";
  }

  json parse(std::size_t b, std::size_t e) const {
    if (e - b > max_bytes_) throw BadInput{too_large(e - b)};
    try {
      return json::parse(text_.begin() + static_cast<std::ptrdiff_t>(b),
                         text_.begin() + static_cast<std::ptrdiff_t>(e));
    } catch (const std::bad_alloc&) {
      throw BadInput{"out of memory parsing a record of " + std::to_string(e - b) +
                     " bytes (lower data.max_record_bytes)"};
    }
  }

  const config::DatasetSpec& spec_;
  const std::string& file_;
  const std::string& text_;
  const bool skip_, keep_unanswered_;
  const std::size_t max_bytes_;
  ReadResult res_;
  // In a JSON array the line alone may not say which record (a one-line array): the reason
  // names the element too.
  std::int64_t element_ = -1;
};

}  // namespace

ReadResult read_dataset(const config::DatasetSpec& spec, config::OnBadRecord on_bad_record,
                        bool keep_unanswered, std::int64_t max_record_bytes) {
  const std::string& file = spec.path;
  if (!fs::exists(file)) throw DataError(file + ": dataset file not found (datasets." + spec.name + ".path)");
  std::string text = fs::read_input_file(file, "datasets." + spec.name + ".path");  // ".gz": decompressed
  std::size_t start = 0;
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) start = 3;  // UTF-8 byte-order mark
  while (start < text.size() && std::isspace(static_cast<unsigned char>(text[start]))) ++start;
  if (start >= text.size()) throw DataError(file + ": empty file (datasets." + spec.name + ")");

  DatasetReader reader(spec, text, on_bad_record, keep_unanswered, max_record_bytes);
  const std::string plain = fs::without_gz(file);  // "a.txt.gz" holds text
  if (spec.format == config::Format::kText && plain.size() > 4 &&
      plain.compare(plain.size() - 4, 4, ".txt") == 0)
    reader.read_text();
  else if (text[start] == '[')
    reader.read_array(start);
  else if (text[start] != '{')
    throw DataError(file +
                    ":1: malformed JSON: expected a JSON array '[...]' or one JSON object per line (jsonl)");
  else
    reader.read_lines();
  return reader.take();
}

}  // namespace sft::data
