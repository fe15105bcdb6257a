// duckcache.hpp: header-only C++17 wrapper over the duckcache C API (duckcache.h).
//
//   auto cache = duckcache::Cache::file("/var/cache/app");
//   cache.set("greeting", "hello", 60.0);            // ttl in seconds; default never
//   if (auto v = cache.get("greeting")) use(*v);     // std::optional<std::string>
//   auto f = cache.get_async("greeting");            // std::future<std::optional<std::string>>
//   auto c = duckcache::Cache::open("file:/var/cache/app?size_limit=1GiB");
//   c.add("lock", "me", 30);                         // false when a live entry holds it
//   auto v = c.get_or_compute("page", [] { return render(); });  // one compute per key at a time
//
// A Cache owns its cache_t* and is move-only; its destructor frees the handle (after
// queued async operations finish). Every failure is thrown as duckcache::Error carrying
// the C status and the library's message. Keys and values are byte strings: a
// std::string_view may hold any bytes, NUL included.
#ifndef DUCKCACHE_HPP
#define DUCKCACHE_HPP

#include "duckcache.h"

#include <cstdint>
#include <exception>
#include <limits>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace duckcache {

/// A failed call: the C status (a CACHE_ERR_* value) and what went wrong.
class Error : public std::runtime_error {
public:
    Error(int status, std::string message)
        : std::runtime_error(std::move(message)), status_(status) {}
    int status() const noexcept { return status_; }

private:
    int status_;
};

using Stats = cache_stats;

/// One entry of Cache::set_many (the bytes are borrowed for the call).
struct Entry {
    std::string_view key;
    std::string_view value;
    double ttl_seconds = CACHE_NO_TTL;
    std::uint32_t flags = 0;
};

namespace detail {

inline const std::uint8_t *bytes(std::string_view s) {
    return reinterpret_cast<const std::uint8_t *>(s.data());
}

/// The Error for `status`, with this thread's cache_last_error text.
inline Error error(int status) {
    std::string message(256, '\0');
    std::size_t len = cache_last_error(message.data(), message.size());
    if (len >= message.size()) {
        message.assign(len + 1, '\0');
        len = cache_last_error(message.data(), message.size());
    }
    message.resize(len);
    if (message.empty()) message = cache_status_str(status);
    return Error(status, std::move(message));
}

/// Throws unless `status` is one of the `ok` values; returns it.
inline int check(int status, int also_ok = CACHE_OK) {
    if (status != CACHE_OK && status != also_ok) throw error(status);
    return status;
}

inline std::optional<std::string> value_of(cache_status status, const std::uint8_t *value,
                                           std::size_t len) {
    if (status != CACHE_OK) return std::nullopt;
    return std::string(reinterpret_cast<const char *>(value), len);
}

/// Called by the library on a worker thread: completes the promise, then deletes it.
template <class T>
void complete(void *user, cache_status status, const std::uint8_t *value, std::size_t len) {
    std::unique_ptr<std::promise<T>> promise(static_cast<std::promise<T> *>(user));
    try {
        if (status != CACHE_OK && status != CACHE_NOT_FOUND) {
            promise->set_exception(std::make_exception_ptr(error(status)));
        } else if constexpr (std::is_void_v<T>) {
            promise->set_value();
        } else {
            promise->set_value(value_of(status, value, len));
        }
    } catch (...) {
        // set_value can only fail on a broken promise, which this code never makes.
    }
}

/// Calls the user's callable with (status, value) (the value only for get and pop,
/// `Valued`); an exception it throws must not unwind into C, so it ends the program as
/// an exception escaping a thread would.
template <class F, bool Valued>
void invoke(void *user, cache_status status, const std::uint8_t *value, std::size_t len) {
    std::unique_ptr<F> f(static_cast<F *>(user));
    try {
        (*f)(static_cast<int>(status),
             Valued ? value_of(status, value, len) : std::optional<std::string>());
    } catch (...) {
        std::terminate();
    }
}

}  // namespace detail

