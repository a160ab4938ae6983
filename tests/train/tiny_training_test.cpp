// A few training steps of the tiny model on the shipped data reduce the loss, and the
// exported model folder is complete.
#include <gtest/gtest.h>

#include "sft/config/run_config.h"
#include "sft/train/trainer.h"
#include "sft/util/fs.h"
#include "test_util.h"

namespace sft::train {
namespace {

TEST(TinyTraining, FewStepsOfDmtReduceTheLossInEachStage) {
  test::TempDir out;
  auto cfg = config::load_run_config(
      test::source_dir() + "/configs/tiny/dmt.yaml",
      {"output_dir=" + out.path(), "tokenizer=" + test::tiny("tokenizer.model"),
       "datasets.math.path=" + test::tiny("math_train.jsonl"),
       "datasets.code.path=" + test::tiny("code_train.json"),
       "datasets.general.path=" + test::tiny("general_train.json"), "data.cache_dir=" + out.file("cache"),
       "datasets.math.fraction=1/16", "datasets.code.fraction=1/16", "datasets.general.fraction=1/4",
       "train.log_every=5", "train.threads=1",
       // Both stages at the full peak lr, one pass: on this little data the shipped config's
       // gentle stage 2 (a quarter of the lr) moves the loss too little for the check.
       "strategy.stage_overrides.general.lr=2e-3", "strategy.stage_overrides.general.epochs=1"});
  Trainer trainer(cfg, {});
  TrainResult r = trainer.fit();
  ASSERT_EQ(r.stage_first_loss.size(), 2u);
  for (std::size_t s = 0; s < 2; ++s)
    EXPECT_LT(r.stage_last_loss[s], 0.8 * r.stage_first_loss[s]) << "stage " << s;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "generation_config.json"})
    EXPECT_TRUE(fs::exists(fs::join(r.final_dir, f))) << f;
  EXPECT_TRUE(fs::exists(out.file("stage1_specialised/model.safetensors")));
  EXPECT_TRUE(fs::exists(out.file("metrics.jsonl")));
  EXPECT_TRUE(fs::exists(out.file("data_manifest.json")));
}

}  // namespace
}  // namespace sft::train
