/*
 * server: ase embedded in a small multi-threaded HTTP server.
 *
 *   server CONFIG [PORT [THREADS]]
 *
 * Listens on 127.0.0.1:PORT (0, the default, picks a free port) and prints
 * "listening on 127.0.0.1:PORT" once it accepts. THREADS threads (default 4)
 * accept connections on the one listening socket; each reads a request head,
 * asks the one engine for a verdict (ase_check_request may be called from any
 * number of threads at once) and answers: the API's own answer when allowed
 * ("hello from the API"), else the verdict's status, reason phrase and body,
 * or its redirect. One request per connection; the request body is not read.
 *
 * The engine is the threaded kind (ase_engine_new): it follows the state
 * store by itself, so `ase-cli` or another process's list changes are in
 * force here without anything to call. SIGINT or SIGTERM stops the server:
 * the threads finish their request and are joined, the engine is freed, and
 * "stopped after N requests (A allowed, S stopped)" is printed, with
 * ", F failed" added when ase_check_request returned an error for F of them
 * (each answered 500 and said on stderr).
 *
 * Stopping wakes the threads blocked in accept() by shutdown() of the
 * listening socket, which Linux does; other systems may leave them blocked
 * (there, a server would wake them with a connection of its own or poll()
 * on a pipe).
 *
 * Exit status: 0 after a signal, 1 when the engine or the socket cannot be
 * made, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ase.h"

#define MAX_THREADS 64
#define MAX_HEAD 8192
#define MAX_HEADERS 64

typedef struct {
    const ase_engine *engine;
    int listener;
    atomic_ulong allowed;
    atomic_ulong stopped;
    atomic_ulong failed;
} server;

static ase_str str_of(const char *p, size_t len) {
    ase_str s = {len, (const uint8_t *)p};
    return s;
}

/* Writes all of `buf`; a client that went away is not an error here. */
static void send_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void answer(int fd, uint32_t status, ase_str text, ase_str body, ase_str location) {
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %u %.*s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n",
                     status, (int)text.len, (const char *)text.data, body.len);
    if (location.len > 0 && n > 0 && (size_t)n < sizeof head) {
        n += snprintf(head + n, sizeof head - (size_t)n, "Location: %.*s\r\n", (int)location.len,
                      (const char *)location.data);
    }
    if (n <= 0 || (size_t)n >= sizeof head - 24) {
        /* A reason phrase or redirect too long for `head`: no half answer. */
        static const char too_long[] = "HTTP/1.1 500 Internal Server Error\r\n"
                                       "Content-Length: 0\r\nConnection: close\r\n\r\n";
        send_all(fd, too_long, sizeof too_long - 1);
        return;
    }
    n += snprintf(head + n, sizeof head - (size_t)n, "Connection: close\r\n\r\n");
    send_all(fd, head, (size_t)n);
    send_all(fd, (const char *)body.data, body.len);
}

/*
 * Parses the head in `buf` (NUL-terminated, ending in an empty line) into
 * `req`, pointing into `buf`: "METHOD URI VERSION" and "Name: value" lines.
 * Returns 0, or -1 for a head this small server does not read.
 */
