#include "config/yaml_tree.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <limits>

#include "sft/util/error.h"

namespace sft::config {
namespace {

const std::map<std::string, std::string> kShorthands = {
    {"strategy", "name"}, {"tokenizer", "path"}, {"template", "name"}};

bool is_plain_null(const YAML::Node& n) {
  if (n.IsNull()) return true;
  if (!n.IsScalar() || n.Tag() == "!") return false;
  const std::string& s = n.Scalar();
  return s == "~" || s == "null" || s == "Null" || s == "NULL";
}

std::string child_path(const std::string& parent, const std::string& key, bool index) {
  if (index) return parent + "[" + key + "]";
  return parent.empty() ? key : parent + "." + key;
}

void convert(const YAML::Node& n, const std::string& path, Tree& out, Document& doc) {
  if (!n.Mark().is_null() && !path.empty()) doc.lines.emplace(path, n.Mark().line + 1);
  if (is_plain_null(n)) {
    out = nullptr;
  } else if (n.IsScalar()) {
    out = n.Scalar();
  } else if (n.IsSequence()) {
    out = Tree::array();
    std::size_t i = 0;
    for (const auto& item : n) {
      Tree child;
      convert(item, child_path(path, std::to_string(i++), true), child, doc);
      out.push_back(std::move(child));
    }
  } else if (n.IsMap()) {
    out = Tree::object();
    for (auto it = n.begin(); it != n.end(); ++it) {
      if (!it->first.IsScalar())
        throw ConfigError(doc.file, it->first.Mark().line + 1, path, "map keys must be plain strings");
      std::string key = it->first.Scalar();
      std::string p = child_path(path, key, false);
      if (out.contains(key)) throw ConfigError(doc.file, it->first.Mark().line + 1, p, "duplicate key");
      // The key's own line is the most useful location for errors about its value.
      doc.lines[p] = it->first.Mark().line + 1;
      Tree child;
      convert(it->second, p, child, doc);
      doc.lines[p] = it->first.Mark().line + 1;
      out[key] = std::move(child);
    }
  } else {
    out = nullptr;
  }
}

bool is_index(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

Tree yaml_value_to_tree(const std::string& text, const std::string& assignment) {
  if (text.empty()) return nullptr;
  try {
    YAML::Node n = YAML::Load(text);
    Document scratch;
    scratch.file = "--set";
    Tree t;
    convert(n, "", t, scratch);
    return t;
  } catch (const YAML::Exception& e) {
    throw ConfigError("--set " + assignment + ": cannot parse the value: " + e.msg);
  }
}

YAML::Node tree_to_yaml(const Tree& t) {
  if (t.is_null()) return YAML::Node(YAML::NodeType::Null);
  if (t.is_string()) return YAML::Node(t.get<std::string>());
  if (t.is_array()) {
    YAML::Node n(YAML::NodeType::Sequence);
    for (const auto& c : t) n.push_back(tree_to_yaml(c));
    return n;
  }
  if (t.is_object()) {
    YAML::Node n(YAML::NodeType::Map);
    for (auto it = t.begin(); it != t.end(); ++it) n[it.key()] = tree_to_yaml(it.value());
    return n;
  }
  return YAML::Node(t.dump());  // numbers/bools only appear in trees built by code
}

}  // namespace

void check_yaml_text(const std::string& text, const std::string& file) {
  // Depth = open flow brackets + block indentation levels, per line (quoted text skipped).
  std::vector<std::size_t> indents;
  int brackets = 0, line = 1;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    const std::string_view l(text.data() + at, end - at);
    const std::size_t indent = l.find_first_not_of(" -");
    if (indent != std::string_view::npos && l[indent] != '#' && brackets == 0) {
      while (!indents.empty() && indents.back() >= indent) indents.pop_back();
      indents.push_back(indent);
    }
    char quote = 0;
    for (char c : l) {
      if (quote) {
        if (c == quote) quote = 0;
      } else if (c == '"' || c == '\'') {
        quote = c;
      } else if (c == '#') {
        break;
      } else if (c == '[' || c == '{') {
        ++brackets;
      } else if ((c == ']' || c == '}') && brackets > 0) {
        --brackets;
      }
      if (brackets + static_cast<int>(indents.size()) > kMaxYamlDepth)
        throw ConfigError(file, line, "",
                          "nests deeper than " + std::to_string(kMaxYamlDepth) +
                              " levels; a run config is a few levels deep");
    }
    at = end + 1;
    ++line;
  }
}

namespace {
void count_values(const YAML::Node& n, std::size_t& seen, const std::string& file) {
  if (++seen > kMaxYamlValues)
    throw ConfigError(file, n.Mark().is_null() ? 0 : n.Mark().line + 1, "",
                      "expands to more than " + std::to_string(kMaxYamlValues) +
                          " values (aliases of aliases?); a run config holds a few hundred");
  if (n.IsSequence())
    for (const auto& item : n) count_values(item, seen, file);
  else if (n.IsMap())
    for (auto it = n.begin(); it != n.end(); ++it) count_values(it->second, seen, file);
}
}  // namespace

void check_yaml_values(const YAML::Node& root, const std::string& file) {
  std::size_t seen = 0;
  count_values(root, seen, file);
}

Document parse_yaml(const std::string& text, const std::string& file) {
  Document doc;
  doc.file = file;
  check_yaml_text(text, file);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(file, e.mark.line + 1, "", "YAML syntax error: " + e.msg);
  }
  check_yaml_values(root, file);
  if (root.IsNull()) {
    doc.root = Tree::object();
    return doc;
  }
  if (!root.IsMap())
    throw ConfigError(file, 1, "", "the top level must be a map of keys (model, datasets, train, ...)");
  convert(root, "", doc.root, doc);
  return doc;
}

