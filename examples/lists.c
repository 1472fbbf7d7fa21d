/*
 * lists: manages ase's allow and deny lists, switches and counters.
 *
 *   lists CONFIG COMMAND [ARG]...
 *   lists CONFIG -f FILE          one command per line ("-" is stdin)
 *
 * Commands:
 *
 *   deny-add KIND [NAME] VALUE      allow-add KIND [NAME] VALUE
 *   deny-remove KIND [NAME] VALUE   allow-remove KIND [NAME] VALUE
 *   deny-list [SOURCE]              allow-list
 *   deny-clear [SOURCE]             allow-clear
 *   switch SWITCH [on|off]          blocking API on|off
 *   stats                           health (state store and ABS sync)
 *
 *   KIND   ip | cookie NAME | token | api_key NAME | username
 *   SOURCE all | manual | abs_detected | decoy | invalid_protocol |
 *          invalid_method | invalid_content_type (default all)
 *   SWITCH firewall | abs | abs_attack | ase_detected_attack
 *
 * In a FILE, tokens are separated by blanks, a token in double quotes may
 * contain blanks (a user name such as "John Smith"), and lines starting with
 * '#' are comments. Changes last as long as the engine's state does: within
 * one run of this program until the state store keeps them in state_dir.
 *
 * Output: "deny-add ip 1.2.3.4: ok" for a change; for a listing one line per
 * entry ("manual cookie JSESSIONID abc" for the deny list, "ip 1.2.3.4" for
 * the allow list; values with blanks in quotes; " expires_ms N" when the
 * entry expires) and then "N entries".
 *
 * Exit status: 0 on success, 1 on the first error (printed to stderr with
 * ase_result_str), 2 on bad usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ase.h"
#include "example_util.h"

#define MAX_LINE 8192
#define MAX_TOKENS 16

/* Reports a failed command: "lists: deny-add ip 1.2.3: <message>". */
static int fail(char **tok, int n, const char *msg) {
    fputs("lists:", stderr);
    for (int i = 0; i < n; i++) {
        fprintf(stderr, " %s", tok[i]);
    }
    fprintf(stderr, ": %s\n", msg);
    return -1;
}

/* Prints a value as the input format takes it: quoted when it has blanks. */
static void print_value(ase_str s) {
    bool quote = memchr(s.data, ' ', s.len) != NULL || memchr(s.data, '\t', s.len) != NULL;
    printf(quote ? " \"%.*s\"" : " %.*s", (int)s.len, (const char *)s.data);
}

/* State of one listing: ase_deny_list / ase_allow_list call `print_entry` per entry. */
typedef struct {
    bool with_source;
    unsigned long count;
} listing;

static int32_t print_entry(void *userdata, const ase_entry *e) {
    listing *l = userdata;
    if (l->with_source) {
        printf("%s ", name_of(source_names, COUNT(source_names), e->source));
    }
    printf("%s", name_of(kind_names, COUNT(kind_names), e->kind));
    if (e->name.len > 0) {
        print_value(e->name);
    }
    print_value(e->value);
    if (e->expires_ms != 0) {
        printf(" expires_ms %" PRIu64, e->expires_ms);
    }
    putchar('\n');
    l->count++;
    return 0; /* go on */
}

/* Parses KIND [NAME] VALUE from tok[1..n). */
static int parse_identifier(char **tok, int n, ase_identifier *id) {
    int kind = n > 1 ? index_of(kind_names, COUNT(kind_names), tok[1]) : -1;
    bool named = kind == ASE_ID_COOKIE || kind == ASE_ID_API_KEY;
    if (kind < 0) {
        return fail(tok, n, "KIND must be ip, cookie, token, api_key or username");
    }
    if (n != (named ? 4 : 3)) {
        return fail(tok, n, named ? "expected KIND NAME VALUE" : "expected KIND VALUE");
    }
    id->kind = (ase_id_kind)kind;
    id->name = ase_str_from_cstr(named ? tok[2] : "");
    id->value = ase_str_from_cstr(tok[n - 1]);
    return 0;
}

