// ase.hpp: a header-only C++17 wrapper over include/ase.h.
//
// Thin on purpose: every call is one C call; ownership is RAII, failures are
// exceptions. Nothing here decides anything.
//
//   ase::Engine engine("ase.conf");                  // throws ase::Error
//   ase::Verdict v = engine.check(ase::Request()
//                                     .method("GET").scheme("https")
//                                     .host("shop.example.com").uri("/shopapi/x")
//                                     .client_ip("1.2.3.4")
//                                     .header("Cookie", "JSESSIONID=abc"));
//   engine.deny_add(ase::Identifier::ip("1.2.3.4"));
//   engine.deny_list(ASE_SOURCE_ALL, [](const ase::Entry &e) { ... });
//
// Lifetimes: an `ase::Request` holds views, so the strings it was given must
// outlive `Engine::check`. A `Verdict`'s views point into the engine and
// stay valid until the `Engine` is destroyed. An `Entry`'s views are valid
// during the callback only.
//
// Thread safety: as the C API: `const Engine &` may be used from any number
// of threads at once.
//
// Every function of ase.h has its counterpart here: the engine's in
// `Engine`, the configuration's (`config_check`, `config_fail_verdict`,
// `config_notice`) as free functions; `get()` still hands out the C engine.
#ifndef ASE_HPP
#define ASE_HPP

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "ase.h"

namespace ase {

/// A failed call: the `ase_result` code and its message (`ase_result_str`,
/// followed by the engine's detail when there is one).
class Error : public std::runtime_error {
public:
    explicit Error(ase_result code, const std::string &detail = {})
        : std::runtime_error(detail.empty() ? std::string(ase_result_str(code))
                                            : std::string(ase_result_str(code)) + ": " + detail),
          code_(code) {}

    /// The `ASE_ERR_*` code.
    ase_result code() const noexcept { return code_; }

private:
    ase_result code_;
};

/// Throws `Error` unless `r` is `ASE_OK`.
inline void check_result(ase_result r) {
    if (r != ASE_OK) {
        throw Error(r);
    }
}

/// A view as an `ase_str` (no copy).
inline ase_str to_ase(std::string_view s) noexcept {
    return ase_str{s.size(), reinterpret_cast<const uint8_t *>(s.data())};
}

/// An `ase_str` as a view (no copy).
inline std::string_view to_view(ase_str s) noexcept {
    return s.len == 0 ? std::string_view()
                      : std::string_view(reinterpret_cast<const char *>(s.data), s.len);
}

/// The library version (`ase_version`).
inline std::string_view version() { return ase_version(); }

/// The message of a result code (`ase_result_str`).
inline std::string_view result_str(ase_result r) { return ase_result_str(r); }

/// A NUL-terminated message buffer of the C API as a string.
template <std::size_t N>
inline std::string message(const char (&buf)[N]) {
    std::size_t n = 0;
    while (n < N && buf[n] != '\0') {
        ++n;
    }
    return std::string(buf, n);
}

/// Validates `ase.conf`, its `abs.conf` and the API files without opening
/// the state store (`ase_config_check`); throws `Error` naming the file,
/// line and key.
inline void config_check(std::string_view config_path) {
    char err[512] = {0};
    ase_result r = ase_config_check(to_ase(config_path), err, sizeof err);
    if (r != ASE_OK) {
        throw Error(r, err);
    }
}

/// The keys of ASE the configuration gives and ase does not act on, as one
/// notice (`ase_config_notice`); empty when there are none.
inline std::string config_notice(std::string_view config_path) {
    char buf[1024] = {0};
    check_result(ase_config_notice(to_ase(config_path), buf, sizeof buf));
    return message(buf);
}

/// A client identifier; the views must outlive the call it is passed to.
struct Identifier {
    ase_id_kind kind;
    std::string_view name;  ///< cookie or API-key name; empty for other kinds
    std::string_view value;

    static Identifier ip(std::string_view v) { return {ASE_ID_IP, {}, v}; }
    static Identifier cookie(std::string_view n, std::string_view v) { return {ASE_ID_COOKIE, n, v}; }
    static Identifier token(std::string_view v) { return {ASE_ID_TOKEN, {}, v}; }
    static Identifier api_key(std::string_view n, std::string_view v) { return {ASE_ID_API_KEY, n, v}; }
    static Identifier username(std::string_view v) { return {ASE_ID_USERNAME, {}, v}; }

