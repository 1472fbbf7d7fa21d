/*
 * What the two C examples share: the names of the API's enumerations (for
 * printing and parsing) and a tokenizer for their request and command files.
 * Header-only (static functions) so each example stays one compile.
 */
#ifndef ASE_EXAMPLE_UTIL_H
#define ASE_EXAMPLE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ase.h"

static const char *const reason_names[ASE_REASON_COUNT] = {
    "none",    "firewall_off", "unknown_api", "allow_list",   "decoy",
    "deny_list", "protocol",   "method",      "content_type", "fail_mode",
    "duplicate_identifier"};
static const char *const kind_names[] = {"ip", "cookie", "token", "api_key", "username"};
static const char *const source_names[] = {"manual",         "abs_detected",
                                           "decoy",          "invalid_protocol",
                                           "invalid_method", "invalid_content_type"};
static const char *const switch_names[] = {"firewall", "abs", "abs_attack",
                                           "ase_detected_attack"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static inline const char *name_of(const char *const *names, size_t n, uint32_t v) {
    return v < n ? names[v] : "?";
}

/* Index of `s` in `names`, or -1. */
static inline int index_of(const char *const *names, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], s) == 0) {
            return (int)i;
        }
    }
    return -1;
}


/*
 * Splits `line` in place into blank-separated tokens, honouring double
 * quotes. Returns the number of tokens, or -1 (with *err set) on a bad line.
 */
static inline int tokenize(char *line, char **tok, int max, const char **err) {
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p == '\0') {
            return n;
        }
        if (n == max) {
            *err = "too many tokens";
            return -1;
        }
        if (*p == '"') {
            char *end = strchr(p + 1, '"');
            if (end == NULL) {
                *err = "unterminated quote";
                return -1;
            }
            if (end[1] != '\0' && end[1] != ' ' && end[1] != '\t') {
                *err = "a closing quote must end the token";
                return -1;
            }
            tok[n++] = p + 1;
            *end = '\0';
            p = end + 1;
            if (*p != '\0') {
                p++;
            }
            continue;
        }
        tok[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t') {
            p++;
        }
        if (*p != '\0') {
            *p++ = '\0';
        }
    }
}

#endif /* ASE_EXAMPLE_UTIL_H */
