#!/bin/sh
# make bench: every benchmark in one run (the Rust peers, the speed test, the Python
# level), shown as it goes and written to BENCHMARKS.md with the machine and the date.
# Usage: benches/run-all.sh PYTHON   (the virtual environment's python, with duckcache,
# diskcache and the original module installed)
set -eu
python=$1
out=BENCHMARKS.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== cargo bench --bench bench"
cargo bench --quiet --bench bench 2>/dev/null | tee "$tmp/rust"
echo "== cache-speedtest"
cargo run --release --quiet --bin cache-speedtest | tee "$tmp/speedtest"
echo "== python benches/python_bench.py"
"$python" benches/python_bench.py | tee "$tmp/python"
echo "== python benches/django_bench.py"
"$python" benches/django_bench.py | tee "$tmp/django"
echo "== python benches/hit_ratio.py"
"$python" benches/hit_ratio.py | tee "$tmp/hit_ratio"

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
fs=$(df -T . | awk 'NR == 2 {print $2}')
{
    echo "# Benchmarks"
    echo
    echo "Written by \`make bench\` on $(date -u '+%Y-%m-%d %H:%M UTC'); every comparison ran in"
    echo "the same run, so the ratios hold even where the machine's own speed wanders."
    echo
    echo "- machine: $(nproc) x ${cpu:-unknown CPU}, $mem, $(uname -sr), file system $fs"
    echo "- toolchain: $(rustc --version), $("$python" --version 2>&1)"
    echo "- command: \`make bench\` (\`benches/run-all.sh\`)"
    echo
    echo "The README quotes the headline ratios and explains the targets that are missed."
    echo
    echo "## Rust and the C ABI against peers (\`cargo bench --bench bench\`)"
    echo
    echo '```'
    cat "$tmp/rust"
    echo '```'
    echo
    echo "## Every operation of every backend (\`make speedtest\`)"
    echo
    echo '```'
    cat "$tmp/speedtest"
    echo '```'
    echo
    echo "## Hit ratio: the memory cache's policies against libCacheSim (\`benches/hit_ratio.py\`)"
    echo
    echo '```'
    cat "$tmp/hit_ratio"
    echo '```'
    echo
    echo "## Python level: duckcache against the original module and python-diskcache"
    echo
    echo '```'
    cat "$tmp/python"
    echo '```'
    echo
    echo "## Django cache backends (\`benches/django_bench.py\`)"
    echo
    echo '```'
    cat "$tmp/django"
    echo '```'
} > "$out"
echo "wrote $out"