/// An open cache of any kind.
class Cache {
public:
    /// In-memory, exact LRU bounded by max_keys (0 = unbounded), per-entry TTL.
    static Cache memory(std::uint64_t max_keys = 0) {
        return open_with([&](cache_t **out) { return cache_open_memory(max_keys, out); });
    }
    /// One SQLite store in `dir`, bounded by size_limit bytes (0 = unlimited).
    static Cache file(const std::string &dir, std::uint64_t size_limit = 0) {
        return open_with([&](cache_t **out) { return cache_open_file(dir.c_str(), size_limit, out); });
    }
    /// File-cache shards under `dir`, each filled up to shard_size_limit bytes.
    static Cache sharded(const std::string &dir, std::uint64_t shard_size_limit = 0,
                         std::uint32_t max_open_shards = 0) {
        return open_with([&](cache_t **out) {
            return cache_open_sharded(dir.c_str(), shard_size_limit, max_open_shards, out);
        });
    }
    /// One folder of plain files per key under `dir`.
    static Cache folder(const std::string &dir, std::uint32_t max_open = 0) {
        return open_with([&](cache_t **out) { return cache_open_folder(dir.c_str(), max_open, out); });
    }
    /// Any kind, by URI: "memory:?max_keys=1000", "file:/var/c?size_limit=1GiB&sync=full",
    /// "sharded:DIR", "folder:DIR" (see the README's table of parameters).
    static Cache open(const std::string &uri) {
        return open_with([&](cache_t **out) { return cache_open(uri.c_str(), out); });
    }

    /// Values sealed before they reach `inner` (XSalsa20-Poly1305, PyNaCl's SecretBox
    /// format); `key` must be 32 bytes. On success the new Cache owns `inner`'s handle
    /// (`inner` is left empty); on failure it throws and `inner` keeps it.
    static Cache encrypted(Cache &&inner, const std::string &key) {
        cache_t *c = nullptr;
        detail::check(cache_open_encrypted(inner.handle(),
                                           reinterpret_cast<const std::uint8_t *>(key.data()),
                                           key.size(), &c));
        inner.c_.release();  // owned by the new handle now
        return Cache(c);
    }

    /// A near cache (usually memory) in front of a far one (file, sharded, Redis): gets
    /// served by near when it can, far's values kept there for at most near_ttl_max
    /// seconds; writes go to far first. On success the new Cache owns both handles (`near`
    /// and `far` are left empty); on failure it throws and they keep theirs.
    static Cache tiered(Cache &&near, Cache &&far, double near_ttl_max) {
        cache_t *c = nullptr;
        detail::check(cache_open_tiered(near.handle(), far.handle(), near_ttl_max, &c));
        near.c_.release();  // owned by the new handle now
        far.c_.release();
        return Cache(c);
    }

    /// Takes ownership of a handle from the C API (freed with the Cache).
    static Cache from_capi(cache_t *c) {
        if (!c) throw Error(CACHE_ERR_INVALID_ARG, "the cache handle is NULL");
        return Cache(c);
    }

    // Moves transfer the handle; the moved-from Cache refuses calls. The handle is freed
    // (once its queued async operations have finished) with the Cache that owns it.
    Cache(const Cache &) = delete;
    Cache &operator=(const Cache &) = delete;
    Cache(Cache &&) noexcept = default;
    Cache &operator=(Cache &&) noexcept = default;
    ~Cache() = default;

    /// Stores `value` under `key`; ttl_seconds < 0 or +inf never expires, 0 expires at once.
    void set(std::string_view key, std::string_view value, double ttl_seconds = CACHE_NO_TTL) {
        detail::check(cache_set(handle(), detail::bytes(key), key.size(), detail::bytes(value),
                                value.size(), ttl_seconds));
    }

    /// The value of `key`, or nullopt when absent or expired.
    std::optional<std::string> get(std::string_view key) const {
        return take([&](cache_buf *b) { return cache_get(handle(), detail::bytes(key), key.size(), b); });
    }

    /// Removes `key` and returns its value; of concurrent pops exactly one gets it.
    std::optional<std::string> pop(std::string_view key) {
        return take([&](cache_buf *b) { return cache_pop(handle(), detail::bytes(key), key.size(), b); });
    }

    bool has(std::string_view key) const {
        return detail::check(cache_has(handle(), detail::bytes(key), key.size()), CACHE_NOT_FOUND) ==
               CACHE_OK;
    }

    /// Removes `key` (present or not).
    void erase(std::string_view key) {
        detail::check(cache_delete(handle(), detail::bytes(key), key.size()));
    }

