// Single-thread encode throughput of sft's HfTokenizer against the Hugging Face `tokenizers`
// library (bench/tokenize_bench.py), side by side in one run, on the same texts: every
// message of a ShareGPT file, or every field of a GSM8K / Code Alpaca file.
//
// Not part of the CMake build (a standalone harness, like the scripts beside it). Build:
//   g++ -std=c++20 -O2 -Iinclude -Isrc bench/tokenize_bench.cpp src/data/hf_*.cpp
//       src/util/{error,fs,hash}.cpp -lpcre2-8 -lutf8proc -lpthread -o tokenize_bench  (one line)
// Run:
//   ./tokenize_bench TOKENIZER.json DATA.json [DATA.json ...] [--reps N] [--python PY]
// Rounds alternate the two sides. In each, a side loads its tokenizer afresh and makes two
// passes over all texts: the first with an empty word cache (cold), the second with the
// cache the first filled (warm), as tokenizers' own BPE cache works. Figures are medians over
// rounds. Both sides count add_special_tokens=False ids, and the counts must agree.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "sft/data/hf_tokenizer.h"

#ifndef SFT_BENCH_DIR
#define SFT_BENCH_DIR "bench"  // run from the repository root, or define it
#endif

namespace {

using nlohmann::json;

// ShareGPT: every conversations[].value; Code Alpaca: instruction, input, output; GSM8K
// (JSONL): question, answer.
std::vector<std::string> read_texts(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::stringstream buf;
  buf << in.rdbuf();
  std::string text = buf.str();
  std::vector<json> records;
  if (path.ends_with(".jsonl")) {
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);)
      if (!line.empty()) records.push_back(json::parse(line));
  } else {
    records = json::parse(text).get<std::vector<json>>();
  }
  std::vector<std::string> out;
  for (const json& r : records) {
    if (r.contains("conversations")) {
      for (const json& m : r["conversations"]) out.push_back(m["value"]);
      continue;
    }
    for (const char* key : {"question", "answer", "instruction", "input", "output"})
      if (r.contains(key)) out.push_back(r[key]);
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files;
  int reps = 5;
  std::string python = "python3";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (a == "--python" && i + 1 < argc) {
      python = argv[++i];
    } else {
      files.push_back(a);
    }
  }
  if (files.size() < 2 || reps < 1) {
    std::cerr << "usage: tokenize_bench TOKENIZER.json DATA.json [DATA.json ...] [--reps N] [--python PY]\n";
    return 2;
  }
  const std::string tokenizer_path = files[0];
  std::vector<std::string> texts;
  for (std::size_t i = 1; i < files.size(); ++i) {
    auto more = read_texts(files[i]);
    texts.insert(texts.end(), more.begin(), more.end());
  }
  std::size_t bytes = 0;
  for (const auto& t : texts) bytes += t.size();

  char tmpl[] = "/tmp/tokenize_bench.XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) return 1;
  ::close(fd);
  {
    std::ofstream out(tmpl);
    for (const auto& t : texts) out << json(t).dump() << "\n";
  }
  const std::string script = std::string(SFT_BENCH_DIR) + "/tokenize_bench.py";
  // One round of tokenizers: its process loads the file and times a cold and a warm pass.
  auto run_python = [&](std::vector<double>& cold, std::vector<double>& warm, long& tokens) {
    std::string cmd = "TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 '" + python + "' '" + script + "' '" +
                      tokenizer_path + "' '" + tmpl + "' --reps 2";
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    if (::pclose(p) != 0) throw std::runtime_error("tokenize_bench.py failed: " + out);
    json j = json::parse(out);
    cold.push_back(j["seconds"][0].get<double>());
    warm.push_back(j["seconds"][1].get<double>());
    tokens = j["tokens"].get<long>();
  };
  // One round of sft: a fresh load (a new model: its word caches start empty), two passes.
  std::vector<double> load_s;
  auto run_sft = [&](std::vector<double>& cold, std::vector<double>& warm, long& tokens) {
    auto start = std::chrono::steady_clock::now();
    auto tok = sft::data::HfTokenizer::load(tokenizer_path);
    load_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    for (auto* times : {&cold, &warm}) {
      start = std::chrono::steady_clock::now();
      long n = 0;
      for (const auto& t : texts) n += static_cast<long>(tok->encode(t).size());
      times->push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      tokens = n;
    }
  };

  std::vector<double> sft_cold, sft_warm, hf_cold, hf_warm;
  long sft_tokens = 0, hf_tokens = 0;
  for (int r = 0; r < reps; ++r) {
    run_python(hf_cold, hf_warm, hf_tokens);
    run_sft(sft_cold, sft_warm, sft_tokens);
  }
  std::remove(tmpl);

  auto row = [&](const char* name, double s, long tokens) {
    std::printf("%-34s %9.4f s %12.0f tokens/s %8.2f MB/s\n", name, s, tokens / s, bytes / s / 1e6);
  };
  std::printf("%zu texts, %zu bytes, %ld tokens; %d rounds, alternating; medians (sft load %.2f s)\n",
              texts.size(), bytes, sft_tokens, reps, median(load_s));
  row("sft HfTokenizer, cold cache", median(sft_cold), sft_tokens);
  row("tokenizers 1 thread, cold cache", median(hf_cold), hf_tokens);
  row("sft HfTokenizer, warm cache", median(sft_warm), sft_tokens);
  row("tokenizers 1 thread, warm cache", median(hf_warm), hf_tokens);
  std::printf("sft / tokenizers: %.2fx cold, %.2fx warm\n", median(hf_cold) / median(sft_cold),
              median(hf_warm) / median(sft_warm));
  if (sft_tokens != hf_tokens) {
    std::printf("token counts differ: sft %ld, tokenizers %ld\n", sft_tokens, hf_tokens);
    return 1;
  }
  return 0;
}
