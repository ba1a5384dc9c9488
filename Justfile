# Optional shortcuts; the README's plain cargo commands do the same.

# Run the scenario library against the built-in mock.
run *ARGS:
    cargo run --release -p harness -- run scenarios {{ARGS}}

# Run every test (as .ci/run does).
test:
    ci/test.sh

# Validate scenario files without running them.
validate:
    cargo run -p harness -- validate scenarios

# Benchmarks (print numbers; no pass/fail).
bench:
    cargo bench -p mock-nydusd --bench api_latency
    cargo bench -p mock-nydusd --bench memory_bounds
    cargo run --release -p harness -- bench --scale 10,100,200 --json bench/results-$(date +%F).json

# Fuzz every target for SECONDS each (CI runs 20).
fuzz SECONDS="600":
    ci/fuzz.sh {{SECONDS}}

# Lints as CI would.
lint:
    ci/lint.sh

# Format the tree.
fmt:
    cargo fmt --all

# The privileged and fscache scenarios in VMs on Debian's 6.1 and 6.12 kernels, with cachefiles
# and erofs rebuilt for on-demand fscache, against the mock and real nydusd (qemu, TCG unless KVM works).
vm REPEAT="3" *ARGS:
    ci/vm.sh {{REPEAT}} -- {{ARGS}}

# Check sharded runs: partitions cover the suite, and an archive runs from elsewhere.
shards N="2":
    ci/shards.sh {{N}}