    void clear() { detail::check(cache_clear(handle())); }

    /// Entries that have not expired.
    std::uint64_t size() const {
        std::uint64_t n = 0;
        detail::check(cache_len(handle(), &n));
        return n;
    }

    Stats stats() const {
        Stats s{};
        detail::check(cache_get_stats(handle(), &s));
        return s;
    }

    /// Makes everything written so far durable (a no-op in memory).
    void save() { detail::check(cache_save(handle())); }

    /// Waits for queued async operations, then releases files; later calls throw
    /// Error(CACHE_ERR_CLOSED). Idempotent.
    void close() { detail::check(cache_close(handle())); }

    // --- version 2 ---

    /// Stores only when no live entry holds `key`: true when it stored. Of concurrent
    /// adds of one key (threads or processes) exactly one returns true.
    bool add(std::string_view key, std::string_view value, double ttl_seconds = CACHE_NO_TTL) {
        return detail::check(cache_add(handle(), detail::bytes(key), key.size(), detail::bytes(value),
                                       value.size(), ttl_seconds),
                             CACHE_EXISTS) == CACHE_OK;
    }

    /// Adds `delta` to the decimal counter under `key` (absent: from 0, with ttl_seconds)
    /// and returns the new value; Error(CACHE_ERR_NOT_NUMERIC) for a value that is no
    /// int64, or an overflow.
    std::int64_t incr(std::string_view key, std::int64_t delta = 1, double ttl_seconds = CACHE_NO_TTL) {
        std::int64_t out = 0;
        detail::check(cache_incr(handle(), detail::bytes(key), key.size(), delta, ttl_seconds, &out));
        return out;
    }

    /// Gives a live entry a new TTL (0 expires it now); false when absent.
    bool touch(std::string_view key, double ttl_seconds) {
        return detail::check(cache_touch(handle(), detail::bytes(key), key.size(), ttl_seconds),
                             CACHE_NOT_FOUND) == CACHE_OK;
    }

    /// Seconds left, +infinity when the entry never expires, nullopt when absent.
    std::optional<double> ttl(std::string_view key) const {
        double left = 0;
        if (detail::check(cache_ttl(handle(), detail::bytes(key), key.size(), &left), CACHE_NOT_FOUND) ==
            CACHE_NOT_FOUND)
            return std::nullopt;
        return left < 0 ? std::numeric_limits<double>::infinity() : left;
    }

    /// The value of `key`; on a miss, one caller per key at a time runs `compute`
    /// (returning std::string, or std::optional<std::string> where nullopt stores
    /// nothing) and its value is stored with ttl_seconds and given to every caller
    /// waiting for the key. An exception from `compute` stores nothing, is rethrown here,
    /// and the other waiters get Error(CACHE_ERR_INTERNAL).
    template <class F>
    std::optional<std::string> get_or_compute(std::string_view key, F compute,
                                              double ttl_seconds = CACHE_NO_TTL) {
        struct Call {
            F *compute;
            double ttl;
            std::exception_ptr thrown;
        } call{&compute, ttl_seconds, nullptr};
        auto trampoline = [](void *user, const std::uint8_t *, std::size_t, cache_sink *sink) -> cache_status {
            auto *c = static_cast<Call *>(user);
            try {
                std::optional<std::string> value{(*c->compute)()};
                if (!value) return CACHE_OK;  // nothing put: NOT_FOUND
                return cache_sink_put(sink, detail::bytes(*value), value->size(), c->ttl, 0);
            } catch (...) {
                c->thrown = std::current_exception();
                return CACHE_ERR_INTERNAL;
            }
        };
        OwnedBuf buf;
        int status = cache_get_or_compute(handle(), detail::bytes(key), key.size(), trampoline, &call,
                                          &buf.b, nullptr);
        if (call.thrown) std::rethrow_exception(call.thrown);
        if (detail::check(status, CACHE_NOT_FOUND) == CACHE_NOT_FOUND) return std::nullopt;
        return std::string(reinterpret_cast<const char *>(buf.b.data), buf.b.len);
    }

