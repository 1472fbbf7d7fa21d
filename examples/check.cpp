// check (C++): examples/check.c written against bindings/cpp/ase.hpp.
//
//   check_cpp CONFIG [-f FILE]... [LINE]...
//
// Same line format, directives, output and exit status as examples/check.c
// (see the comment at its top); the test suite diffs both against the same
// expected output.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "ase.hpp"

namespace {

constexpr const char *action_names[] = {"allow", "block", "respond", "redirect"};
constexpr const char *reason_names[ASE_REASON_COUNT] = {
    "none",      "firewall_off", "unknown_api", "allow_list",   "decoy",
    "deny_list", "protocol",     "method",      "content_type", "fail_mode",
    "duplicate_identifier"};
constexpr const char *kind_names[] = {"ip", "cookie", "token", "api_key", "username"};
constexpr const char *source_names[] = {"manual",           "abs_detected",   "decoy",
                                        "invalid_protocol", "invalid_method", "invalid_content_type"};
constexpr const char *switch_names[] = {"firewall", "abs", "abs_attack", "ase_detected_attack"};

template <std::size_t N>
const char *name_of(const char *const (&names)[N], uint32_t v) {
    return v < N ? names[v] : "?";
}

template <std::size_t N>
int index_of(const char *const (&names)[N], std::string_view s) {
    for (std::size_t i = 0; i < N; i++) {
        if (s == names[i]) {
            return static_cast<int>(i);
        }
    }
    return -1;
}

// A bad line: the message is complete ("argument 2: unknown switch: x").
struct LineError {
    std::string message;
};

class Checker {
public:
    explicit Checker(const ase::Engine &engine) : engine_(engine) {}

    void run_line(std::string line, const std::string &where) {
        where_ = where;
        if (auto cr = line.find_first_of("\r\n"); cr != std::string::npos) {
            line.resize(cr);
        }
        if (auto first = line.find_first_not_of(" \t");
            first != std::string::npos && line[first] == '#') {
            return;
        }
        std::vector<std::string> tok = tokenize(line);
        if (tok.empty()) {
            return;
        }
        if (tok[0][0] == '!') {
            directive(tok);
        } else {
            request(tok);
        }
    }

private:
    const ase::Engine &engine_;
    std::string where_;

    [[noreturn]] void fail(std::string_view msg, std::string_view detail = {}) const {
        std::string m = where_ + ": " + std::string(msg);
        if (!detail.empty()) {
            m += ": " + std::string(detail);
        }
        throw LineError{m};
    }

    std::vector<std::string> tokenize(const std::string &line) const {
        std::vector<std::string> tok;
        std::size_t p = 0;
        for (;;) {
            p = line.find_first_not_of(" \t", p);
            if (p == std::string::npos) {
                return tok;
            }
            if (tok.size() == 64) {
                fail("too many tokens");
            }
            if (line[p] == '"') {
                std::size_t end = line.find('"', p + 1);
                if (end == std::string::npos) {
                    fail("unterminated quote");
                }
                if (end + 1 < line.size() && line[end + 1] != ' ' && line[end + 1] != '\t') {
                    fail("a closing quote must end the token");
                }
                tok.push_back(line.substr(p + 1, end - p - 1));
                p = end + 1;
            } else {
                std::size_t end = line.find_first_of(" \t", p);
                tok.push_back(line.substr(p, end == std::string::npos ? end : end - p));
                p = end == std::string::npos ? line.size() : end;
            }
        }
    }

    static void print_escaped(std::string_view s) {
        for (unsigned char c : s) {
            if (c == '"' || c == '\\') {
                std::printf("\\%c", c);
            } else if (c < 0x20 || c >= 0x7f) {
                std::printf("\\x%02x", c);
            } else {
                std::putchar(c);
            }
        }
    }

    static void print_verdict(const ase::Verdict &v) {
        std::string out = name_of(action_names, v.action);
        if (v.status != 0) {
            out += " " + std::to_string(v.status);
            if (!v.status_text.empty()) {
                out += " " + std::string(v.status_text);
            }
        }
        if (v.reason != ASE_REASON_NONE) {
            out += std::string(" (") + (v.would_block ? "would block: " : "") +
                   name_of(reason_names, v.reason);
            if (v.matched_kind != ASE_ID_NONE) {
                out += std::string(", ") + name_of(kind_names, v.matched_kind);
            }
            if (v.source != ASE_SOURCE_ALL) {
                out += std::string(", ") + name_of(source_names, v.source);
            }
            out += ")";
        }
        if (!v.api_name.empty()) {
            out += " api=" + std::string(v.api_name);
        }
        if (!v.location.empty()) {
            out += " location=" + std::string(v.location);
        }
        std::fputs(out.c_str(), stdout);
        if (v.action != ASE_ACTION_ALLOW && !v.body.empty()) {
            std::fputs(" body=\"", stdout);
            print_escaped(v.body);
            std::putchar('"');
        }
        std::putchar('\n');
    }

