/*
 * ase.h included twice must compile cleanly under
 * -std=c11 -Wall -Wextra -Wpedantic -Werror: its include guard covers
 * everything it declares. Run, it checks that the version macros match the
 * library's version (Cargo.toml's, through ase_version()).
 */
#include "ase.h"
#include "ase.h"

#include <stdio.h>
#include <string.h>

#define STR2(x) #x
#define STR(x) STR2(x)

int main(void) {
    const char *header = STR(ASE_VERSION_MAJOR) "." STR(ASE_VERSION_MINOR) "." STR(ASE_VERSION_PATCH);
    ase_str s = ase_str_from_cstr("abc");

    if (s.len != 3) {
        fprintf(stderr, "include_twice: ase_str_from_cstr gave length %zu\n", s.len);
        return 1;
    }
    if (strcmp(header, ase_version()) != 0) {
        fprintf(stderr, "include_twice: ase.h says %s, the library %s\n", header, ase_version());
        return 1;
    }
    printf("include_twice.c: ase %s\n", ase_version());
    return 0;
}
