#!/usr/bin/env bash
# scripts/slurm/train.sbatch sizes each rank from the node it lands on: run under a fake
# srun (which prints its arguments and OMP_NUM_THREADS) with the variables Slurm sets in a
# batch job, for nodes of 64 and 224 CPUs, and with fewer GPUs than ranks (refused).
# Usage: tests/build/slurm_template.sh SOURCE_DIR WORK_DIR
set -uo pipefail
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work/bin"
printf '#!/bin/sh\necho "srun $* OMP_NUM_THREADS=$OMP_NUM_THREADS"\n' > "$work/bin/srun"
chmod +x "$work/bin/srun"
template="$src/scripts/slurm/train.sbatch"
fail() { echo "FAIL: $*"; exit 1; }

if grep -q "^#SBATCH --cpus-per-task" "$template"; then fail "the template asks a fixed --cpus-per-task"; fi
grep -q "^#SBATCH --exclusive" "$template" || fail "the template does not take whole nodes"

run() {  # run CPUS_ON_NODE TASKS_PER_NODE GPUS_ON_NODE: the template's output
  env PATH="$work/bin:$PATH" SLURM_JOB_ID=4242 SLURM_JOB_NAME=sft SLURM_CPUS_ON_NODE="$1" \
      SLURM_NTASKS_PER_NODE="$2" SLURM_GPUS_ON_NODE="$3" bash "$template" --set train.max_steps=1 2>&1
}
out=$(run 64 8 8) || fail "exit $? on a 64-CPU node: $out"
grep -q -- "--cpus-per-task=8 build/sft train --config configs/dmt_33b.yaml --output-dir runs/sft --resume auto --set train.max_steps=1 OMP_NUM_THREADS=8" <<< "$out" ||
  fail "64 CPUs / 8 ranks should give 8 each: $out"
out=$(run 224 8 8) || fail "exit $? on a 224-CPU node: $out"
grep -q -- "--cpus-per-task=28 .*OMP_NUM_THREADS=28" <<< "$out" || fail "224 CPUs / 8 ranks should give 28 each: $out"
out=$(run 4 8 8) || fail "exit $? on a 4-CPU node: $out"
grep -q -- "--cpus-per-task=1 .*OMP_NUM_THREADS=1" <<< "$out" || fail "fewer CPUs than ranks should give 1 each: $out"
out=$(run 64 8 4); rc=$?
[ "$rc" = 2 ] || fail "8 ranks on 4 GPUs should stop with exit 2, got $rc: $out"
grep -q "8 ranks per node but 4 GPUs per node: sft runs one rank per GPU" <<< "$out" || fail "no reason given: $out"
rm -rf "$work"
echo "passed: the Slurm template derives CPUs per rank from the node"
