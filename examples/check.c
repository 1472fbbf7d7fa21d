/*
 * check: loads an ase.conf and prints ase's verdict for HTTP requests.
 *
 *   check CONFIG [-f FILE]... [LINE]...
 *
 * Each LINE argument, and each line of each FILE ("-" is stdin), is one
 * request or one directive, handled in the order given.
 *
 * Line format (tokens are separated by blanks; a token in double quotes may
 * contain blanks, but not a double quote):
 *
 *   METHOD URL CLIENT_IP [HEADER]...     a request
 *   !deny KIND [NAME] VALUE              ase_deny_add, no expiry
 *   !allow KIND [NAME] VALUE             ase_allow_add, no expiry
 *   !switch SWITCH on|off                ase_switch_set
 *   !blocking API on|off                 ase_api_set_blocking
 *   # comment                            (and blank lines) ignored
 *
 *   URL       SCHEME://HOST/PATH?QUERY (the path defaults to "/")
 *   CLIENT_IP an IPv4 or IPv6 address, or "-" for none
 *   HEADER    "Name: value" (quote it when the value has blanks)
 *   KIND      ip | cookie NAME | token | api_key NAME | username
 *   SWITCH    firewall | abs | abs_attack | ase_detected_attack
 *
 * Output, one line per request:
 *
 *   METHOD URL from CLIENT_IP -> ACTION[ STATUS TEXT][ (DETAIL)][ api=NAME]
 *       [ location=LOCATION][ body="BODY"]
 *
 * ACTION is allow, block, respond or redirect; DETAIL is the reason, then the
 * identifier kind and the deny-list source that matched, if any, as in
 * "(deny_list, ip, manual)"; an allowed request of an API in monitor mode
 * reads "allow (would block: REASON, ...)". A directive prints "deny ip
 * 1.2.3.4: ok". Directives change this process's engine only (list changes
 * reach other processes through the state store, once it exists).
 *
 * Exit status: 0 when every line was handled (whatever the verdicts), 1 on
 * the first error (printed to stderr with ase_result_str), 2 on bad usage.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ase.h"
#include "example_util.h"

#define MAX_LINE 8192
#define MAX_TOKENS 64

static const char *const action_names[] = {"allow", "block", "respond", "redirect"};

/* Where a line came from, for error messages. */
typedef struct {
    const char *file; /* NULL for a command-line argument */
    unsigned long line;
} origin;

static void fail(const origin *at, const char *msg, const char *detail) {
    if (at->file != NULL) {
        fprintf(stderr, "check: %s:%lu: %s", at->file, at->line, msg);
    } else {
        fprintf(stderr, "check: argument %lu: %s", at->line, msg);
    }
    if (detail != NULL) {
        fprintf(stderr, ": %s", detail);
    }
    fputc('\n', stderr);
}


/* Prints `s` with quotes, backslashes and non-printable bytes escaped. */
static void print_escaped(ase_str s) {
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = s.data[i];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20 || c >= 0x7f) {
            printf("\\x%02x", c);
        } else {
            putchar(c);
        }
    }
}

static void print_verdict(const ase_verdict *v) {
    printf("%s", name_of(action_names, COUNT(action_names), v->action));
    if (v->status != 0) {
        printf(" %u", (unsigned)v->status);
        if (v->status_text.len > 0) {
            printf(" %.*s", (int)v->status_text.len, (const char *)v->status_text.data);
        }
    }
    if (v->reason != ASE_REASON_NONE) {
        printf(" (%s%s", v->would_block ? "would block: " : "",
               name_of(reason_names, COUNT(reason_names), v->reason));
        if (v->matched_kind != ASE_ID_NONE) {
            printf(", %s", name_of(kind_names, COUNT(kind_names), v->matched_kind));
        }
        if (v->source != ASE_SOURCE_ALL) {
            printf(", %s", name_of(source_names, COUNT(source_names), v->source));
        }
        putchar(')');
    }
    if (v->api_name.len > 0) {
        printf(" api=%.*s", (int)v->api_name.len, (const char *)v->api_name.data);
    }
    if (v->location.len > 0) {
        printf(" location=%.*s", (int)v->location.len, (const char *)v->location.data);
    }
    if (v->action != ASE_ACTION_ALLOW && v->body.len > 0) {
        printf(" body=\"");
        print_escaped(v->body);
        putchar('"');
    }
    putchar('\n');
}