static int parse_head(char *buf, ase_request *req, ase_header *headers) {
    char *line_end = strstr(buf, "\r\n");
    char *sp1 = strchr(buf, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (line_end == NULL || sp1 == NULL || sp2 == NULL || sp2 > line_end) {
        return -1;
    }
    req->method = str_of(buf, (size_t)(sp1 - buf));
    req->uri = str_of(sp1 + 1, (size_t)(sp2 - sp1 - 1));
    req->http_version = str_of(sp2 + 1, (size_t)(line_end - sp2 - 1));
    req->headers = headers;
    req->headers_len = 0;
    for (char *p = line_end + 2; strncmp(p, "\r\n", 2) != 0;) {
        char *end = strstr(p, "\r\n");
        char *colon = memchr(p, ':', end ? (size_t)(end - p) : 0);
        if (end == NULL || colon == NULL || req->headers_len == MAX_HEADERS) {
            return -1;
        }
        char *v = colon + 1;
        while (v < end && (*v == ' ' || *v == '\t')) {
            v++;
        }
        headers[req->headers_len].name = str_of(p, (size_t)(colon - p));
        headers[req->headers_len].value = str_of(v, (size_t)(end - v));
        if ((size_t)(colon - p) == 4 && strncasecmp(p, "host", 4) == 0) {
            req->host = headers[req->headers_len].value;
        }
        req->headers_len++;
        p = end + 2;
    }
    return 0;
}

static void serve(server *s, int fd, const struct sockaddr_in *peer) {
    char buf[MAX_HEAD + 1];
    size_t len = 0;
    buf[0] = '\0';
    while (strstr(buf, "\r\n\r\n") == NULL) {
        if (len == MAX_HEAD) {
            return;
        }
        ssize_t n = recv(fd, buf + len, MAX_HEAD - len, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            return;
        }
        len += (size_t)n;
        buf[len] = '\0';
    }

    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &peer->sin_addr, ip, sizeof ip);
    ase_header headers[MAX_HEADERS];
    ase_request req;
    memset(&req, 0, sizeof req);
    if (parse_head(buf, &req, headers) != 0) {
        answer(fd, 400, str_of("Bad Request", 11), str_of("bad request\n", 12), str_of(NULL, 0));
        return;
    }
    req.client_ip = str_of(ip, strlen(ip));
    req.client_port = ntohs(peer->sin_port);
    req.scheme = str_of("http", 4);
    req.unknown_api = ASE_UNKNOWN_API_DEFAULT;

    ase_verdict v;
    ase_result rc = ase_check_request(s->engine, &req, &v);
    if (rc != ASE_OK) {
        /* An error, not a verdict: the engine decided nothing. */
        const char *msg = ase_result_str(rc);
        fprintf(stderr, "server: ase_check_request: %s\n", msg);
        answer(fd, 500, str_of("Internal Server Error", 21), str_of(msg, strlen(msg)),
               str_of(NULL, 0));
        atomic_fetch_add(&s->failed, 1);
        return;
    }
    if (v.action == ASE_ACTION_ALLOW) {
        atomic_fetch_add(&s->allowed, 1);
        answer(fd, 200, str_of("OK", 2), str_of("hello from the API\n", 19), str_of(NULL, 0));
        return;
    }
    atomic_fetch_add(&s->stopped, 1);
    answer(fd, v.status, v.status_text, v.body, v.location);
}

static void *worker(void *arg) {
    server *s = arg;
    for (;;) {
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        int fd = accept(s->listener, (struct sockaddr *)&peer, &plen);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            /* shutdown() of the listener in main (Linux): time to stop. */
            return NULL;
        }
        serve(s, fd, &peer);
        close(fd);
    }
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: server CONFIG [PORT [THREADS]]\n");
        return 2;
    }
    long port = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
    long nthreads = argc > 3 ? strtol(argv[3], NULL, 10) : 4;
    if (port < 0 || port > 65535 || nthreads < 1 || nthreads > MAX_THREADS) {
        fprintf(stderr, "usage: server CONFIG [PORT [THREADS]] (THREADS 1 to %d)\n",
                MAX_THREADS);
        return 2;
    }

    /* The signals go to sigwait() below, not to a thread in accept(). */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    char err[512] = {0};
    ase_engine *engine = NULL;
    ase_result rc = ase_engine_new(str_of(argv[1], strlen(argv[1])), err, sizeof err, &engine);
    if (rc != ASE_OK) {
        fprintf(stderr, "server: %s: %s\n", ase_result_str(rc), err);
        return 1;
    }

    server s = {.engine = engine, .listener = socket(AF_INET, SOCK_STREAM, 0)};
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    int one = 1;
    if (s.listener < 0 ||
        setsockopt(s.listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(s.listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(s.listener, 128) != 0 ||
        getsockname(s.listener, (struct sockaddr *)&addr, &alen) != 0) {
        fprintf(stderr, "server: cannot listen on 127.0.0.1:%ld: %s\n", port, strerror(errno));
        if (s.listener >= 0) {
            close(s.listener);
        }
        ase_engine_free(engine);
        return 1;
    }

    pthread_t threads[MAX_THREADS];
    long started = 0;
    for (; started < nthreads; started++) {
        if (pthread_create(&threads[started], NULL, worker, &s) != 0) {
            fprintf(stderr, "server: cannot start thread %ld\n", started + 1);
            break;
        }
    }
    if (started > 0) {
        printf("listening on 127.0.0.1:%u\n", ntohs(addr.sin_port));
        fflush(stdout);
        int sig;
        sigwait(&stop, &sig);
    }

    /* Wakes every thread blocked in accept() on Linux; each returns. */
    shutdown(s.listener, SHUT_RDWR);
    for (long i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
    }
    close(s.listener);
    ase_engine_free(engine);
    unsigned long a = atomic_load(&s.allowed), b = atomic_load(&s.stopped);
    unsigned long f = atomic_load(&s.failed);
    if (f > 0) {
        printf("stopped after %lu requests (%lu allowed, %lu stopped, %lu failed)\n", a + b + f,
               a, b, f);
    } else {
        printf("stopped after %lu requests (%lu allowed, %lu stopped)\n", a + b, a, b);
    }
    return started == nthreads ? 0 : 1;
}
