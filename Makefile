# duckcache: build, test, install.
#   make                 release library (.so/.a) and the header
#   make test            everything: Rust tests, C tests (plain, valgrind, ASan, TSan), C++ and
#                        Python binding tests, rustfmt + clippy, header drift, install,
#                        fault campaigns, a 30 s fuzz run
#   make fuzz            a longer fuzzing campaign (FUZZ_SECONDS) and 5000 model cases
#   make stress          long fault-injection and hostile-environment campaigns (minutes)
#   make python          copy the library into the Python package (bindings/python)
#   make speedtest       time every operation of every backend (ARGS="--help" for options)
#   make bench           benchmarks against peers, figures and ratios; writes BENCHMARKS.md
#   make install PREFIX=/usr/local   (DESTDIR, LIBDIR, INCLUDEDIR, BINDIR honoured)
#   make uninstall PREFIX=/usr/local
#   make clean

PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR     ?= $(PREFIX)/bin
DATADIR    ?= $(PREFIX)/share
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR  ?= $(DATADIR)/zsh/site-functions
CARGO    ?= cargo
CC       ?= cc
CXX      ?= c++
VALGRIND ?= valgrind --quiet --suppressions=ffi-tests/valgrind.supp --leak-check=full --show-leak-kinds=definite,indirect,possible \
            --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=99
VERSION  := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
MAJOR    := $(firstword $(subst ., ,$(VERSION)))
SONAME   := libduckcache.so.$(MAJOR)

# Where cargo puts the release library (and the SONAME link beside it, for the tests).
OUT       := target/release
BUILD     := build
CFLAGS    ?= -O1 -g
C_WARN    := -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -pedantic
C_TESTS   := $(patsubst ffi-tests/%.c,$(BUILD)/%,$(wildcard ffi-tests/test_*.c))
CXX_WARN  := -std=c++17 -Wall -Wextra -Werror -pedantic

.PHONY: setup test-pip-source sdist test-sdist lint stress test-faults all lib header header-check python python-installed speedtest test test-all test-python-valgrind test-asan test-tsan fuzz fuzz-short fuzz-build test-rust test-c test-c-valgrind test-cpp test-python test-install wheel test-wheel docs bench install uninstall clean

all: lib header

lib:
	$(CARGO) build --release --lib
	@ln -sf libduckcache.so $(OUT)/$(SONAME)

header:
	$(CARGO) run --quiet -p gen-header

header-check:
	$(CARGO) run --quiet -p gen-header -- --verify
	python3 tools/c-reference.py --check

# The C API reference (docs/c-reference.md) from the header; make test checks that every
# function is documented and the reference is current.
docs: header
	python3 tools/c-reference.py

# Everything runs beside a private redis-server (tools/with-redis: a Unix socket in a
# temporary folder, a password; stopped at the end), so the Redis kind is tested by the
# same suites as the others. make test fails, saying why, when it cannot start one.
test: setup
	tools/with-redis $(MAKE) --no-print-directory test-all
	@echo "make test: all passed"

# Checks (and, as root with apt-get, installs) every tool make test uses, first: a fresh
# machine fails in the first seconds naming the command to run, not 12 minutes in.
setup:
	@tools/setup-test-env

test-all: lint header-check test-rust test-c test-faults test-c-valgrind test-cpp test-python \
      test-python-valgrind test-install test-wheel test-asan test-tsan fuzz-short

test-rust:
	$(CARGO) test --workspace

# Formatting and clippy's lints (warnings are errors), over every crate and target.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

# The C tests link the release shared library through the committed header.
$(BUILD)/%: ffi-tests/%.c ffi-tests/check.h ffi-tests/persistent.h include/duckcache.h lib
	@mkdir -p $(BUILD)
	$(CC) $(C_WARN) $(CFLAGS) -Iinclude $< -L$(OUT) -lduckcache \
	    -Wl,-rpath,$(abspath $(OUT)) -lpthread -lm -o $@

test-c: lib $(C_TESTS)
	@for t in $(C_TESTS); do echo "== $$t"; timeout 900 ./$$t || exit 1; done