/* METHOD URL CLIENT_IP [HEADER]... */
static int check_request(const ase_engine *engine, char **tok, int n, const origin *at) {
    ase_header headers[MAX_TOKENS];
    ase_request req;
    ase_verdict verdict;
    ase_result r;
    const char *url;
    const char *sep;
    const char *host;
    const char *path;

    if (n < 3) {
        fail(at, "a request needs METHOD URL CLIENT_IP", NULL);
        return -1;
    }
    url = tok[1];
    sep = strstr(url, "://");
    if (sep == NULL || sep == url) {
        fail(at, "URL must start with SCHEME://", url);
        return -1;
    }
    host = sep + 3;
    path = strchr(host, '/');
    if (path == NULL) {
        path = host + strlen(host);
    }
    memset(&req, 0, sizeof req);
    req.method = ase_str_from_cstr(tok[0]);
    req.scheme.data = (const uint8_t *)url;
    req.scheme.len = (size_t)(sep - url);
    req.host.data = (const uint8_t *)host;
    req.host.len = (size_t)(path - host);
    req.uri = ase_str_from_cstr(*path != '\0' ? path : "/");
    req.http_version = ase_str_from_cstr("HTTP/1.1");
    req.client_ip = ase_str_from_cstr(strcmp(tok[2], "-") == 0 ? "" : tok[2]);
    req.unknown_api = ASE_UNKNOWN_API_DEFAULT;
    for (int i = 3; i < n; i++) {
        char *colon = strchr(tok[i], ':');
        const char *value;
        if (colon == NULL || colon == tok[i]) {
            fail(at, "a header must be \"Name: value\"", tok[i]);
            return -1;
        }
        value = colon + 1;
        while (*value == ' ' || *value == '\t') {
            value++;
        }
        headers[i - 3].name.data = (const uint8_t *)tok[i];
        headers[i - 3].name.len = (size_t)(colon - tok[i]);
        headers[i - 3].value = ase_str_from_cstr(value);
    }
    req.headers = n > 3 ? headers : NULL;
    req.headers_len = (size_t)(n - 3);

    r = ase_check_request(engine, &req, &verdict);
    if (r != ASE_OK) {
        fail(at, ase_result_str(r), NULL);
        return -1;
    }
    printf("%s %s from %s -> ", tok[0], url, tok[2]);
    print_verdict(&verdict);
    return 0;
}

/* !deny|!allow KIND [NAME] VALUE, !switch SWITCH on|off, !blocking API on|off */
static int run_directive(const ase_engine *engine, char **tok, int n, const origin *at) {
    const char *cmd = tok[0] + 1;
    ase_result r;
    bool on;

    if (strcmp(cmd, "deny") == 0 || strcmp(cmd, "allow") == 0) {
        ase_identifier id;
        int kind = n > 1 ? index_of(kind_names, COUNT(kind_names), tok[1]) : -1;
        bool named = kind == ASE_ID_COOKIE || kind == ASE_ID_API_KEY;
        bool quote;
        if (kind < 0) {
            fail(at, "unknown identifier kind", n > 1 ? tok[1] : "(none)");
            return -1;
        }
        if (n != (named ? 4 : 3)) {
            fail(at, named ? "usage: !deny|!allow KIND NAME VALUE" : "usage: !deny|!allow KIND VALUE",
                 NULL);
            return -1;
        }
        quote = strpbrk(tok[n - 1], " \t") != NULL;
        id.kind = (ase_id_kind)kind;
        id.name = ase_str_from_cstr(named ? tok[2] : "");
        id.value = ase_str_from_cstr(tok[n - 1]);
        r = cmd[0] == 'd' ? ase_deny_add(engine, &id, 0) : ase_allow_add(engine, &id, 0);
        if (r != ASE_OK) {
            fail(at, ase_result_str(r), NULL);
            return -1;
        }
        printf("%s %s%s%s %s%s%s: ok\n", cmd, tok[1], named ? " " : "", named ? tok[2] : "",
               quote ? "\"" : "", tok[n - 1], quote ? "\"" : "");
        return 0;
    }
    if (strcmp(cmd, "switch") != 0 && strcmp(cmd, "blocking") != 0) {
        fail(at, "unknown directive", tok[0]);
        return -1;
    }
    if (n != 3 || (strcmp(tok[2], "on") != 0 && strcmp(tok[2], "off") != 0)) {
        fail(at, "usage: !switch SWITCH on|off or !blocking API on|off", NULL);
        return -1;
    }
    on = strcmp(tok[2], "on") == 0;
    if (cmd[0] == 's') {
        int which = index_of(switch_names, COUNT(switch_names), tok[1]);
        if (which < 0) {
            fail(at, "unknown switch", tok[1]);
            return -1;
        }
        r = ase_switch_set(engine, (ase_switch)which, on);
    } else {
        r = ase_api_set_blocking(engine, ase_str_from_cstr(tok[1]), on);
    }
    if (r != ASE_OK) {
        fail(at, ase_result_str(r), tok[1]);
        return -1;
    }
    printf("%s %s %s: ok\n", cmd, tok[1], tok[2]);
    return 0;
}

