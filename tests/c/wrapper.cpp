// The C++ wrapper's calls beyond the request check and the lists, each once
// against the examples' configuration (argv[1]): the configuration checks,
// an evented engine and its tick, health, ABS (not configured there) and the
// per-reason counters. Prints one line per call; scripts/examples.sh
// compares them.
#include "ase.hpp"

#include <cstdio>
#include <string>

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: wrapper CONFIG\n");
        return 2;
    }
    const std::string config = argv[1];
    try {
        ase::config_check(config);
        std::printf("config_check: ok\n");
        std::string notice = ase::config_notice(config);
        std::printf("config_notice: %s\n", notice.empty() ? "none" : notice.c_str());
        ase::Verdict fail = ase::config_fail_verdict(config);
        std::printf("config_fail_verdict: action %u reason %u\n", fail.action, fail.reason);

        ase::Engine engine(config, ASE_ENGINE_EVENTED);
        std::printf("tick: next in %s\n", engine.tick() > 0 ? "some ms" : "0 ms");
        ase_health h = engine.health();
        std::printf("health: store %s, fail_mode %s\n", h.store_ok ? "ok" : "failing",
                    h.fail_mode_active ? "active" : "inactive");

        ase::Request req;
        req.method("GET").scheme("https").host("shop.example.com").uri("/shopapi/items")
            .client_ip("203.0.113.10");
        ase::Verdict v = engine.check(req);
        std::printf("check: action %u api %.*s\n", v.action, static_cast<int>(v.api_name.size()),
                    v.api_name.data());
        engine.abs_report(req, v, 200);
        std::printf("abs_report: ok\n");
        ase_abs_state abs = engine.abs_status();
        std::printf("abs_status: %s\n", abs.configured ? "configured" : "not configured");
        try {
            engine.abs_sync_now(0);
            std::printf("abs_sync_now: ok\n");
        } catch (const ase::Error &e) {
            std::printf("abs_sync_now: error %u\n", e.code());
        }
        ase_stats s = engine.stats();
        std::printf("stats: checked %llu, allowed for no reason %llu\n",
                    static_cast<unsigned long long>(s.checked),
                    static_cast<unsigned long long>(s.allowed_by_reason[ASE_REASON_NONE]));
        std::printf("result_str: %.*s\n", static_cast<int>(ase::result_str(ASE_OK).size()),
                    ase::result_str(ASE_OK).data());
    } catch (const ase::Error &e) {
        std::fprintf(stderr, "wrapper: %s\n", e.what());
        return 1;
    }
    return 0;
}