# Seeded fault-injection campaigns (ffi-tests/fault_campaign.c: EIO and ENOSPC injected
# through a seccomp listener into every persistent kind's system calls). make test runs
# short ones with fixed seeds; make stress long ones with a fresh seed, printed to replay.
$(BUILD)/fault_campaign: ffi-tests/fault_campaign.c ffi-tests/faults.h ffi-tests/check.h ffi-tests/persistent.h include/duckcache.h lib
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -Wall -Wextra -Werror -pedantic $(CFLAGS) -Iinclude $< -L$(OUT) -lduckcache \
	    -Wl,-rpath,$(abspath $(OUT)) -lpthread -lm -o $@

FAULT_SEEDS ?= 1 2 3
test-faults: $(BUILD)/fault_campaign
	@for seed in $(FAULT_SEEDS); do timeout 600 ./$< 1500 $$seed || exit 1; done
	@echo "== the same with failing reads (the file kind, seed 2: CORRUPT for an EIO before issue 30 item 22; make stress runs every kind)"
	@DUCKCACHE_FAULT_READS=1 DUCKCACHE_FAULT_KINDS=file timeout 600 ./$< 1500 2

stress: $(BUILD)/fault_campaign $(BUILD)/test_hostile
	timeout 3600 ./$(BUILD)/fault_campaign 30000
	DUCKCACHE_FAULT_READS=1 timeout 3600 ./$(BUILD)/fault_campaign 10000
	DUCKCACHE_STRESS=1 timeout 3600 ./$(BUILD)/test_hostile

test-c-valgrind: lib $(C_TESTS)
	@command -v valgrind >/dev/null || { echo "valgrind is missing (make setup installs it)"; exit 1; }
	@for t in $(C_TESTS); do echo "== valgrind $$t"; \
	    DUCKCACHE_TEST_SCALE=small timeout 1200 $(VALGRIND) ./$$t || exit 1; done

# The header-only C++ wrapper's test, plain and under valgrind (the test replaces
# operator new/delete with malloc/free to make one allocation fail, which valgrind's own
# replacement of operator new in libstdc++ would report as mismatched).
$(BUILD)/test_cpp: bindings/cpp/test_duckcache.cpp bindings/cpp/duckcache.hpp include/duckcache.h lib
	@mkdir -p $(BUILD)
	$(CXX) $(CXX_WARN) $(CFLAGS) -Iinclude -Ibindings/cpp $< -L$(OUT) -lduckcache \
	    -Wl,-rpath,$(abspath $(OUT)) -lpthread -o $@

test-cpp: $(BUILD)/test_cpp
	@echo "== $<" && ./$<
	@command -v valgrind >/dev/null || { echo "valgrind is missing (make setup installs it)"; exit 1; }
	@echo "== valgrind $<" && $(VALGRIND) --show-mismatched-frees=no ./$<