    void request(const std::vector<std::string> &tok) const {
        if (tok.size() < 3) {
            fail("a request needs METHOD URL CLIENT_IP");
        }
        std::string_view url = tok[1];
        std::size_t sep = url.find("://");
        if (sep == std::string_view::npos || sep == 0) {
            fail("URL must start with SCHEME://", url);
        }
        std::string_view rest = url.substr(sep + 3);
        std::size_t slash = rest.find('/');
        std::string_view host = rest.substr(0, slash);
        std::string_view path = slash == std::string_view::npos ? "/" : rest.substr(slash);

        ase::Request req;
        req.method(tok[0]).scheme(url.substr(0, sep)).host(host).uri(path).http_version("HTTP/1.1");
        req.client_ip(tok[2] == "-" ? std::string_view() : std::string_view(tok[2]));
        for (std::size_t i = 3; i < tok.size(); i++) {
            std::string_view h = tok[i];
            std::size_t colon = h.find(':');
            if (colon == std::string_view::npos || colon == 0) {
                fail("a header must be \"Name: value\"", h);
            }
            std::string_view value = h.substr(colon + 1);
            value.remove_prefix(std::min(value.find_first_not_of(" \t"), value.size()));
            req.header(h.substr(0, colon), value);
        }
        ase::Verdict v;
        try {
            v = engine_.check(req);
        } catch (const ase::Error &e) {
            fail(e.what());
        }
        std::printf("%s %s from %s -> ", tok[0].c_str(), tok[1].c_str(), tok[2].c_str());
        print_verdict(v);
    }

    void directive(const std::vector<std::string> &tok) const {
        std::string_view cmd = std::string_view(tok[0]).substr(1);
        std::size_t n = tok.size();
        if (cmd == "deny" || cmd == "allow") {
            int kind = n > 1 ? index_of(kind_names, tok[1]) : -1;
            bool named = kind == ASE_ID_COOKIE || kind == ASE_ID_API_KEY;
            if (kind < 0) {
                fail("unknown identifier kind", n > 1 ? tok[1] : "(none)");
            }
            if (n != (named ? 4U : 3U)) {
                fail(named ? "usage: !deny|!allow KIND NAME VALUE" : "usage: !deny|!allow KIND VALUE");
            }
            // Views of `tok`, which outlives the call (a `named ? tok[2] : ""`
            // here would view a temporary std::string).
            std::string_view name = named ? std::string_view(tok[2]) : std::string_view();
            ase::Identifier id{static_cast<ase_id_kind>(kind), name, tok[n - 1]};
            try {
                cmd == "deny" ? engine_.deny_add(id) : engine_.allow_add(id);
            } catch (const ase::Error &e) {
                fail(e.what());
            }
            bool quote = tok[n - 1].find_first_of(" \t") != std::string::npos;
            std::string value = quote ? "\"" + tok[n - 1] + "\"" : tok[n - 1];
            std::printf("%s %s%s%s %s: ok\n", tok[0].c_str() + 1, tok[1].c_str(), named ? " " : "",
                        named ? tok[2].c_str() : "", value.c_str());
            return;
        }
        if (cmd != "switch" && cmd != "blocking") {
            fail("unknown directive", tok[0]);
        }
        if (n != 3 || (tok[2] != "on" && tok[2] != "off")) {
            fail("usage: !switch SWITCH on|off or !blocking API on|off");
        }
        bool on = tok[2] == "on";
        try {
            if (cmd == "switch") {
                int which = index_of(switch_names, tok[1]);
                if (which < 0) {
                    fail("unknown switch", tok[1]);
                }
                engine_.set_switch(static_cast<ase_switch>(which), on);
            } else {
                engine_.set_api_blocking(tok[1], on);
            }
        } catch (const ase::Error &e) {
            fail(e.what(), tok[1]);
        }
        std::printf("%s %s %s: ok\n", tok[0].c_str() + 1, tok[1].c_str(), tok[2].c_str());
    }
};

void usage() {
    std::cerr << "usage: check_cpp CONFIG [-f FILE]... [LINE]...\n"
                 "  LINE: METHOD SCHEME://HOST/PATH CLIENT_IP [\"Name: value\"]...\n"
                 "        or a directive: !deny|!allow KIND [NAME] VALUE,\n"
                 "        !switch SWITCH on|off, !blocking API on|off\n";
}

void run_file(Checker &checker, const std::string &path) {
    std::ifstream file;
    std::istream *in = &std::cin;
    if (path != "-") {
        file.open(path);
        if (!file) {
            throw LineError{path + ": " + std::strerror(errno)};
        }
        in = &file;
    }
    std::string line;
    for (unsigned long n = 1; std::getline(*in, line); n++) {
        checker.run_line(line, path + ":" + std::to_string(n));
    }
    if (in->bad()) {
        throw LineError{path + ": " + std::strerror(errno)};
    }
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        usage();
        return 2;
    }
    try {
        ase::Engine engine(argv[1]);
        Checker checker(engine);
        for (int i = 2; i < argc; i++) {
            if (std::string_view(argv[i]) == "-f") {
                if (++i == argc) {
                    usage();
                    return 2;
                }
                run_file(checker, argv[i]);
            } else {
                checker.run_line(argv[i], "argument " + std::to_string(i));
            }
        }
    } catch (const ase::Error &e) {
        std::fprintf(stderr, "check: %s\n", e.what());
        return 1;
    } catch (const LineError &e) {
        std::fprintf(stderr, "check: %s\n", e.message.c_str());
        return 1;
    }
    return 0;
}
