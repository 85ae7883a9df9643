# Shorthands for the commands in README.md and docs/. Get just with `cargo install just --locked`.

# Run the whole test suite.
test:
    cargo test

# Count FLOPs, params and sizes: `just count condensenext --layers`.
count model="condensenet-86" *args="":
    cargo run --release -- count {{model}} {{args}}

# Speed and memory table on this CPU, e.g. `just bench --kernels fast,reference --allocator mimalloc,system`.
bench *ARGS:
    cargo run --release -- bench {{ARGS}}

# Criterion benches: `just criterion kernels` (each kernel vs candle's op) or `just criterion forward`.
criterion NAME="kernels":
    cargo bench --bench {{NAME}}

# Train one model into a run dir, e.g. `just train --model condensenext --dataset synthetic --epochs 2 --out results/try`.
train *ARGS:
    cargo run --release -- train {{ARGS}}

# Run every unfinished run of an experiment, e.g. `just run experiments/quickstart.toml`
# (extra flags go to `ablate run`: --devices cpu:2, --backend slurm, --rerun-failed, ...).
run FILE *ARGS:
    cargo run --release -- run {{FILE}} {{ARGS}}

# List an experiment's runs and their status without running anything.
plan FILE *ARGS:
    cargo run --release -- plan {{FILE}} {{ARGS}}

# Each run of an experiment: status, epochs, attempts, where it runs, its Slurm task.
status FILE *ARGS:
    cargo run --release -- status {{FILE}} {{ARGS}}

# Tables (Table I, Table II, ablation), figures and report.md for every experiment in results/
# (or one: `just report ablations`), into reports/<experiment>/.
report *ARGS:
    cargo run --release -- report {{ARGS}}