/* Parses an optional SOURCE in tok[1]. */
static int parse_source(char **tok, int n, ase_source *source) {
    int s;
    if (n == 1 || strcmp(tok[1], "all") == 0) {
        *source = ASE_SOURCE_ALL;
        return n <= 2 ? 0 : fail(tok, n, "expected at most one SOURCE");
    }
    s = index_of(source_names, COUNT(source_names), tok[1]);
    if (s < 0 || n > 2) {
        return fail(tok, n, "SOURCE must be all, manual, abs_detected, decoy, "
                            "invalid_protocol, invalid_method or invalid_content_type");
    }
    *source = (ase_source)s;
    return 0;
}

static int print_stats(const ase_engine *engine, char **tok, int n) {
    ase_stats st;
    ase_result r = ase_engine_stats(engine, &st);
    if (r != ASE_OK) {
        return fail(tok, n, ase_result_str(r));
    }
    printf("checked %" PRIu64 "\nallowed %" PRIu64 "\nblocked %" PRIu64
           "\nwould_block %" PRIu64 "\n",
           st.checked, st.allowed, st.blocked, st.would_block);
    for (size_t i = 0; i < ASE_REASON_COUNT; i++) {
        if (st.blocked_by_reason[i] != 0) {
            printf("blocked %s %" PRIu64 "\n", reason_names[i], st.blocked_by_reason[i]);
        }
        if (st.would_block_by_reason[i] != 0) {
            printf("would_block %s %" PRIu64 "\n", reason_names[i],
                   st.would_block_by_reason[i]);
        }
    }
    printf("detections %" PRIu64 "\ndeny_entries %" PRIu64 "\nallow_entries %" PRIu64 "\n",
           st.detections, st.deny_entries, st.allow_entries);
    return 0;
}

static int print_health(const ase_engine *engine, char **tok, int n) {
    ase_health h;
    ase_abs_state abs;
    ase_result r = ase_engine_health(engine, &h);
    if (r == ASE_OK) {
        r = ase_abs_status(engine, &abs);
    }
    if (r != ASE_OK) {
        return fail(tok, n, ase_result_str(r));
    }
    if (h.store_ok) {
        puts("store ok");
    } else {
        printf("store error: %s\n", h.store_error);
    }
    printf("fail_mode %s\n", h.fail_mode_active ? "active" : "inactive");
    if (!abs.configured) {
        puts("abs not configured");
        return 0;
    }
    printf("abs entries %" PRIu64 " last_success_ms %" PRIu64 " error \"%s\"\n",
           abs.entries, abs.last_success_ms, abs.last_error);
    return 0;
}

static int run_command(const ase_engine *engine, char **tok, int n) {
    const char *cmd = tok[0];
    ase_identifier id;
    ase_source source;
    ase_result r;

    if (strcmp(cmd, "deny-add") == 0 || strcmp(cmd, "deny-remove") == 0 ||
        strcmp(cmd, "allow-add") == 0 || strcmp(cmd, "allow-remove") == 0) {
        bool deny = cmd[0] == 'd';
        bool add = strstr(cmd, "-add") != NULL;
        if (parse_identifier(tok, n, &id) != 0) {
            return -1;
        }
        if (add) {
            r = deny ? ase_deny_add(engine, &id, 0) : ase_allow_add(engine, &id, 0);
        } else {
            r = deny ? ase_deny_remove(engine, &id) : ase_allow_remove(engine, &id);
        }
    } else if (strcmp(cmd, "deny-list") == 0 || strcmp(cmd, "allow-list") == 0) {
        listing l = {cmd[0] == 'd', 0};
        if (l.with_source) {
            if (parse_source(tok, n, &source) != 0) {
                return -1;
            }
            r = ase_deny_list(engine, source, print_entry, &l);
        } else if (n != 1) {
            return fail(tok, n, "allow-list takes no argument");
        } else {
            r = ase_allow_list(engine, print_entry, &l);
        }
        if (r != ASE_OK) {
            return fail(tok, n, ase_result_str(r));
        }
        printf("%lu %s\n", l.count, l.count == 1 ? "entry" : "entries");
        return 0;
    } else if (strcmp(cmd, "deny-clear") == 0) {
        if (parse_source(tok, n, &source) != 0) {
            return -1;
        }
        r = ase_deny_clear(engine, source);
    } else if (strcmp(cmd, "allow-clear") == 0) {
        if (n != 1) {
            return fail(tok, n, "allow-clear takes no argument");
        }
        r = ase_allow_clear(engine);
    } else if (strcmp(cmd, "switch") == 0) {
        int which = n > 1 ? index_of(switch_names, COUNT(switch_names), tok[1]) : -1;
        if (which < 0 || n > 3 || (n == 3 && strcmp(tok[2], "on") != 0 &&
                                   strcmp(tok[2], "off") != 0)) {
            return fail(tok, n, "expected switch firewall|abs|abs_attack|"
                                "ase_detected_attack [on|off]");
        }
        if (n == 2) {
            bool on = false;
            r = ase_switch_get(engine, (ase_switch)which, &on);
            if (r != ASE_OK) {
                return fail(tok, n, ase_result_str(r));
            }
            printf("%s %s\n", tok[1], on ? "on" : "off");
            return 0;
        }
        r = ase_switch_set(engine, (ase_switch)which, strcmp(tok[2], "on") == 0);
    } else if (strcmp(cmd, "blocking") == 0) {
        if (n != 3 || (strcmp(tok[2], "on") != 0 && strcmp(tok[2], "off") != 0)) {
            return fail(tok, n, "expected blocking API on|off");
        }
        r = ase_api_set_blocking(engine, ase_str_from_cstr(tok[1]), strcmp(tok[2], "on") == 0);
    } else if (strcmp(cmd, "stats") == 0) {
        return n == 1 ? print_stats(engine, tok, n) : fail(tok, n, "stats takes no argument");
    } else if (strcmp(cmd, "health") == 0) {
        return n == 1 ? print_health(engine, tok, n) : fail(tok, n, "health takes no argument");
    } else {
        return fail(tok, 1, "unknown command (see the top of examples/lists.c)");
    }
    if (r != ASE_OK) {
        return fail(tok, n, ase_result_str(r));
    }
    for (int i = 0; i < n; i++) {
        bool quote = strpbrk(tok[i], " \t") != NULL;
        printf(quote ? "%s\"%s\"" : "%s%s", i == 0 ? "" : " ", tok[i]);
    }
    puts(": ok");
    return 0;
}