    ase_identifier raw() const noexcept { return ase_identifier{kind, to_ase(name), to_ase(value)}; }
};

/// A list entry, as handed to a `deny_list` / `allow_list` callback.
struct Entry {
    ase_id_kind kind;
    std::string_view name;
    std::string_view value;
    ase_source source;
    uint64_t expires_ms;  ///< Unix milliseconds; 0 = never
};

/// A request builder over views: keep the strings alive until `check` returns.
class Request {
public:
    Request() noexcept : raw_() { raw_.unknown_api = ASE_UNKNOWN_API_DEFAULT; }

    Request &client_ip(std::string_view v) noexcept { raw_.client_ip = to_ase(v); return *this; }
    Request &method(std::string_view v) noexcept { raw_.method = to_ase(v); return *this; }
    Request &scheme(std::string_view v) noexcept { raw_.scheme = to_ase(v); return *this; }
    Request &host(std::string_view v) noexcept { raw_.host = to_ase(v); return *this; }
    Request &uri(std::string_view v) noexcept { raw_.uri = to_ase(v); return *this; }
    Request &http_version(std::string_view v) noexcept { raw_.http_version = to_ase(v); return *this; }
    Request &username(std::string_view v) noexcept { raw_.username = to_ase(v); return *this; }
    Request &unknown_api(ase_unknown_api v) noexcept { raw_.unknown_api = v; return *this; }
    Request &client_port(uint16_t v) noexcept { raw_.client_port = v; return *this; }
    Request &header(std::string_view name, std::string_view value) {
        headers_.push_back(ase_header{to_ase(name), to_ase(value)});
        return *this;
    }

    /// The C request; valid until this builder changes or goes away.
    const ase_request &raw() noexcept {
        raw_.headers = headers_.empty() ? nullptr : headers_.data();
        raw_.headers_len = headers_.size();
        return raw_;
    }

private:
    ase_request raw_;
    std::vector<ase_header> headers_;
};

/// `ase_verdict` with views; they stay valid until the `Engine` is destroyed.
struct Verdict {
    ase_action action;
    ase_reason reason;
    uint32_t status;
    bool would_block;
    ase_id_kind matched_kind;
    ase_source source;
    std::string_view status_text;
    std::string_view body;
    std::string_view location;
    std::string_view api_name;
};

/// A C verdict as a `Verdict` (views into the same strings).
inline Verdict to_verdict(const ase_verdict &v) noexcept {
    return Verdict{v.action,
                   v.reason,
                   v.status,
                   v.would_block,
                   v.matched_kind,
                   v.source,
                   to_view(v.status_text),
                   to_view(v.body),
                   to_view(v.location),
                   to_view(v.api_name)};
}

/// A `Verdict` back as the C verdict (for `Engine::abs_report`).
inline ase_verdict to_raw(const Verdict &v) noexcept {
    ase_verdict r{};
    r.action = v.action;
    r.reason = v.reason;
    r.status = v.status;
    r.would_block = v.would_block;
    r.matched_kind = v.matched_kind;
    r.source = v.source;
    r.status_text = to_ase(v.status_text);
    r.body = to_ase(v.body);
    r.location = to_ase(v.location);
    r.api_name = to_ase(v.api_name);
    return r;
}

/// The verdict `fail_mode` gives every request while no engine can decide
/// (`ase_config_fail_verdict`); its views are static.
inline Verdict config_fail_verdict(std::string_view config_path) {
    ase_verdict v{};
    check_result(ase_config_fail_verdict(to_ase(config_path), &v));
    return to_verdict(v);
}

/// An engine (`ase_engine`): move-only, freed by the destructor.
class Engine {
public:
    /// Loads `ase.conf` (`ase_engine_new`); throws `Error` whose message names
    /// the file, line and key.
    explicit Engine(std::string_view config_path) {
        char err[512] = {0};
        ase_engine *e = nullptr;
        ase_result r = ase_engine_new(to_ase(config_path), err, sizeof err, &e);
        if (r != ASE_OK) {
            throw Error(r, err);
        }
        engine_.reset(e);
    }

    /// `ase_engine_new_ex`: `ASE_ENGINE_*` flags, e.g. `ASE_ENGINE_EVENTED`
    /// (no thread: call `tick` from the host's event loop).
    Engine(std::string_view config_path, uint32_t flags) {
        char err[512] = {0};
        ase_engine *e = nullptr;
        ase_engine_options opts{};
        opts.flags = flags;
        ase_result r = ase_engine_new_ex(to_ase(config_path), &opts, err, sizeof err, &e);
        if (r != ASE_OK) {
            throw Error(r, err);
        }
        engine_.reset(e);
    }

    /// Decides one request (`ase_check_request`).
    Verdict check(Request &req) const {
        ase_verdict v{};
        check_result(ase_check_request(get(), &req.raw(), &v));
        return to_verdict(v);
    }
    Verdict check(Request &&req) const { return check(req); }

