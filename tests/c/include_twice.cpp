// ase.h and ase.hpp, each included twice, must compile cleanly under
// -std=c++17 -Wall -Wextra -Wpedantic -Werror. Run, it checks the version
// macros against the library and that ase::Error carries code and message.
#include "ase.h"
#include "ase.h"
#include "ase.hpp"
#include "ase.hpp"

#include <cstdio>
#include <string>

#define STR2(x) #x
#define STR(x) STR2(x)

int main() {
    const std::string header =
        STR(ASE_VERSION_MAJOR) "." STR(ASE_VERSION_MINOR) "." STR(ASE_VERSION_PATCH);
    if (ase::version() != header) {
        std::fprintf(stderr, "include_twice: ase.h says %s, the library %s\n", header.c_str(),
                     ase_version());
        return 1;
    }
    try {
        ase::Engine engine("");
        std::fprintf(stderr, "include_twice: an empty config path was accepted\n");
        return 1;
    } catch (const ase::Error &e) {
        if (e.code() != ASE_ERR_CONFIG) {
            std::fprintf(stderr, "include_twice: unexpected error %u: %s\n", e.code(), e.what());
            return 1;
        }
        std::printf("include_twice.cpp: ase %s; %s\n", ase_version(), e.what());
    }
    return 0;
}