/* Handles one line (modified in place). */
static int run_line(const ase_engine *engine, char *line, const origin *at) {
    char *tok[MAX_TOKENS];
    const char *err = NULL;
    int n;

    line[strcspn(line, "\r\n")] = '\0';
    if (line[strspn(line, " \t")] == '#') {
        return 0;
    }
    n = tokenize(line, tok, MAX_TOKENS, &err);
    if (n < 0) {
        fail(at, err, NULL);
        return -1;
    }
    if (n == 0) {
        return 0;
    }
    if (tok[0][0] == '!') {
        return run_directive(engine, tok, n, at);
    }
    return check_request(engine, tok, n, at);
}

static int run_file(const ase_engine *engine, const char *path) {
    char line[MAX_LINE];
    origin at = {path, 0};
    int rc = -1;
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");

    if (f == NULL) {
        fprintf(stderr, "check: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        at.line++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            fail(&at, "line too long", NULL);
            goto cleanup;
        }
        if (run_line(engine, line, &at) != 0) {
            goto cleanup;
        }
    }
    if (ferror(f)) {
        fprintf(stderr, "check: %s: %s\n", path, strerror(errno));
        goto cleanup;
    }
    rc = 0;
cleanup:
    if (f != stdin) {
        fclose(f);
    }
    return rc;
}

static void usage(void) {
    fputs("usage: check CONFIG [-f FILE]... [LINE]...\n"
          "  LINE: METHOD SCHEME://HOST/PATH CLIENT_IP [\"Name: value\"]...\n"
          "        or a directive: !deny|!allow KIND [NAME] VALUE,\n"
          "        !switch SWITCH on|off, !blocking API on|off\n",
          stderr);
}

int main(int argc, char **argv) {
    char err[512];
    char line[MAX_LINE];
    ase_engine *engine = NULL;
    ase_result r;
    int status = 1;

    if (argc < 2 || argv[1][0] == '-') {
        usage();
        return 2;
    }
    r = ase_engine_new(ase_str_from_cstr(argv[1]), err, sizeof err, &engine);
    if (r != ASE_OK) {
        fprintf(stderr, "check: %s: %s\n", ase_result_str(r), err);
        goto cleanup;
    }
    for (int i = 2; i < argc; i++) {
        origin at = {NULL, (unsigned long)i};
        if (strcmp(argv[i], "-f") == 0) {
            if (++i == argc) {
                usage();
                status = 2;
                goto cleanup;
            }
            if (run_file(engine, argv[i]) != 0) {
                goto cleanup;
            }
            continue;
        }
        if (strlen(argv[i]) >= sizeof line) {
            fail(&at, "line too long", NULL);
            goto cleanup;
        }
        strcpy(line, argv[i]);
        if (run_line(engine, line, &at) != 0) {
            goto cleanup;
        }
    }
    status = 0;
cleanup:
    ase_engine_free(engine);
    return status;
}