    void deny_add(const Identifier &id, uint64_t ttl_seconds = 0) const {
        ase_identifier raw = id.raw();
        check_result(ase_deny_add(get(), &raw, ttl_seconds));
    }
    void deny_remove(const Identifier &id) const {
        ase_identifier raw = id.raw();
        check_result(ase_deny_remove(get(), &raw));
    }
    void deny_clear(ase_source source = ASE_SOURCE_ALL) const {
        check_result(ase_deny_clear(get(), source));
    }
    void allow_add(const Identifier &id, uint64_t ttl_seconds = 0) const {
        ase_identifier raw = id.raw();
        check_result(ase_allow_add(get(), &raw, ttl_seconds));
    }
    void allow_remove(const Identifier &id) const {
        ase_identifier raw = id.raw();
        check_result(ase_allow_remove(get(), &raw));
    }
    void allow_clear() const { check_result(ase_allow_clear(get())); }

    /// Calls `f(const Entry &)` per deny entry of `source`. `f` returns void
    /// (go on) or bool (false stops). An exception from `f` stops the listing
    /// and is rethrown here; it never crosses the C library.
    template <typename F>
    void deny_list(ase_source source, F &&f) const {
        Trampoline<F> t{f, nullptr};
        ase_result r = ase_deny_list(get(), source, &Trampoline<F>::call, &t);
        t.rethrow();
        check_result(r);
    }

    /// As `deny_list`, for the allow list.
    template <typename F>
    void allow_list(F &&f) const {
        Trampoline<F> t{f, nullptr};
        ase_result r = ase_allow_list(get(), &Trampoline<F>::call, &t);
        t.rethrow();
        check_result(r);
    }

    void set_switch(ase_switch which, bool on) const {
        check_result(ase_switch_set(get(), which, on));
    }
    bool get_switch(ase_switch which) const {
        bool on = false;
        check_result(ase_switch_get(get(), which, &on));
        return on;
    }
    void set_api_blocking(std::string_view api, bool on) const {
        check_result(ase_api_set_blocking(get(), to_ase(api), on));
    }
    ase_stats stats() const {
        ase_stats s{};
        check_result(ase_engine_stats(get(), &s));
        return s;
    }

    /// The engine's shared-state health (`ase_engine_health`): whether the
    /// store answers (`store_error` says why not), `fail_mode_active`, ...
    ase_health health() const {
        ase_health h{};
        check_result(ase_engine_health(get(), &h));
        return h;
    }

    /// Fetches the ABS attack list now and waits up to `timeout_ms` for it
    /// (`ase_abs_sync_now`); throws when it failed.
    void abs_sync_now(uint32_t timeout_ms) const {
        check_result(ase_abs_sync_now(get(), timeout_ms));
    }

    /// The ABS sync state and traffic counters (`ase_abs_status`).
    ase_abs_state abs_status() const {
        ase_abs_state s{};
        check_result(ase_abs_status(get(), &s));
        return s;
    }

    /// Reports a checked request to ABS as traffic with the status it was
    /// answered with (`ase_abs_report`); a no-op while `enable_abs` is off.
    void abs_report(Request &req, const Verdict &v, uint32_t response_status) const {
        ase_verdict raw = to_raw(v);
        check_result(ase_abs_report(get(), &req.raw(), &raw, response_status));
    }

    /// One step of an evented engine's background work (`ase_engine_tick`);
    /// returns when to call it again, in milliseconds.
    uint32_t tick() const {
        uint32_t next = 0;
        check_result(ase_engine_tick(get(), &next));
        return next;
    }

    /// The C engine, for calls this wrapper does not cover. Still owned here.
    ase_engine *get() const noexcept { return engine_.get(); }

private:
    struct Free {
        void operator()(ase_engine *e) const noexcept { ase_engine_free(e); }
    };
    std::unique_ptr<ase_engine, Free> engine_;

    template <typename F>
    struct Trampoline {
        F &f;
        std::exception_ptr error;

        static int32_t call(void *userdata, const ase_entry *e) noexcept {
            auto *t = static_cast<Trampoline *>(userdata);
            try {
                Entry entry{e->kind, to_view(e->name), to_view(e->value), e->source,
                            e->expires_ms};
                if constexpr (std::is_same_v<std::invoke_result_t<F &, const Entry &>, void>) {
                    t->f(entry);
                    return 0;
                } else {
                    return t->f(entry) ? 0 : 1;
                }
            } catch (...) {
                t->error = std::current_exception();
                return 1;
            }
        }
        void rethrow() const {
            if (error) {
                std::rethrow_exception(error);
            }
        }
    };
};

}  // namespace ase

#endif  // ASE_HPP
