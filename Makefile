# duckcache: build, test, install.
#   make                 release library (.so/.a) and the header
#   make test            everything: Rust tests, C tests (plain and under valgrind), C++ and
#                        Python binding tests, header drift, install
#   make python          copy the library into the Python package (bindings/python)
#   make speedtest       time every operation of every backend (ARGS="--help" for options)
#   make bench           benchmarks against peers, figures and ratios; writes BENCHMARKS.md
#   make install PREFIX=/usr/local
#   make clean

PREFIX   ?= /usr/local
CARGO    ?= cargo
CC       ?= cc
CXX      ?= c++
VALGRIND ?= valgrind --quiet --suppressions=ffi-tests/valgrind.supp --leak-check=full --show-leak-kinds=definite,indirect,possible \
            --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=99
VERSION  := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

LIBDIR    := target/release
BUILD     := build
CFLAGS    ?= -O1 -g
C_WARN    := -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -pedantic
C_TESTS   := $(patsubst ffi-tests/%.c,$(BUILD)/%,$(wildcard ffi-tests/test_*.c))
CXX_WARN  := -std=c++17 -Wall -Wextra -Werror -pedantic

.PHONY: all lib header header-check python python-installed speedtest test test-rust test-c test-c-valgrind test-cpp test-python test-install bench install clean

all: lib header

lib:
	$(CARGO) build --release --lib

header:
	$(CARGO) run --quiet -p gen-header

header-check:
	$(CARGO) run --quiet -p gen-header -- --verify

test: header-check test-rust test-c test-c-valgrind test-cpp test-python test-install
	@echo "make test: all passed"

test-rust:
	$(CARGO) test --workspace

# The C tests link the release shared library through the committed header.
$(BUILD)/%: ffi-tests/%.c ffi-tests/check.h ffi-tests/persistent.h include/duckcache.h lib
	@mkdir -p $(BUILD)
	$(CC) $(C_WARN) $(CFLAGS) -Iinclude $< -L$(LIBDIR) -lduckcache \
	    -Wl,-rpath,$(abspath $(LIBDIR)) -lpthread -lm -o $@

test-c: lib $(C_TESTS)
	@for t in $(C_TESTS); do echo "== $$t"; ./$$t || exit 1; done

test-c-valgrind: lib $(C_TESTS)
	@command -v valgrind >/dev/null || { echo "valgrind is missing (.ci/run installs it)"; exit 1; }
	@for t in $(C_TESTS); do echo "== valgrind $$t"; \
	    DUCKCACHE_TEST_SCALE=small $(VALGRIND) ./$$t || exit 1; done

# The header-only C++ wrapper's test, plain and under valgrind.
$(BUILD)/test_cpp: bindings/cpp/test_duckcache.cpp bindings/cpp/duckcache.hpp include/duckcache.h lib
	@mkdir -p $(BUILD)
	$(CXX) $(CXX_WARN) $(CFLAGS) -Iinclude -Ibindings/cpp $< -L$(LIBDIR) -lduckcache \
	    -Wl,-rpath,$(abspath $(LIBDIR)) -lpthread -o $@

test-cpp: $(BUILD)/test_cpp
	@echo "== $<" && ./$<
	@command -v valgrind >/dev/null || { echo "valgrind is missing (.ci/run installs it)"; exit 1; }
	@echo "== valgrind $<" && $(VALGRIND) ./$<

# Installs into a scratch prefix and builds the README's example through pkg-config.
test-install: lib
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(MAKE) --no-print-directory install PREFIX=$$tmp >/dev/null && \
	PKG_CONFIG_PATH=$$tmp/lib/pkgconfig $(CC) $(C_WARN) ffi-tests/pkgconfig_example.c \
	    $$(PKG_CONFIG_PATH=$$tmp/lib/pkgconfig pkg-config --cflags --libs duckcache) -o $$tmp/example && \
	$$tmp/example && echo "test-install: ok"

# The Python package (bindings/python) with the library inside it.
PYTHON   ?= python3
PYENV    := $(BUILD)/pyenv
PY_PKG   := bindings/python/duckcache

python: lib
	cp $(LIBDIR)/libduckcache.so $(PY_PKG)/libduckcache.so

# A virtual environment with pytest, python-diskcache and the original module (the
# duckframework package, without its web-framework dependencies) for the parity tests.
$(PYENV)/.ready: bindings/python/pyproject.toml
	rm -rf $(PYENV)
	$(PYTHON) -m venv $(PYENV)
	$(PYENV)/bin/pip install -q --disable-pip-version-check pytest diskcache setuptools wheel
	$(PYENV)/bin/pip install -q --disable-pip-version-check --no-deps duckframework==2.3.2
	touch $@

# Installs the package into the environment, as a user would.
python-installed: python $(PYENV)/.ready
	$(PYENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
	    --force-reinstall ./bindings/python

# Runs the package's tests in that environment.
test-python: python-installed
	cd $(BUILD) && env -u DUCKCACHE_LIB $(abspath $(PYENV))/bin/python -m pytest -q \
	    -p no:cacheprovider $(abspath bindings/python/tests)

# The speed test: every operation of every backend. Options: make speedtest ARGS="--help".
speedtest:
	$(CARGO) run --release --quiet --bin cache-speedtest -- $(ARGS)

bench: python-installed
	benches/run-all.sh $(PYENV)/bin/python

install: lib
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/duckcache.h bindings/cpp/duckcache.hpp $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(LIBDIR)/libduckcache.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 $(LIBDIR)/libduckcache.a $(DESTDIR)$(PREFIX)/lib/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' duckcache.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/duckcache.pc
	@echo "installed to $(DESTDIR)$(PREFIX); build with: cc prog.c \$$(pkg-config --cflags --libs duckcache)"

clean:
	$(CARGO) clean
	rm -rf $(BUILD) $(PY_PKG)/libduckcache.so
