// The C++ wrapper against every kind of cache: each member, errors as exceptions,
// move semantics, futures and callables. Built and run by `make test`.
#include "duckcache.hpp"

#include <atomic>
#include <new>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <unistd.h>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            std::exit(1);                                                             \
        }                                                                             \
    } while (0)

// Allocations of exactly this many bytes fail once (then the size resets): to show that
// a get whose copy into std::string throws still frees the library's buffer (ASan and
// valgrind report the leak otherwise).
static std::size_t fail_allocation_of = 0;

// The replacements below pair malloc with free on purpose.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

static std::size_t new_calls = 0;

void *operator new(std::size_t n) {
    new_calls++;
    if (fail_allocation_of != 0 && n == fail_allocation_of) {
        fail_allocation_of = 0;
        throw std::bad_alloc();
    }
    if (void *p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }

// Whether this file's operator new is the one in use (valgrind replaces it with its own,
// and then an allocation cannot be made to fail here).
static bool own_operator_new_in_use() {
    std::size_t before = new_calls;
    void *probe = ::operator new(64);
    ::operator delete(probe);
    return new_calls != before;
}

template <class F>
static int status_thrown(F &&f) {
    try {
        f();
    } catch (const duckcache::Error &e) {
        CHECK(std::string(e.what()).size() > 0);
        return e.status();
    }
    return CACHE_OK;
}

static void exercise(duckcache::Cache cache) {
    using namespace std::string_literals;
    CHECK(!cache.get("a"));
    cache.set("a", "alpha");
    CHECK(cache.get("a") == "alpha"s);
    const std::string binary_key("k\0\xff", 3), binary_value("\0\0v", 3);
    cache.set(binary_key, binary_value);
    CHECK(cache.get(binary_key) == binary_value);
    CHECK(cache.has("a") && !cache.has("b"));
    CHECK(cache.size() == 2);
    cache.set("short", "v", 0.0);  // expires at once
    CHECK(!cache.get("short"));
    CHECK(cache.pop("a") == "alpha"s);
    CHECK(!cache.pop("a"));
    cache.erase(binary_key);
    cache.erase(binary_key);
    CHECK(cache.size() == 0);
    CHECK(status_thrown([&] { cache.set("k", "v", std::nan("")); }) == CACHE_ERR_INVALID_ARG);

    // futures
    auto set = cache.set_async("f", "future");
    set.get();
    CHECK(cache.get_async("f").get() == "future"s);
    CHECK(!cache.get_async("missing").get());
    CHECK(cache.pop_async("f").get() == "future"s);
    cache.set_async("g", "1").get();
    cache.erase_async("g").get();
    CHECK(!cache.has("g"));
    cache.set("h", "1");
    cache.clear_async().get();
    CHECK(cache.size() == 0);

    // callables, in order on one handle
    std::atomic<int> seen{0};
    cache.set_async("c", "callable", CACHE_NO_TTL, [&](int status, std::optional<std::string> v) {
        CHECK(status == CACHE_OK && !v);
        seen++;
    });
    cache.get_async("c", [&](int status, std::optional<std::string> v) {
        CHECK(status == CACHE_OK && v == "callable"s);
        seen++;
    });
    cache.pop_async("c", [&](int status, std::optional<std::string> v) {
        CHECK(status == CACHE_OK && v == "callable"s);
        seen++;
    });
    cache.get_async("c", [&](int status, std::optional<std::string> v) {
        CHECK(status == CACHE_NOT_FOUND && !v);
        seen++;
    });

    auto s = cache.stats();
    cache.save();
    cache.close();  // waits for the callables
    CHECK(seen == 4);
    CHECK(s.sets >= 5);
    CHECK(status_thrown([&] { cache.get("a"); }) == CACHE_ERR_CLOSED);
    CHECK(status_thrown([&] { cache.set_async("a", "b"); }) == CACHE_ERR_CLOSED);
    CHECK(status_thrown([&] { cache.size(); }) == CACHE_ERR_CLOSED);
    cache.close();  // idempotent
}

// Version 2 of the contract through the wrapper.
static void exercise_v2(duckcache::Cache cache) {
    using namespace std::string_literals;
    CHECK(cache.add("a", "first"));
    CHECK(!cache.add("a", "second"));
    CHECK(cache.get("a") == "first"s);
    CHECK(cache.incr("n") == 1);
    CHECK(cache.incr("n", -5) == -4);
    CHECK(cache.get("n") == "-4"s);
    CHECK(status_thrown([&] { cache.incr("a"); }) == CACHE_ERR_NOT_NUMERIC);
    CHECK(cache.ttl("a") == std::numeric_limits<double>::infinity());
    CHECK(cache.touch("a", 100));
    CHECK(*cache.ttl("a") > 90 && *cache.ttl("a") <= 100);
    CHECK(!cache.touch("absent", 5));
    CHECK(!cache.ttl("absent"));

    // get_or_compute: one compute, nullopt stores nothing, a throw is rethrown
    int computed = 0;
    auto compute = [&] {
        computed++;
        return "made"s;
    };
    CHECK(cache.get_or_compute("g", compute, 60) == "made"s);
    CHECK(cache.get_or_compute("g", compute) == "made"s);
    CHECK(computed == 1);
    CHECK(*cache.ttl("g") <= 60);
    CHECK(!cache.get_or_compute("none", [] { return std::optional<std::string>(); }));
    CHECK(!cache.has("none"));
    bool rethrown = false;
    try {
        cache.get_or_compute("throws", []() -> std::string { throw std::runtime_error("boom"); });
    } catch (const std::runtime_error &e) {
        rethrown = std::string(e.what()) == "boom";
    }
    CHECK(rethrown && !cache.has("throws"));

    // bulk
    cache.set_many({{"b1", "one"}, {"b2", "two", 50.0, 7}, {"b3", "three"}});
    auto got = cache.get_many({"b1", "b2", "missing", "b3"});
    CHECK(got.size() == 4 && got[0] == "one"s && got[1] == "two"s && !got[2] && got[3] == "three"s);
    CHECK(cache.get_many({}).empty());
    CHECK(cache.delete_many({"b1", "missing"}) == 1);
    CHECK(status_thrown([&] { cache.set_many({{"x", "y", NAN}}); }) == CACHE_ERR_INVALID_ARG);
    CHECK(!cache.has("x"));

    // keys: a bool callable stops, a void one sees all, a throwing one stops and rethrows
    std::vector<std::string> seen;
    cache.keys("b", [&](std::string_view k) { seen.emplace_back(k); });
    CHECK(seen.size() == 2);
    int visits = 0;
    cache.keys("", [&](std::string_view) { return ++visits < 2; });
    CHECK(visits == 2);
    bool walk_rethrown = false;
    try {
        cache.keys("", [&](std::string_view k) {
            cache.erase(k);  // the Cache is usable inside the walk
            throw std::logic_error("stop");
        });
    } catch (const std::logic_error &) {
        walk_rethrown = true;
    }
    CHECK(walk_rethrown);
    CHECK(cache.delete_prefix("b") + cache.delete_prefix("") >= 2);
    CHECK(cache.size() == 0);
    cache.set("short", "v", 0.05);
    std::this_thread::sleep_for(std::chrono::milliseconds(80));
    CHECK(cache.purge_expired() <= 1);  // 0 on Redis, which expires entries itself
    CHECK(!cache.has("short"));

    // a get_many whose copy throws frees every buffer the library handed out
    const std::string big(3000, 'g');
    cache.set("big1", big);
    cache.set("big2", big);
    if (own_operator_new_in_use()) {
        fail_allocation_of = big.size() + 1;
        bool threw = false;
        try {
            cache.get_many({"big1", "big2"});
        } catch (const std::bad_alloc &) {
            threw = true;
        }
        fail_allocation_of = 0;
        CHECK(threw);
    }
    CHECK(cache.get_many({"big1", "big2"})[1] == big);
    cache.close();
    CHECK(status_thrown([&] { cache.add("k", "v"); }) == CACHE_ERR_CLOSED);
    CHECK(status_thrown([&] { cache.keys("", [](std::string_view) {}); }) == CACHE_ERR_CLOSED);
}

int main() {
    char base[] = "/tmp/duckcache-cpptest-XXXXXX";
    CHECK(mkdtemp(base) != nullptr);
    const std::string dir = base;

    exercise(duckcache::Cache::memory(100));
    exercise(duckcache::Cache::file(dir + "/file"));
    exercise(duckcache::Cache::sharded(dir + "/sharded", 1 << 20, 4));
    exercise(duckcache::Cache::folder(dir + "/folder"));
    const std::string key(32, 'k');
    exercise(duckcache::Cache::encrypted(duckcache::Cache::memory(100), key));
    exercise(duckcache::Cache::encrypted(duckcache::Cache::file(dir + "/encrypted"), key));
    exercise_v2(duckcache::Cache::open("memory:?max_keys=100"));
    exercise_v2(duckcache::Cache::open("file:" + dir + "/v2-file?sync=full"));
    exercise_v2(duckcache::Cache::open("sharded:" + dir + "/v2-sharded?shard_size_limit=1MiB"));
    exercise_v2(duckcache::Cache::open("folder:" + dir + "/v2-folder"));
    exercise_v2(duckcache::Cache::encrypted(duckcache::Cache::open("file:" + dir + "/v2-sealed"), key));
    CHECK(status_thrown([&] { duckcache::Cache::open("nonsense:"); }) == CACHE_ERR_INVALID_ARG);

    // tiered: a bad bound throws and both parts stay usable; on success they are emptied
    {
        auto near = duckcache::Cache::memory();
        auto far = duckcache::Cache::file(dir + "/tiered-far");
        CHECK(status_thrown([&] { duckcache::Cache::tiered(std::move(near), std::move(far), 0.0); }) ==
              CACHE_ERR_INVALID_ARG);
        near.set("n", "1");
        far.set("f", "2");
        auto t = duckcache::Cache::tiered(std::move(near), std::move(far), 0.2);
        CHECK(status_thrown([&] { near.get("n"); }) == CACHE_ERR_INVALID_ARG);  // moved into t
        CHECK(t.get("f") == std::string("2"));  // far's value, now copied into near
        t.set("k", "v");
        auto again = duckcache::Cache::file(dir + "/tiered-far");
        CHECK(again.get("k") == std::string("v"));  // written through
        again.set("k", "changed");
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        CHECK(t.get("k") == std::string("changed"));  // within near_ttl_max
    }
    exercise_v2(duckcache::Cache::tiered(duckcache::Cache::memory(), duckcache::Cache::open("file:" + dir + "/v2-tiered"), 5.0));
    if (const char *redis = std::getenv("DUCKCACHE_REDIS_URL")) {
        std::string uri = std::string(redis) + (std::string(redis).find('?') == std::string::npos ? "?" : "&") +
                          "prefix=cpp-" + std::to_string(getpid()) + ":";
        exercise_v2(duckcache::Cache::open(uri));
    }

    // encrypted: a wrong key length throws and leaves the inner cache usable; on success
    // the inner Cache is emptied and the values reach it sealed
    {
        auto inner = duckcache::Cache::folder(dir + "/sealed");
        CHECK(status_thrown([&] { duckcache::Cache::encrypted(std::move(inner), "short"); }) ==
              CACHE_ERR_INVALID_ARG);
        inner.set("still", "usable");
        auto sealed = duckcache::Cache::encrypted(std::move(inner), key);
        CHECK(status_thrown([&] { inner.get("still"); }) == CACHE_ERR_INVALID_ARG);
        sealed.set("k", "plain text");
        CHECK(sealed.get("k") == std::string("plain text"));
        auto raw = duckcache::Cache::folder(dir + "/sealed");
        CHECK(raw.get("k")->size() == 40 + 10);
        CHECK(raw.get("k")->find("plain") == std::string::npos);
        CHECK(status_thrown([&] { sealed.get("still"); }) == CACHE_ERR_CORRUPT);  // never sealed
        CHECK(!sealed.get("still"));  // removed
    }

    // the C handle: capi() borrows it, release() gives it up, from_capi() takes it back
    {
        auto c = duckcache::Cache::memory();
        c.set("k", "v");
        CHECK(cache_has(c.capi(), reinterpret_cast<const std::uint8_t *>("k"), 1) == CACHE_OK);
        cache_t *raw = c.release();
        CHECK(status_thrown([&] { c.get("k"); }) == CACHE_ERR_INVALID_ARG);
        CHECK(status_thrown([&] { c.release(); }) == CACHE_ERR_INVALID_ARG);
        auto back = duckcache::Cache::from_capi(raw);
        CHECK(back.get("k") == std::string("v"));
        CHECK(status_thrown([&] { duckcache::Cache::from_capi(nullptr); }) == CACHE_ERR_INVALID_ARG);
        // a copy that throws frees the library's buffer (checked where this file's
        // operator new is the one in use: not under valgrind, which replaces it)
        const std::string big(4000, 'b');
        back.set("big", big);
        if (own_operator_new_in_use()) {
            fail_allocation_of = big.size() + 1;
            bool threw = false;
            try {
                back.get("big");
            } catch (const std::bad_alloc &) {
                threw = true;
            }
            fail_allocation_of = 0;
            CHECK(threw);
        }
        CHECK(back.get("big") == big);
    }

    // moves: the moved-from Cache refuses calls, the destination owns the handle
    auto a = duckcache::Cache::memory();
    a.set("k", "v");
    auto b = std::move(a);
    CHECK(b.get("k") == std::string("v"));
    CHECK(status_thrown([&] { a.get("k"); }) == CACHE_ERR_INVALID_ARG);
    a = duckcache::Cache::memory(1);
    a.set("x", "1");
    a.set("y", "2");  // evicts x: max_keys 1
    CHECK(!a.has("x") && a.has("y"));

    // errors from open: the status and the library's message
    {
        std::string file = dir + "/plain-file";
        std::FILE *f = std::fopen(file.c_str(), "w");
        CHECK(f != nullptr);
        std::fclose(f);
        try {
            duckcache::Cache::file(file);
            CHECK(false);
        } catch (const duckcache::Error &e) {
            CHECK(e.status() == CACHE_ERR_IO);
            CHECK(std::string(e.what()).find("plain-file") != std::string::npos);
        }
        auto small = duckcache::Cache::file(dir + "/small", 10);
        CHECK(status_thrown([&] { small.set("key", std::string(100, 'x')); }) == CACHE_ERR_TOO_LARGE);
        // an async failure reaches the future as the same exception
        auto failing = duckcache::Cache::sharded(dir + "/tiny", 8);
        try {
            failing.set_async("key", std::string(100, 'x')).get();
            CHECK(false);
        } catch (const duckcache::Error &e) {
            CHECK(e.status() == CACHE_ERR_TOO_LARGE);
        }
    }

    // many threads sharing one Cache
    {
        auto shared = duckcache::Cache::memory();
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; t++) {
            threads.emplace_back([&shared, t] {
                for (int i = 0; i < 1000; i++) {
                    std::string k = "t" + std::to_string(t) + "-" + std::to_string(i);
                    shared.set(k, k);
                    CHECK(shared.get(k) == k);
                }
            });
        }
        for (auto &th : threads) th.join();
        CHECK(shared.size() == 4000);
    }

    std::string rm = "rm -rf '" + dir + "'";
    CHECK(std::system(rm.c_str()) == 0);
    std::puts("test_duckcache (C++): ok");
    return 0;
}