static int run_file(const ase_engine *engine, const char *path) {
    char line[MAX_LINE];
    char *tok[MAX_TOKENS];
    unsigned long lineno = 0;
    int rc = -1;
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");

    if (f == NULL) {
        fprintf(stderr, "lists: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        const char *err = NULL;
        int n;
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            fprintf(stderr, "lists: %s:%lu: line too long\n", path, lineno);
            goto cleanup;
        }
        line[strcspn(line, "\r\n")] = '\0';
        if (line[strspn(line, " \t")] == '#') {
            continue;
        }
        n = tokenize(line, tok, MAX_TOKENS, &err);
        if (n < 0) {
            fprintf(stderr, "lists: %s:%lu: %s\n", path, lineno, err);
            goto cleanup;
        }
        if (n > 0 && run_command(engine, tok, n) != 0) {
            goto cleanup;
        }
    }
    if (ferror(f)) {
        fprintf(stderr, "lists: %s: %s\n", path, strerror(errno));
        goto cleanup;
    }
    rc = 0;
cleanup:
    if (f != stdin) {
        fclose(f);
    }
    return rc;
}

int main(int argc, char **argv) {
    char err[512];
    ase_engine *engine = NULL;
    ase_result r;
    int status = 1;

    if (argc < 3 || argv[1][0] == '-' || (strcmp(argv[2], "-f") == 0 && argc != 4)) {
        fputs("usage: lists CONFIG COMMAND [ARG]...  or  lists CONFIG -f FILE\n"
              "  COMMAND: deny-add|deny-remove|allow-add|allow-remove KIND [NAME] VALUE,\n"
              "           deny-list|deny-clear [SOURCE], allow-list, allow-clear,\n"
              "           switch SWITCH [on|off], blocking API on|off, stats\n",
              stderr);
        return 2;
    }
    r = ase_engine_new(ase_str_from_cstr(argv[1]), err, sizeof err, &engine);
    if (r != ASE_OK) {
        fprintf(stderr, "lists: %s: %s\n", ase_result_str(r), err);
        goto cleanup;
    }
    if (strcmp(argv[2], "-f") == 0) {
        if (run_file(engine, argv[3]) != 0) {
            goto cleanup;
        }
    } else if (run_command(engine, argv + 2, argc - 2) != 0) {
        goto cleanup;
    }
    status = 0;
cleanup:
    ase_engine_free(engine);
    return status;
}
