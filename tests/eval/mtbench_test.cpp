// MT-Bench answers: the answer file of a tiny model follows FastChat's model_answer format
// for all 80 questions (checked here and by FastChat's own loading code, fschat in the venv).
#include "sft/eval/mtbench.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::eval {
namespace {

// FastChat's own loaders (fastchat/llm_judge/common.py: load_questions, load_model_answers,
// check_data) on sft's answer folder, then the judge's access pattern (gen_judgment.py).
// Importing that module pulls in the judges' API clients and the model adapters (openai,
// anthropic, psutil), which the venv does not have; the three loaders are plain functions,
// so they are taken from the installed file.
constexpr const char* kFastChatLoad = R"PY(
import ast, glob, json, os, sys, typing
import fastchat
path = os.path.join(os.path.dirname(fastchat.__file__), "llm_judge", "common.py")
tree = ast.parse(open(path).read())
wanted = {"load_questions", "load_model_answers", "check_data"}
defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
assert {d.name for d in defs} == wanted, "fschat %s: %s lacks one of %s" % (fastchat.__version__, path, wanted)
fc = {"json": json, "os": os, "glob": glob, "Optional": typing.Optional}
exec(compile(ast.Module(body=defs, type_ignores=[]), path, "exec"), fc)
questions = fc["load_questions"](sys.argv[2], None, None)
answers = fc["load_model_answers"](sys.argv[1])
fc["check_data"](questions, answers, {}, [sys.argv[3]], {})
model = answers[sys.argv[3]]
for q in questions:
    a = model[q["question_id"]]
    for t in range(len(q["turns"])):
        assert isinstance(a["choices"][0]["turns"][t], str)
print(len(questions), len(model))
)PY";

TEST(MtBenchFormat, ShortUuidsAndTemperaturesFollowFastChat) {
  Rng a(1), b(1);
  const std::string id = short_uuid(a);
  EXPECT_EQ(id.size(), 22u);
  EXPECT_EQ(id, short_uuid(b));  // seeded
  EXPECT_NE(id, short_uuid(a));
  EXPECT_EQ(id.find_first_of("01IOl"), std::string::npos);  // not in shortuuid's alphabet
  EXPECT_EQ(mtbench_temperature("writing"), 0.7);
  EXPECT_EQ(mtbench_temperature("math"), 0.0);
  EXPECT_EQ(mtbench_temperature("humanities"), 0.1);
  MtBenchQuestion q{81, "writing", {"a", "b"}};
  auto line = nlohmann::json::parse(mtbench_answer(q, id, "m", {"x", "y"}, 1.5).dump());
  EXPECT_EQ(check_mtbench_answer(line, q), "");
  line["choices"][0]["turns"].erase(1);
  EXPECT_NE(check_mtbench_answer(line, q), "");
}

TEST(MtBenchAnswers, ATinyModelsAnswerFileValidatesForAll80Questions) {
  SFT_REQUIRE_PYTHON();
  SFT_REQUIRE_SHARED_DATA();
  test::TempDir d;
  const std::string model = test::save_tiny_llama(3, d.file("model"));
  const std::string questions_path = test::shared_data() + "/sharegpt/fastchat/mt_bench/question.jsonl";
  auto r = test::run_sft(
      {"eval", "--model", model, "--benchmark", "mtbench", "--data", questions_path, "--max-new-tokens", "8",
       "--batch-size", "16", "--model-id", "tiny-sft", "--out", d.file("out/results.json"), "--threads", "2"},
      {}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("judge not run"), std::string::npos) << r.out;
  const std::string answers = d.file("out/model_answer/tiny-sft.jsonl");
  ASSERT_TRUE(fs::exists(answers));

  const auto questions = load_mtbench_questions(questions_path);
  ASSERT_EQ(questions.size(), 80u);
  std::istringstream in(test::read(answers));
  std::string line;
  std::set<std::string> answer_ids;
  std::size_t n = 0;
  std::int64_t last_id = 0;
  while (std::getline(in, line)) {
    ASSERT_LT(n, questions.size());
    auto j = nlohmann::json::parse(line);
    std::set<std::string> keys;
    for (auto it = j.begin(); it != j.end(); ++it) keys.insert(it.key());
    EXPECT_EQ(keys, (std::set<std::string>{"question_id", "answer_id", "model_id", "choices", "tstamp"}));
    const MtBenchQuestion* q = nullptr;
    for (const auto& x : questions)
      if (j["question_id"] == x.question_id) q = &x;
    ASSERT_NE(q, nullptr) << line;
    EXPECT_EQ(check_mtbench_answer(j, *q), "") << line;
    EXPECT_EQ(j["model_id"], "tiny-sft");
    EXPECT_GT(j["question_id"].get<std::int64_t>(), last_id);  // sorted by question_id
    last_id = j["question_id"].get<std::int64_t>();
    answer_ids.insert(j["answer_id"].get<std::string>());
    ++n;
  }
  EXPECT_EQ(n, 80u);
  EXPECT_EQ(answer_ids.size(), 80u);

  auto res = nlohmann::json::parse(test::read(d.file("out/results.json")));
  EXPECT_EQ(res["benchmark"], "mtbench");
  EXPECT_EQ(res["summary"]["questions"], 80);
  EXPECT_EQ(res["summary"]["turns"], 160);
  EXPECT_TRUE(res["summary"]["score"].is_null());
  EXPECT_NE(res["summary"]["judge"].get<std::string>().find("not run"), std::string::npos);
  EXPECT_EQ(res["samples"].size(), 80u);

  auto py = test::run_program(
      {test::python(), "-c", kFastChatLoad, d.file("out/model_answer"), questions_path, "tiny-sft"}, {}, 60);
  ASSERT_EQ(py.exit_code, 0) << py.err;
  EXPECT_EQ(py.out, "80 80\n");
}

}  // namespace
}  // namespace sft::eval
