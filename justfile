# Shorthands for the commands in README.md. Get just with `cargo install just --locked`.

# Run the whole test suite.
test:
    cargo test

# Count FLOPs, params and sizes: `just count condensenext --layers`.
count model="condensenet-86" *args="":
    cargo run --release -- count {{model}} {{args}}

# Criterion benches (forward latency at batch 1).
bench:
    cargo bench --bench forward