std::size_t index_value(const std::string& s) {
  if (!is_index(s) || s.size() > 9) return std::numeric_limits<std::size_t>::max();  // past any list
  return static_cast<std::size_t>(std::stoul(s));
}

std::vector<std::string> split_key_path(const std::string& path) {
  std::vector<std::string> parts;
  std::string cur;
  for (std::size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    if (c == '.') {
      if (!cur.empty()) parts.push_back(cur);
      cur.clear();
    } else if (c == '[') {
      if (!cur.empty()) parts.push_back(cur);
      cur.clear();
      auto close = path.find(']', i);
      if (close == std::string::npos) return {};
      parts.push_back(path.substr(i + 1, close - i - 1));
      i = close;
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) parts.push_back(cur);
  return parts;
}

std::string join_key_path(const std::vector<std::string>& parts, const Tree* root) {
  std::string out;
  const Tree* node = root;
  for (const auto& p : parts) {
    bool idx = node && node->is_array() && is_index(p);
    out = child_path(out, p, idx);
    if (node && node->is_object() && node->contains(p))
      node = &(*node)[p];
    else if (idx && index_value(p) < node->size())
      node = &(*node)[index_value(p)];
    else
      node = nullptr;
  }
  return out;
}

void normalise_shorthands(Document& doc) {
  for (const auto& [key, field] : kShorthands) {
    if (doc.root.contains(key) && doc.root[key].is_string()) {
      Tree m = Tree::object();
      m[field] = doc.root[key];
      doc.root[key] = std::move(m);
      auto it = doc.lines.find(key);
      if (it != doc.lines.end()) doc.lines[key + "." + field] = it->second;
    }
  }
}

void apply_override(Document& doc, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("--set " + assignment + ": expected key.path=value (e.g. train.lr=1e-4)");
  std::string key = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  std::vector<std::string> parts = split_key_path(key);
  if (parts.empty()) throw ConfigError("--set " + assignment + ": malformed key path \"" + key + "\"");
  // A bare scalar for a shorthand key sets its main field.
  Tree v = yaml_value_to_tree(value, assignment);
  if (parts.size() == 1 && kShorthands.count(parts[0]) && v.is_string())
    parts.push_back(kShorthands.at(parts[0]));

  Tree* node = &doc.root;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    bool last = i + 1 == parts.size();
    if (node->is_array()) {
      if (!is_index(p))
        throw ConfigError("--set " + assignment + ": \"" + p +
                          "\" must be a list index (the key holds a list)");
      std::size_t idx = index_value(p);
      if (idx > node->size())
        throw ConfigError("--set " + assignment + ": index " + p + " is past the end of a list of " +
                          std::to_string(node->size()));
      if (idx == node->size()) node->push_back(last ? v : Tree::object());
      node = &(*node)[idx];
    } else {
      if (node->is_null()) *node = Tree::object();
      if (!node->is_object())
        throw ConfigError("--set " + assignment + ": cannot set \"" + p + "\" inside a scalar value");
      if (!node->contains(p)) (*node)[p] = last ? v : Tree::object();
      node = &(*node)[p];
    }
    if (last) *node = v;
  }
  doc.overridden.insert(join_key_path(parts, &doc.root));
}

std::string to_yaml(const Tree& t) {
  YAML::Emitter out;
  out << tree_to_yaml(t);
  return std::string(out.c_str()) + "\n";
}

}  // namespace sft::config