# Installs into a scratch prefix and builds the README's example through pkg-config.
# Installs into a scratch prefix, as a distribution would (DESTDIR), and checks what
# consumers get: the README's C example built through pkg-config and through CMake's
# find_package, each recording only the SONAME and no run path; the library stripped.
test-install: lib test-pip-source
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(MAKE) --no-print-directory install DESTDIR=$$tmp/stage PREFIX=/opt/dc >/dev/null && \
	root=$$tmp/stage/opt/dc && \
	test "$$(readlink $$root/lib/libduckcache.so)" = $(SONAME) && \
	test "$$(readlink $$root/lib/$(SONAME))" = libduckcache.so.$(VERSION) && \
	readelf -d $$root/lib/libduckcache.so.$(VERSION) | grep -q "SONAME.*\[$(SONAME)\]" && \
	! readelf -S $$root/lib/libduckcache.so.$(VERSION) | grep -q '\.debug_info' && \
	! grep -q rpath $$root/lib/pkgconfig/duckcache.pc && \
	sed -i "s|^prefix=.*|prefix=$$root|" $$root/lib/pkgconfig/duckcache.pc && \
	$(CC) $(C_WARN) ffi-tests/pkgconfig_example.c \
	    $$(PKG_CONFIG_PATH=$$root/lib/pkgconfig pkg-config --cflags --libs duckcache) -o $$tmp/example && \
	readelf -d $$tmp/example | grep NEEDED | grep -q "\[$(SONAME)\]" && \
	! readelf -d $$tmp/example | grep -Eq 'RPATH|RUNPATH' && \
	LD_LIBRARY_PATH=$$root/lib $$tmp/example >/dev/null && echo "test-install: pkg-config ok" && \
	$$root/bin/duckcache file:$$tmp/cli set k v && test "$$($$root/bin/duckcache $$tmp/cli get k)" = v && \
	echo "test-install: the duckcache command ok" && \
	test "$$(bash -c 'source '$$root'/share/bash-completion/completions/duckcache; \
	    COMP_WORDS=(duckcache /x st); COMP_CWORD=2; _duckcache duckcache st /x; echo $${COMPREPLY[*]}')" = stats && \
	grep -q '^#compdef duckcache' $$root/share/zsh/site-functions/_duckcache && \
	echo "test-install: bash completes 'duckcache /x st' to stats; zsh script installed" && \
	if command -v cmake >/dev/null; then \
	    cmake -S ffi-tests/cmake-consumer -B $$tmp/cmake -DCMAKE_PREFIX_PATH=$$root >/dev/null && \
	    cmake --build $$tmp/cmake >/dev/null && \
	    readelf -d $$tmp/cmake/consumer | grep NEEDED | grep -q "\[$(SONAME)\]" && \
	    LD_LIBRARY_PATH=$$root/lib $$tmp/cmake/consumer >/dev/null && echo "test-install: cmake ok"; \
	else echo "test-install: cmake is missing (make setup installs it)"; exit 1; fi && \
	$(MAKE) --no-print-directory uninstall DESTDIR=$$tmp/stage PREFIX=/opt/dc >/dev/null && \
	test -z "$$(find $$tmp/stage -type f -o -type l)" && echo "test-install: uninstall ok"

# The Python package (bindings/python) with the library inside it.
PYTHON   ?= python3
PYENV    := $(BUILD)/pyenv
# A test that hangs fails (with every thread's stack) instead of stalling the run.
PYTEST_LIMIT := --timeout=900
PY_PKG   := bindings/python/duckcache

python: lib
	cp $(OUT)/libduckcache.so $(PY_PKG)/libduckcache.so

# A virtual environment with pytest, python-diskcache, PyNaCl (to check the encrypted
# format both ways) and the original module: the duckframework package with its
# dependencies, so Duck's own code (its fileio tests) runs with duckcache in its place.
$(PYENV)/.ready: bindings/python/pyproject.toml
	rm -rf $(PYENV)
	$(PYTHON) -m venv $(PYENV)
	$(PYENV)/bin/pip install -q --disable-pip-version-check pytest pytest-timeout diskcache setuptools wheel pynacl redis auditwheel
	$(PYENV)/bin/pip install -q --disable-pip-version-check duckframework==2.3.2
	touch $@

# The Python wheel: tagged with the manylinux policy auditwheel finds it satisfies, with the stripped
# library inside, built from a clean tree (no stale build/ folder can be packaged).
WHEEL_DIR := $(BUILD)/wheel
wheel: lib $(PYENV)/.ready
	rm -rf bindings/python/build bindings/python/duckcache.egg-info $(WHEEL_DIR)
	cp $(OUT)/libduckcache.so bindings/python/duckcache/libduckcache.so
	strip --strip-unneeded bindings/python/duckcache/libduckcache.so
	$(PYENV)/bin/pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
	    -w $(WHEEL_DIR) ./bindings/python
	rm -rf bindings/python/build
	@$(PYENV)/bin/auditwheel --version >/dev/null 2>&1 || \
	    $(PYENV)/bin/pip install -q --disable-pip-version-check auditwheel
	@whl=$$(ls $(WHEEL_DIR)/*.whl) && \
	tag=$$($(PYENV)/bin/auditwheel show "$$whl" 2>/dev/null | tr '\n' ' ' | \
	    sed -n 's/.*consistent with the *following platform tag: *"\([^"]*\)".*/\1/p') && \
	test -n "$$tag" || { echo "make wheel: auditwheel found no manylinux policy the wheel satisfies"; exit 1; } && \
	$(PYENV)/bin/python -m wheel tags --remove --platform-tag "$$tag" "$$whl" >/dev/null && \
	echo "make wheel: $$(ls $(WHEEL_DIR)/*.whl) (auditwheel: the library's symbols need $$tag)"