    /// The values of `keys` in order (nullopt where absent), read in one transaction on
    /// the persistent kinds.
    std::vector<std::optional<std::string>> get_many(const std::vector<std::string_view> &keys) const {
        std::vector<cache_slice> slices = slices_of(keys);
        std::vector<cache_status> statuses(keys.size());
        std::vector<OwnedBuf> bufs(keys.size());
        std::vector<cache_buf> raw(keys.size());
        detail::check(cache_get_many(handle(), slices.data(), slices.size(), raw.data(), statuses.data(),
                                     nullptr));
        for (std::size_t i = 0; i < raw.size(); i++) bufs[i].b = raw[i];  // freed on any exit
        std::vector<std::optional<std::string>> out;
        out.reserve(keys.size());
        for (std::size_t i = 0; i < keys.size(); i++) {
            if (statuses[i] == CACHE_OK)
                out.emplace_back(std::string(reinterpret_cast<const char *>(bufs[i].b.data), bufs[i].b.len));
            else
                out.emplace_back(std::nullopt);
        }
        return out;
    }

    /// Stores every entry, or (on an exception) none; one transaction on the persistent kinds.
    void set_many(const std::vector<Entry> &entries) {
        std::vector<cache_entry> raw;
        raw.reserve(entries.size());
        for (const Entry &e : entries)
            raw.push_back(cache_entry{{detail::bytes(e.key), e.key.size()},
                                      {detail::bytes(e.value), e.value.size()},
                                      e.ttl_seconds,
                                      e.flags});
        detail::check(cache_set_many(handle(), raw.data(), raw.size()));
    }

    /// Removes `keys`; returns how many were live.
    std::uint64_t delete_many(const std::vector<std::string_view> &keys) {
        std::vector<cache_slice> slices = slices_of(keys);
        std::uint64_t deleted = 0;
        detail::check(cache_delete_many(handle(), slices.data(), slices.size(), &deleted));
        return deleted;
    }

    /// Calls `f(std::string_view key)` for each live key starting with `prefix`; `f` may
    /// return bool (false stops the walk) or nothing. No lock is held while it runs, so
    /// it may use this Cache. An exception from `f` stops the walk and is rethrown.
    template <class F>
    void keys(std::string_view prefix, F f) const {
        struct Walk {
            F *f;
            std::exception_ptr thrown;
        } walk{&f, nullptr};
        auto trampoline = [](void *user, const std::uint8_t *key, std::size_t len) -> int {
            auto *w = static_cast<Walk *>(user);
            try {
                std::string_view k(reinterpret_cast<const char *>(key), len);
                if constexpr (std::is_same_v<decltype((*w->f)(k)), void>) {
                    (*w->f)(k);
                    return 0;
                } else {
                    return (*w->f)(k) ? 0 : 1;
                }
            } catch (...) {
                w->thrown = std::current_exception();
                return 1;
            }
        };
        int status = cache_keys(handle(), detail::bytes(prefix), prefix.size(), trampoline, &walk);
        if (walk.thrown) std::rethrow_exception(walk.thrown);
        detail::check(status);
    }

    /// Removes every live key starting with `prefix`; returns how many.
    std::uint64_t delete_prefix(std::string_view prefix) {
        std::uint64_t deleted = 0;
        detail::check(cache_delete_prefix(handle(), detail::bytes(prefix), prefix.size(), &deleted));
        return deleted;
    }

    /// Removes every expired entry now; returns how many.
    std::uint64_t purge_expired() {
        std::uint64_t removed = 0;
        detail::check(cache_purge_expired(handle(), &removed));
        return removed;
    }

    // --- asynchronous: the future is fulfilled on a library thread ---

    std::future<void> set_async(std::string_view key, std::string_view value,
                                double ttl_seconds = CACHE_NO_TTL) {
        return submit<void>([&](cache_callback cb, void *user) {
            return cache_set_async(handle(), detail::bytes(key), key.size(), detail::bytes(value),
                                   value.size(), ttl_seconds, cb, user);
        });
    }
    std::future<std::optional<std::string>> get_async(std::string_view key) {
        return submit<std::optional<std::string>>([&](cache_callback cb, void *user) {
            return cache_get_async(handle(), detail::bytes(key), key.size(), cb, user);
        });
    }
    std::future<std::optional<std::string>> pop_async(std::string_view key) {
        return submit<std::optional<std::string>>([&](cache_callback cb, void *user) {
            return cache_pop_async(handle(), detail::bytes(key), key.size(), cb, user);
        });
    }
    std::future<void> erase_async(std::string_view key) {
        return submit<void>([&](cache_callback cb, void *user) {
            return cache_delete_async(handle(), detail::bytes(key), key.size(), cb, user);
        });
    }
    std::future<void> clear_async() {
        return submit<void>([&](cache_callback cb, void *user) { return cache_clear_async(handle(), cb, user); });
    }

