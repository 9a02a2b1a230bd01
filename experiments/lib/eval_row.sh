# Sourced by the study scripts: eval_row MD_FILE ARGS... runs `advpure eval ARGS...` and writes its Markdown to MD_FILE.
# PROCS=N (default 1) shards the (seed, batch) tasks over N processes (what torchrun would start: RANK/WORLD_SIZE and
# a gloo rendezvous; torchrun itself cannot be used here, its parser takes `--n` for an ambiguous option of its own);
# use a batch size that leaves tasks to share. Rank 0 writes the results. One thread per process (OMP_NUM_THREADS).
eval_row() {
  local md=$1 r p=${PROCS:-1}; shift
  if [ "$p" -le 1 ]; then OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/advpure eval "$@" > "$md"; return; fi
  for ((r = p - 1; r >= 0; r--)); do
    RANK=$r LOCAL_RANK=$r WORLD_SIZE=$p MASTER_ADDR=127.0.0.1 MASTER_PORT=${PORT:-29517} \
      OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/advpure eval "$@" > "$([ "$r" = 0 ] && echo "$md" || echo /dev/null)" &
  done
  wait
}