# Installs that wheel into a fresh virtual environment and uses it from another folder.
test-wheel: wheel
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	whl=$$(ls $(WHEEL_DIR)/*.whl) && \
	case "$$whl" in *-py3-none-manylinux_*_x86_64.whl) ;; *) echo "test-wheel: wrong tag: $$whl"; exit 1;; esac && \
	$(PYTHON) -m venv $$tmp/venv && $$tmp/venv/bin/pip install -q --disable-pip-version-check "$$whl" && \
	lib=$$(cd $$tmp && env -u DUCKCACHE_LIB $$tmp/venv/bin/python -c 'import duckcache, pathlib, sys; \
	    lib = pathlib.Path(duckcache.library_path); assert str(lib).startswith(sys.prefix), lib; \
	    c = duckcache.open("memory:?max_keys=10"); c.set("k", {"v": 1}); assert c.get("k") == {"v": 1}; \
	    print(lib)') && \
	! readelf -S "$$lib" | grep -q '\.debug_info' && \
	cmp -s "$$lib" bindings/python/duckcache/libduckcache.so && \
	echo "test-wheel: ok, $$(basename $$whl), $$(($$(stat -c %s $$lib) / 1024)) KiB library, stripped, the fresh build"

# `pip install ./bindings/python` from a fresh clone, with no library built in the clone:
# the package's build runs cargo itself; the package is then used from another folder.
# Its cargo target folder starts as a copy of this checkout's release build (the
# dependencies' artifacts, so only the clone's own crate is compiled: about 45 s here, not
# 2.5 minutes), and is thrown away after.
test-pip-source: lib
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	git clone -q . $$tmp/src && test ! -e $$tmp/src/bindings/python/duckcache/libduckcache.so && \
	mkdir $$tmp/target && cp -r $(OUT) $$tmp/target/ && \
	$(PYTHON) -m venv $$tmp/venv && \
	CARGO_TARGET_DIR=$$tmp/target $$tmp/venv/bin/pip install -q --disable-pip-version-check $$tmp/src/bindings/python && \
	cd $$tmp && env -u DUCKCACHE_LIB $$tmp/venv/bin/python -c 'import duckcache, sys; \
	    assert str(duckcache.library_path).startswith(sys.prefix), duckcache.library_path; \
	    c = duckcache.open("memory:?max_keys=10"); c.set("k", [1]); assert c.get("k") == [1]' && \
	echo "test-pip-source: ok, pip install from a fresh clone built the library with cargo"

# The sdist: the package and, in rust/, the library's sources (the crate, its workspace
# members and lock file), so `pip install duckcache-VERSION.tar.gz` builds the library
# with cargo. Never a compiled library inside.
SDIST_DIR := $(BUILD)/sdist
sdist: $(PYENV)/.ready
	rm -rf $(BUILD)/sdist-stage $(SDIST_DIR) && mkdir -p $(BUILD)/sdist-stage/rust
	cd bindings/python && git ls-files -z -- . ':!tests' | tar --null -T - -cf - | tar -xf - -C $(abspath $(BUILD))/sdist-stage
	git ls-files -z -- Cargo.toml Cargo.lock build.rs cbindgen.toml src benches/bench \
	    tools/gen-header tools/duckcache-cli | tar --null -T - -cf - | tar -xf - -C $(BUILD)/sdist-stage/rust
	cd $(BUILD)/sdist-stage && $(abspath $(PYENV))/bin/python setup.py -q sdist -d $(abspath $(SDIST_DIR)) >/dev/null 2>&1
	rm -rf $(BUILD)/sdist-stage
	@! tar -tzf $(SDIST_DIR)/*.tar.gz | grep -q '\.so$$' && echo "make sdist: $$(ls $(SDIST_DIR)/*.tar.gz)"

# Installs that sdist into a fresh virtual environment (pip runs cargo) and uses it from
# another folder; the cargo target folder as test-pip-source's.
test-sdist: sdist lib
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	mkdir $$tmp/target && cp -r $(OUT) $$tmp/target/ && \
	$(PYTHON) -m venv $$tmp/venv && \
	CARGO_TARGET_DIR=$$tmp/target $$tmp/venv/bin/pip install -q --disable-pip-version-check $(SDIST_DIR)/*.tar.gz && \
	cd $$tmp && env -u DUCKCACHE_LIB $$tmp/venv/bin/python -c 'import duckcache, sys; \
	    assert str(duckcache.library_path).startswith(sys.prefix), duckcache.library_path; \
	    c = duckcache.open("memory:?max_keys=10"); c.set("k", [1]); assert c.get("k") == [1]' && \
	echo "test-sdist: ok, pip install of the sdist built the library with cargo"

# Installs the package into the environment, as a user would.
python-installed: python $(PYENV)/.ready
	$(PYENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
	    --force-reinstall ./bindings/python

# Runs the package's tests in that environment.
test-python: python-installed
	cd $(BUILD) && env -u DUCKCACHE_LIB $(abspath $(PYENV))/bin/python -m pytest -q $(PYTEST_LIMIT) \
	    -p no:cacheprovider $(abspath bindings/python/tests)

# The speed test: every operation of every backend. Options: make speedtest ARGS="--help".
speedtest:
	$(CARGO) run --release --quiet --bin cache-speedtest -- $(ARGS)

# AddressSanitizer (with LeakSanitizer): every C test and the C++ test, built with
# -fsanitize=address against the release library (whose allocations ASan intercepts),
# and the Python suite with the ASan runtime preloaded and Python's own allocator off
# (so LeakSanitizer sees every allocation, the interpreter's and the library's).
ASAN      := -fsanitize=address -fno-omit-frame-pointer
ASAN_LIB   = $(shell $(CC) -print-file-name=libasan.so)

test-asan: lib python-installed
	@mkdir -p $(BUILD)/asan
	@for t in $(C_TESTS); do n=$$(basename $$t); \
	    $(CC) $(C_WARN) $(CFLAGS) $(ASAN) -Iinclude ffi-tests/$$n.c -L$(OUT) -lduckcache \
	        -Wl,-rpath,$(abspath $(OUT)) -lpthread -lm -o $(BUILD)/asan/$$n || exit 1; \
	    echo "== asan $$n"; DUCKCACHE_TEST_SCALE=small ASAN_OPTIONS=detect_leaks=1 \
	        ./$(BUILD)/asan/$$n > $(BUILD)/asan/$$n.log 2>&1 || { cat $(BUILD)/asan/$$n.log; exit 1; }; done
	$(CXX) $(CXX_WARN) $(CFLAGS) $(ASAN) -Iinclude -Ibindings/cpp bindings/cpp/test_duckcache.cpp \
	    -L$(OUT) -lduckcache -Wl,-rpath,$(abspath $(OUT)) -lpthread -o $(BUILD)/asan/test_cpp
	@echo "== asan test_cpp" && ASAN_OPTIONS=detect_leaks=1 ./$(BUILD)/asan/test_cpp
	@echo "== asan python tests (not test_leaks.py: it measures RSS, which ASan's quarantine grows; not Django's own suite, run by make test-python: pure Python over the calls the other tests check)"
	cd $(BUILD) && PYTHONMALLOC=malloc LD_PRELOAD=$(ASAN_LIB) ASAN_OPTIONS=detect_leaks=1 \
	    $(abspath $(PYENV))/bin/python -m pytest -q $(PYTEST_LIMIT) -p no:cacheprovider $(abspath bindings/python/tests) \
	    --ignore=$(abspath bindings/python/tests/test_leaks.py) \
	    --ignore=$(abspath bindings/python/tests/test_django_suite.py)

# ThreadSanitizer on the threaded C tests, where the toolchain allows: the library is
# rebuilt instrumented with the nightly toolchain (-Zsanitizer=thread) and linked with
# that toolchain's TSan runtime. Without a nightly toolchain it says so and skips.
TSAN_DIR  := target/tsan/x86_64-unknown-linux-gnu/release
TSAN_RT    = $(shell rustc +nightly --print sysroot 2>/dev/null)/lib/rustlib/x86_64-unknown-linux-gnu/lib/librustc-nightly_rt.tsan.a

test-tsan:
	@if ! rustc +nightly --version >/dev/null 2>&1 || [ ! -f "$(TSAN_RT)" ]; then \
	    echo "test-tsan: skipped: no nightly Rust toolchain with a TSan runtime here"; exit 0; fi; \
	RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer" $(CARGO) +nightly build \
	    --quiet --release --lib --target x86_64-unknown-linux-gnu --target-dir target/tsan || exit 1; \
	ln -sf libduckcache.so $(TSAN_DIR)/$(SONAME); \
	mkdir -p $(BUILD)/tsan; \
	for n in test_threads test_async test_v2; do \
	    $(CC) $(C_WARN) $(CFLAGS) -fsanitize=thread -Iinclude -c ffi-tests/$$n.c -o $(BUILD)/tsan/$$n.o && \
	    $(CC) $(BUILD)/tsan/$$n.o -o $(BUILD)/tsan/$$n -Wl,--whole-archive $(TSAN_RT) -Wl,--no-whole-archive \
	        -L$(TSAN_DIR) -lduckcache -Wl,-rpath,$(abspath $(TSAN_DIR)) -lpthread -lm -ldl -lstdc++ || exit 1; \
	    echo "== tsan $$n"; \
	    DUCKCACHE_TEST_SCALE=small TSAN_OPTIONS="suppressions=ffi-tests/tsan.supp halt_on_error=1 exitcode=66" \
	        ./$(BUILD)/tsan/$$n || exit 1; done

# Coverage-guided fuzzing of the C ABI (fuzz/fuzz_targets/c_api.rs) with libFuzzer on
# the stable toolchain: coverage instrumentation through stable -C flags. fuzz-short
# (in make test) runs 30 s; make fuzz runs FUZZ_SECONDS and the model-based tests with
# many more cases.
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks
FUZZ_BIN       := target/fuzz/x86_64-unknown-linux-gnu/release/c_api
FUZZ_SECONDS   ?= 600

fuzz-build:
	RUSTFLAGS="$(FUZZ_RUSTFLAGS)" $(CARGO) build --quiet --release --manifest-path fuzz/Cargo.toml \
	    --target x86_64-unknown-linux-gnu --target-dir target/fuzz

fuzz-short: fuzz-build
	@mkdir -p fuzz/corpus/c_api fuzz/artifacts
	@mkdir -p $(BUILD)
	@$(FUZZ_BIN) fuzz/corpus/c_api fuzz/seeds -max_total_time=20 -max_len=4096 \
	    -artifact_prefix=fuzz/artifacts/ -print_final_stats=1 > $(BUILD)/fuzz.log 2>&1; \
	    status=$$?; tail -n 12 $(BUILD)/fuzz.log; exit $$status

fuzz: fuzz-build
	@mkdir -p fuzz/corpus/c_api fuzz/artifacts
	$(FUZZ_BIN) fuzz/corpus/c_api fuzz/seeds -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -artifact_prefix=fuzz/artifacts/ -print_final_stats=1
	DUCKCACHE_MODEL_CASES=5000 $(CARGO) test --release --test model

# The Python tests of the memory and file kinds under valgrind, leaks as errors (the
# whole suite would take minutes there). CPython's own uninitialised reads are
# suppressed only where libpython raises them (bindings/python/tests/valgrind-python.supp).
test-python-valgrind: python-installed
	@command -v valgrind >/dev/null || { echo "valgrind is missing (make setup installs it)"; exit 1; }
	cd $(BUILD) && PYTHONMALLOC=malloc valgrind --quiet --error-exitcode=99 \
	    --suppressions=$(abspath bindings/python/tests/valgrind-python.supp) \
	    --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
	    $(abspath $(PYENV))/bin/python -m pytest -q $(PYTEST_LIMIT) -p no:cacheprovider -k "memory or file" \
	    $(addprefix $(abspath bindings/python/tests)/,test_api.py test_async.py test_decorators.py)

# The hit-ratio comparison needs libCacheSim's Python package (and numpy), installed
# here rather than for make test.
bench: python-installed
	$(PYENV)/bin/pip install -q --disable-pip-version-check libcachesim numpy
	tools/with-redis benches/run-all.sh $(PYENV)/bin/python

# The library as distributions expect it: libduckcache.so.MAJOR.MINOR.PATCH (stripped of
# debug information), the SONAME link libduckcache.so.MAJOR and the development link
# libduckcache.so; the static archive without debug information; headers; a .pc without
# a run path; a CMake package (find_package(duckcache) -> duckcache::duckcache).
CMAKEDIR = $(LIBDIR)/cmake/duckcache
install: lib
	$(CARGO) build --release --quiet -p duckcache-cli
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(CMAKEDIR) \
	    $(DESTDIR)$(BINDIR)
	install -m 755 $(OUT)/duckcache $(DESTDIR)$(BINDIR)/duckcache
	strip --strip-unneeded $(DESTDIR)$(BINDIR)/duckcache
	install -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	$(OUT)/duckcache --completions bash > $(DESTDIR)$(BASHCOMPDIR)/duckcache
	$(OUT)/duckcache --completions zsh > $(DESTDIR)$(ZSHCOMPDIR)/_duckcache
	install -m 644 include/duckcache.h bindings/cpp/duckcache.hpp $(DESTDIR)$(INCLUDEDIR)/
	install -m 755 $(OUT)/libduckcache.so $(DESTDIR)$(LIBDIR)/libduckcache.so.$(VERSION)
	strip --strip-unneeded $(DESTDIR)$(LIBDIR)/libduckcache.so.$(VERSION)
	ln -sf libduckcache.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libduckcache.so
	install -m 644 $(OUT)/libduckcache.a $(DESTDIR)$(LIBDIR)/
	strip --strip-debug $(DESTDIR)$(LIBDIR)/libduckcache.a
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(patsubst $(PREFIX)%,$${prefix}%,$(LIBDIR))|' \
	    -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)%,$${prefix}%,$(INCLUDEDIR))|' \
	    -e 's|@VERSION@|$(VERSION)|' duckcache.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/duckcache.pc
	sed -e 's|@VERSION@|$(VERSION)|' -e 's|@SONAME@|$(SONAME)|' cmake/duckcacheConfig.cmake.in \
	    > $(DESTDIR)$(CMAKEDIR)/duckcacheConfig.cmake
	sed -e 's|@VERSION@|$(VERSION)|' -e 's|@MAJOR@|$(MAJOR)|' cmake/duckcacheConfigVersion.cmake.in \
	    > $(DESTDIR)$(CMAKEDIR)/duckcacheConfigVersion.cmake
	@echo "installed to $(DESTDIR)$(PREFIX); build with: cc prog.c \$$(pkg-config --cflags --libs duckcache)"

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libduckcache.so $(DESTDIR)$(LIBDIR)/$(SONAME) \
	    $(DESTDIR)$(LIBDIR)/libduckcache.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libduckcache.a \
	    $(DESTDIR)$(LIBDIR)/pkgconfig/duckcache.pc $(DESTDIR)$(INCLUDEDIR)/duckcache.h \
	    $(DESTDIR)$(INCLUDEDIR)/duckcache.hpp $(DESTDIR)$(CMAKEDIR)/duckcacheConfig.cmake \
	    $(DESTDIR)$(CMAKEDIR)/duckcacheConfigVersion.cmake $(DESTDIR)$(BINDIR)/duckcache \
	    $(DESTDIR)$(BASHCOMPDIR)/duckcache $(DESTDIR)$(ZSHCOMPDIR)/_duckcache
	-rmdir $(DESTDIR)$(CMAKEDIR) 2>/dev/null

clean:
	$(CARGO) clean
	rm -rf $(BUILD) $(PY_PKG)/libduckcache.so