    /// Queues a get; `f(int status, std::optional<std::string> value)` runs once on a
    /// library thread (status CACHE_OK, CACHE_NOT_FOUND or a CACHE_ERR_* value).
    template <class F>
    void get_async(std::string_view key, F f) {
        call<F, true>(std::move(f), [&](cache_callback cb, void *user) {
            return cache_get_async(handle(), detail::bytes(key), key.size(), cb, user);
        });
    }
    /// As get_async with a callable, for pop.
    template <class F>
    void pop_async(std::string_view key, F f) {
        call<F, true>(std::move(f), [&](cache_callback cb, void *user) {
            return cache_pop_async(handle(), detail::bytes(key), key.size(), cb, user);
        });
    }
    /// As get_async with a callable, for set (the value passed to `f` is nullopt).
    template <class F>
    void set_async(std::string_view key, std::string_view value, double ttl_seconds, F f) {
        call<F, false>(std::move(f), [&](cache_callback cb, void *user) {
            return cache_set_async(handle(), detail::bytes(key), key.size(), detail::bytes(value),
                                   value.size(), ttl_seconds, cb, user);
        });
    }

    /// The C handle, for calls this wrapper does not cover. Still owned by the Cache.
    cache_t *capi() const {
        if (!c_) throw Error(CACHE_ERR_INVALID_ARG, "the Cache was moved from");
        return c_.get();
    }
    /// As capi() (the earlier name).
    cache_t *handle() const { return capi(); }
    /// Gives up the C handle: the caller frees it with cache_free. The Cache is left
    /// empty (calls throw).
    cache_t *release() {
        capi();  // throws when already empty
        return c_.release();
    }

private:
    explicit Cache(cache_t *c) : c_(c) {}

    struct Free {
        void operator()(cache_t *c) const noexcept { cache_free(c); }
    };

    /// A cache_buf freed when it goes out of scope, also when copying it out throws.
    struct OwnedBuf {
        cache_buf b{nullptr, 0};
        OwnedBuf() = default;
        OwnedBuf(const OwnedBuf &) = delete;
        OwnedBuf &operator=(const OwnedBuf &) = delete;
        ~OwnedBuf() { cache_buf_free(&b); }
    };

    template <class Open>
    static Cache open_with(Open &&open_fn) {
        cache_t *c = nullptr;
        detail::check(open_fn(&c));
        return Cache(c);
    }

    static std::vector<cache_slice> slices_of(const std::vector<std::string_view> &keys) {
        std::vector<cache_slice> slices;
        slices.reserve(keys.size());
        for (std::string_view k : keys) slices.push_back(cache_slice{detail::bytes(k), k.size()});
        return slices;
    }

    template <class Call>
    static std::optional<std::string> take(Call &&call) {
        OwnedBuf buf;
        if (detail::check(call(&buf.b), CACHE_NOT_FOUND) == CACHE_NOT_FOUND) return std::nullopt;
        return std::string(reinterpret_cast<const char *>(buf.b.data), buf.b.len);
    }

    template <class T, class Submit>
    std::future<T> submit(Submit &&submit_fn) {
        auto promise = std::make_unique<std::promise<T>>();
        auto future = promise->get_future();
        int status = submit_fn(&detail::complete<T>, promise.get());
        if (status != CACHE_OK) throw detail::error(status);  // not queued: never called back
        promise.release();  // the callback owns it now
        return future;
    }

    template <class F, bool Valued, class Submit>
    void call(F f, Submit &&submit_fn) {
        auto owned = std::make_unique<F>(std::move(f));
        int status = submit_fn(&detail::invoke<F, Valued>, owned.get());
        if (status != CACHE_OK) throw detail::error(status);
        owned.release();
    }

    std::unique_ptr<cache_t, Free> c_;
};

}  // namespace duckcache

#endif  // DUCKCACHE_HPP
