
/*
 * ngx_http_ase_module: API client blocking by the in-process ase engine.
 *
 * The engine (libase, include/ase.h) is created per worker in init_process
 * and freed in exit_process; the master only creates one at config time to
 * validate ase_config, and frees it at once.  The access handler hands the
 * request to ase_check_request and turns the verdict into the response.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ase.h>


#define NGX_HTTP_ASE_ERR_LEN           1024
#define NGX_HTTP_ASE_STACK_HEADERS     64
#define NGX_HTTP_ASE_STATS_INTERVAL    1000
#define NGX_HTTP_ASE_SLOTS             NGX_MAX_PROCESSES


/* One worker's counters, published to shared memory for ase_status. */

typedef struct {
    ngx_pid_t                  pid;
    ase_stats                  stats;
    ase_abs_state              abs;
    ase_health                 health;
} ngx_http_ase_slot_t;


typedef struct {
    ngx_str_t                  config;
    ase_engine                *engine;
    ngx_shm_zone_t            *shm_zone;
    ngx_http_ase_slot_t       *slots;
    ngx_event_t                stats_event;
    ngx_flag_t                 abs_configured;
} ngx_http_ase_main_conf_t;


typedef struct {
    ngx_flag_t                 enable;
    ngx_uint_t                 unknown_api;
} ngx_http_ase_loc_conf_t;


/*
 * The verdict of a request, kept in a pool cleanup as the realip module
 * does, so that it survives internal redirects: a request is checked once,
 * and $ase_verdict still reads after error_page or try_files.
 */

typedef struct {
    ase_result                 rc;
    ase_verdict                verdict;    /* valid when rc is ASE_OK */
} ngx_http_ase_ctx_t;


static ngx_int_t ngx_http_ase_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ase_request(ngx_http_request_t *r,
    ase_request *req, ase_header *stack);
static ngx_int_t ngx_http_ase_respond(ngx_http_request_t *r,
    ase_verdict *v);
static ngx_int_t ngx_http_ase_redirect(ngx_http_request_t *r,
    ase_verdict *v);
static ngx_int_t ngx_http_ase_log_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ase_status_handler(ngx_http_request_t *r);
static ngx_http_ase_ctx_t *ngx_http_ase_get_ctx(ngx_http_request_t *r);
static void ngx_http_ase_cleanup(void *data);
static ngx_int_t ngx_http_ase_verdict_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static u_char *ngx_http_ase_abs_metrics(u_char *p,
    ngx_http_ase_main_conf_t *amcf);
static void ngx_http_ase_publish(ngx_http_ase_main_conf_t *amcf);
static void ngx_http_ase_stats_timer(ngx_event_t *ev);
static ngx_int_t ngx_http_ase_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);

static ngx_int_t ngx_http_ase_add_variables(ngx_conf_t *cf);
static void *ngx_http_ase_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ase_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ase_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_ase_config(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ase_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_ase_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ase_init_process(ngx_cycle_t *cycle);
static void ngx_http_ase_exit_process(ngx_cycle_t *cycle);


static ngx_conf_enum_t  ngx_http_ase_unknown_api[] = {
    { ngx_string("pass"), ASE_UNKNOWN_API_PASS },
    { ngx_string("reject"), ASE_UNKNOWN_API_REJECT },
    { ngx_null_string, 0 }
};


/* Indexed by ASE_REASON_*; names as in $ase_verdict and the metrics. */

static ngx_str_t  ngx_http_ase_reasons[ASE_REASON_COUNT] = {
    ngx_string("none"),
    ngx_string("firewall_off"),
    ngx_string("unknown_api"),
    ngx_string("allow_list"),
    ngx_string("decoy"),
    ngx_string("deny_list"),
    ngx_string("protocol"),
    ngx_string("method"),
    ngx_string("content_type"),
    ngx_string("fail_mode")
};


static ngx_str_t  ngx_http_ase_actions[] = {
    ngx_string("allow"),
    ngx_string("block"),
    ngx_string("respond"),
    ngx_string("redirect")
};


static ngx_command_t  ngx_http_ase_commands[] = {

    { ngx_string("ase_config"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_ase_config,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ase"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ase_loc_conf_t, enable),
      NULL },

    { ngx_string("ase_unknown_api"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ase_loc_conf_t, unknown_api),
      &ngx_http_ase_unknown_api },

    { ngx_string("ase_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_ase_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ase_module_ctx = {
    ngx_http_ase_add_variables,            /* preconfiguration */
    ngx_http_ase_init,                     /* postconfiguration */

    ngx_http_ase_create_main_conf,         /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ase_create_loc_conf,          /* create location configuration */
    ngx_http_ase_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_ase_module = {
    NGX_MODULE_V1,
    &ngx_http_ase_module_ctx,              /* module context */
    ngx_http_ase_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_ase_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_ase_exit_process,             /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_ase_vars[] = {

    { ngx_string("ase_verdict"), NULL,
      ngx_http_ase_verdict_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_ase_https = ngx_string("https");
static ngx_str_t  ngx_http_ase_http = ngx_string("http");
static ngx_str_t  ngx_http_ase_wss = ngx_string("wss");
static ngx_str_t  ngx_http_ase_ws = ngx_string("ws");


static ngx_int_t
ngx_http_ase_handler(ngx_http_request_t *r)
{
    ngx_connection_t          *c;
    ase_request                req;
    ase_verdict               *v;
    ngx_pool_cleanup_t        *cln;
    ngx_http_ase_ctx_t        *ctx;
    ngx_http_ase_loc_conf_t   *alcf;
    ngx_http_ase_main_conf_t  *amcf;
    ase_header                 stack[NGX_HTTP_ASE_STACK_HEADERS];

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_ase_module);

    if (!alcf->enable) {
        return NGX_DECLINED;
    }

    /* checked before an internal redirect: the first verdict stands */

    if (ngx_http_ase_get_ctx(r) != NULL) {
        return NGX_DECLINED;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_ase_module);

    if (amcf->engine == NULL) {
        return NGX_DECLINED;
    }

    c = r->connection;

    if (ngx_http_ase_request(r, &req, stack) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    req.unknown_api = alcf->unknown_api;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_ase_ctx_t));
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_ase_cleanup;
    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_http_ase_ctx_t));
    ngx_http_set_ctx(r, ctx, ngx_http_ase_module);

    /* kept for $ase_verdict and for ase_abs_report() in the log phase */

    v = &ctx->verdict;

    ctx->rc = ase_check_request(amcf->engine, &req, v);

    if (ctx->rc != ASE_OK) {

        /*
         * fail open: the engine could not decide, the request goes on;
         * the cycle's log, not the request's, keeps the request line (and
         * any API key in its query string) out of the message
         */

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "ase: check failed: %s, client %V",
                      ase_result_str(ctx->rc), &c->addr_text);
        return NGX_DECLINED;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "ase: action:%uD reason:%uD status:%uD would_block:%d",
                   v->action, v->reason, v->status, (int) v->would_block);

    switch (v->action) {

    case ASE_ACTION_ALLOW:
        return NGX_DECLINED;

    case ASE_ACTION_REDIRECT:
        return ngx_http_ase_redirect(r, v);

    default: /* ASE_ACTION_BLOCK, ASE_ACTION_RESPOND */
        return ngx_http_ase_respond(r, v);
    }
}


/*
 * The request as ase sees it: the client address after realip (and its
 * port: 0 when realip took the address from a header), the scheme,
 * the URI as the client sent it and every request header, all pointing into
 * the request (nothing is copied).  Headers go to "stack" when they fit,
 * else to the request pool.
 */

static ngx_int_t
ngx_http_ase_request(ngx_http_request_t *r, ase_request *req,
    ase_header *stack)
{
    ngx_uint_t         i, n;
    ngx_str_t         *scheme;
    ngx_list_part_t   *part;
    ngx_table_elt_t   *h;
    ngx_connection_t  *c;
    ase_header        *headers;

    c = r->connection;

    ngx_memzero(req, sizeof(ase_request));

    /* the address after realip; none for unix sockets */

    switch (c->sockaddr->sa_family) {

    case AF_INET:
#if (NGX_HAVE_INET6)
    case AF_INET6:
#endif
        req->client_ip.len = c->addr_text.len;
        req->client_ip.data = c->addr_text.data;
        req->client_port = (uint16_t) ngx_inet_get_port(c->sockaddr);
        break;

    default:
        break;
    }

#if (NGX_HTTP_SSL)
    scheme = c->ssl ? &ngx_http_ase_https : &ngx_http_ase_http;
#else
    scheme = &ngx_http_ase_http;
#endif

    if (r->headers_in.upgrade
        && r->headers_in.upgrade->value.len == sizeof("websocket") - 1
        && ngx_strncasecmp(r->headers_in.upgrade->value.data,
                           (u_char *) "websocket", sizeof("websocket") - 1)
           == 0)
    {
        scheme = (scheme == &ngx_http_ase_https) ? &ngx_http_ase_wss
                                                 : &ngx_http_ase_ws;
    }

    req->scheme.len = scheme->len;
    req->scheme.data = scheme->data;
    req->method.len = r->method_name.len;
    req->method.data = r->method_name.data;
    req->host.len = r->headers_in.server.len;
    req->host.data = r->headers_in.server.data;

    /*
     * The URI as the client sent it, query string included: decoys,
     * API prefixes and API keys in the query are the client's, not
     * those of a rewrite; the engine normalises %XX and dot segments.
     */

    req->uri.len = r->unparsed_uri.len;
    req->uri.data = r->unparsed_uri.data;
    req->http_version.len = r->http_protocol.len;
    req->http_version.data = r->http_protocol.data;

    n = 0;
    part = &r->headers_in.headers.part;

    while (part) {
        n += part->nelts;
        part = part->next;
    }

    if (n <= NGX_HTTP_ASE_STACK_HEADERS) {
        headers = stack;

    } else {
        headers = ngx_palloc(r->pool, n * sizeof(ase_header));
        if (headers == NULL) {
            return NGX_ERROR;
        }
    }

    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (h[i].hash == 0) {
                continue;
            }

            headers[n].name.len = h[i].key.len;
            headers[n].name.data = h[i].key.data;
            headers[n].value.len = h[i].value.len;
            headers[n].value.data = h[i].value.data;
            n++;
        }
    }

    req->headers = headers;
    req->headers_len = n;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ase_respond(ngx_http_request_t *r, ase_verdict *v)
{
    u_char                    *p;
    ngx_int_t                  rc;
    ngx_str_t                  type;
    ngx_uint_t                 status;
    ngx_http_complex_value_t   cv;

    status = v->status;

    if (status < 100 || status > 599) {
        status = NGX_HTTP_FORBIDDEN;
    }

    /* the engine's strings live as long as the engine; copy for the pool */

    ngx_memzero(&cv, sizeof(ngx_http_complex_value_t));

    if (v->body.len) {
        cv.value.data = ngx_pnalloc(r->pool, v->body.len);
        if (cv.value.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(cv.value.data, v->body.data, v->body.len);
        cv.value.len = v->body.len;
    }

    if (v->status_text.len) {
        p = ngx_pnalloc(r->pool, sizeof("599 ") - 1 + v->status_text.len);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        r->headers_out.status_line.data = p;
        p = ngx_sprintf(p, "%03ui ", status);
        p = ngx_cpymem(p, v->status_text.data, v->status_text.len);
        r->headers_out.status_line.len = p - r->headers_out.status_line.data;
    }

    ngx_str_set(&type, "text/plain");

    rc = ngx_http_send_response(r, status, &type, &cv);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_ase_redirect(ngx_http_request_t *r, ase_verdict *v)
{
    u_char                    *p;
    ngx_uint_t                 status;
    ngx_http_complex_value_t   cv;

    status = v->status;

    if (status != NGX_HTTP_MOVED_PERMANENTLY
        && status != NGX_HTTP_MOVED_TEMPORARILY
        && status != NGX_HTTP_SEE_OTHER
        && status != NGX_HTTP_TEMPORARY_REDIRECT
        && status != NGX_HTTP_PERMANENT_REDIRECT)
    {
        status = NGX_HTTP_MOVED_PERMANENTLY;
    }

    ngx_memzero(&cv, sizeof(ngx_http_complex_value_t));

    if (v->location.len) {
        cv.value.len = v->location.len;
        cv.value.data = ngx_pnalloc(r->pool, v->location.len);
        if (cv.value.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(cv.value.data, v->location.data, v->location.len);

    } else {
        cv.value.len = sizeof("https://") - 1 + r->headers_in.server.len
                       + r->unparsed_uri.len;
        cv.value.data = ngx_pnalloc(r->pool, cv.value.len);
        if (cv.value.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_cpymem(cv.value.data, "https://", sizeof("https://") - 1);
        p = ngx_cpymem(p, r->headers_in.server.data,
                       r->headers_in.server.len);
        ngx_memcpy(p, r->unparsed_uri.data, r->unparsed_uri.len);
    }

    /* sets Location and returns the status; nginx writes the page */

    return ngx_http_send_response(r, status, NULL, &cv);
}


/*
 * The log phase reports each checked request, with the status it was
 * answered with, to ABS as traffic (while enable_abs is on).  The record is
 * queued without waiting; the engine's shipper thread sends it.
 */

static ngx_int_t
ngx_http_ase_log_handler(ngx_http_request_t *r)
{
    bool                       on;
    ngx_uint_t                 status;
    ase_result                 rc;
    ase_request                req;
    ngx_http_ase_ctx_t        *ctx;
    ngx_http_ase_main_conf_t  *amcf;
    ase_header                 stack[NGX_HTTP_ASE_STACK_HEADERS];

    ctx = ngx_http_ase_get_ctx(r);

    if (ctx == NULL || ctx->rc != ASE_OK) {
        return NGX_OK;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_ase_module);

    if (amcf->engine == NULL || !amcf->abs_configured) {
        return NGX_OK;
    }

    /* skip building the request when enable_abs is off */

    if (ase_switch_get(amcf->engine, ASE_SWITCH_ABS, &on) != ASE_OK || !on) {
        return NGX_OK;
    }

    /* as the log module: a status set by an error takes precedence */

    status = r->err_status ? r->err_status : r->headers_out.status;

    if (status > 999) {
        status = 0;
    }

    if (ngx_http_ase_request(r, &req, stack) != NGX_OK) {
        return NGX_OK;
    }

    rc = ase_abs_report(amcf->engine, &req, &ctx->verdict,
                        (uint32_t) status);

    if (rc != ASE_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "ase: ABS traffic report failed: %s",
                      ase_result_str(rc));
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ase: log action:%uD reason:%uD status:%ui",
                   ctx->verdict.action, ctx->verdict.reason, status);

    return NGX_OK;
}


static ngx_http_ase_ctx_t *
ngx_http_ase_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t  *cln;
    ngx_http_ase_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ase_module);

    if (ctx == NULL && (r->internal || r->filter_finalize)) {

        /* the module ctx is cleared by an internal redirect */

        for (cln = r->pool->cleanup; cln; cln = cln->next) {
            if (cln->handler == ngx_http_ase_cleanup) {
                ctx = cln->data;
                break;
            }
        }
    }

    return ctx;
}


static void
ngx_http_ase_cleanup(void *data)
{
    /* only a marker by which ngx_http_ase_get_ctx() finds the ctx */
}


static ngx_int_t
ngx_http_ase_verdict_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char              *p;
    ngx_str_t           *action;
    ngx_uint_t           reason;
    ngx_http_ase_ctx_t  *ctx;

    ctx = ngx_http_ase_get_ctx(r);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool,
                    sizeof("would_block:content_type") + NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    reason = ctx->verdict.reason < ASE_REASON_COUNT ? ctx->verdict.reason
                                                    : ASE_REASON_NONE;

    if (ctx->rc != ASE_OK) {
        p = ngx_sprintf(p, "error:%uD", ctx->rc);

    } else if (ctx->verdict.would_block) {
        p = ngx_sprintf(p, "would_block:%V", &ngx_http_ase_reasons[reason]);

    } else {
        action = &ngx_http_ase_actions[
                     ctx->verdict.action <= ASE_ACTION_REDIRECT
                     ? ctx->verdict.action : ASE_ACTION_BLOCK];

        if (reason == ASE_REASON_NONE) {
            p = ngx_cpymem(p, action->data, action->len);

        } else {
            p = ngx_sprintf(p, "%V:%V", action, &ngx_http_ase_reasons[reason]);
        }
    }

    v->len = p - v->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ase_status_handler(ngx_http_request_t *r)
{
    size_t                     size;
    ngx_int_t                  rc;
    ngx_buf_t                 *b;
    ngx_uint_t                 i, k;
    ngx_chain_t                out;
    ase_stats                  own, sum;
    ngx_http_ase_slot_t       *slot;
    ngx_http_ase_main_conf_t  *amcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_ase_module);

    if (amcf->engine == NULL
        || ase_engine_stats(amcf->engine, &own) != ASE_OK)
    {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /* every worker's counters: this one's now, the others' <= 1 s old */

    ngx_http_ase_publish(amcf);

    ngx_memzero(&sum, sizeof(ase_stats));

    for (i = 0; i < NGX_HTTP_ASE_SLOTS; i++) {
        slot = &amcf->slots[i];

        if (slot->pid == 0) {
            continue;
        }

        sum.checked += slot->stats.checked;
        sum.allowed += slot->stats.allowed;
        sum.blocked += slot->stats.blocked;
        sum.would_block += slot->stats.would_block;
        sum.detections += slot->stats.detections;

        for (k = 0; k < ASE_REASON_COUNT; k++) {
            sum.blocked_by_reason[k] += slot->stats.blocked_by_reason[k];
            sum.would_block_by_reason[k] +=
                                      slot->stats.would_block_by_reason[k];
        }
    }

    size = 8192 + 2 * ASE_REASON_COUNT * 128;

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_sprintf(b->last,
        "# HELP ase_info Library version.\n"
        "# TYPE ase_info gauge\n"
        "ase_info{version=\"%s\"} 1\n"
        "# HELP ase_requests_checked_total Requests checked.\n"
        "# TYPE ase_requests_checked_total counter\n"
        "ase_requests_checked_total %uL\n"
        "# HELP ase_requests_allowed_total Requests allowed"
        " (monitor-mode would-block included).\n"
        "# TYPE ase_requests_allowed_total counter\n"
        "ase_requests_allowed_total %uL\n"
        "# HELP ase_requests_blocked_total Requests stopped"
        " (blocked, answered, redirected), by reason.\n"
        "# TYPE ase_requests_blocked_total counter\n",
        ase_version(), sum.checked, sum.allowed);

    for (k = 1; k < ASE_REASON_COUNT; k++) {
        b->last = ngx_sprintf(b->last,
                              "ase_requests_blocked_total{reason=\"%V\"} %uL\n",
                              &ngx_http_ase_reasons[k],
                              sum.blocked_by_reason[k]);
    }

    b->last = ngx_sprintf(b->last,
        "# HELP ase_requests_would_block_total Monitor mode: requests that"
        " would have been stopped, by reason.\n"
        "# TYPE ase_requests_would_block_total counter\n");

    for (k = 1; k < ASE_REASON_COUNT; k++) {
        b->last = ngx_sprintf(b->last,
                          "ase_requests_would_block_total{reason=\"%V\"} %uL\n",
                          &ngx_http_ase_reasons[k],
                          sum.would_block_by_reason[k]);
    }

    b->last = ngx_sprintf(b->last,
        "# HELP ase_detections_total Real-time detections recorded.\n"
        "# TYPE ase_detections_total counter\n"
        "ase_detections_total %uL\n"
        "# HELP ase_deny_list_entries Deny-list entries.\n"
        "# TYPE ase_deny_list_entries gauge\n"
        "ase_deny_list_entries %uL\n"
        "# HELP ase_allow_list_entries Allow-list entries.\n"
        "# TYPE ase_allow_list_entries gauge\n"
        "ase_allow_list_entries %uL\n",
        sum.detections, own.deny_entries, own.allow_entries);

    b->last = ngx_http_ase_abs_metrics(b->last, amcf);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * ABS and store metrics.  Sync state is the host's (every worker shows the
 * latest attempt, whichever process made it): the slot with the latest
 * attempt is used.  Traffic and store counters are summed over workers.
 */

static u_char *
ngx_http_ase_abs_metrics(u_char *p, ngx_http_ase_main_conf_t *amcf)
{
    ngx_uint_t            i, leaders, store_up, fail_mode, configured;
    uint64_t              sent, dropped, queued, det_dropped, panics;
    ase_abs_state        *latest;
    ngx_http_ase_slot_t  *slot;

    latest = NULL;
    leaders = 0;
    store_up = 1;
    fail_mode = 0;
    configured = 0;
    sent = 0;
    dropped = 0;
    queued = 0;
    det_dropped = 0;
    panics = 0;

    for (i = 0; i < NGX_HTTP_ASE_SLOTS; i++) {
        slot = &amcf->slots[i];

        if (slot->pid == 0) {
            continue;
        }

        if (slot->abs.configured) {
            configured = 1;

            if (latest == NULL
                || slot->abs.last_attempt_ms > latest->last_attempt_ms)
            {
                latest = &slot->abs;
            }
        }

        leaders += slot->abs.leader ? 1 : 0;
        sent += slot->abs.traffic_sent;
        dropped += slot->abs.traffic_dropped;
        queued += slot->abs.traffic_queued;
        if (!slot->health.store_ok) {
            store_up = 0;
        }

        fail_mode += slot->health.fail_mode_active ? 1 : 0;
        det_dropped += slot->health.detections_dropped;
        panics += slot->health.panics;
    }

    p = ngx_sprintf(p,
        "# HELP ase_store_up 1 when every worker reaches the state store.\n"
        "# TYPE ase_store_up gauge\n"
        "ase_store_up %ui\n"
        "# HELP ase_fail_mode_active Workers deciding by fail_mode"
        " (state never loaded).\n"
        "# TYPE ase_fail_mode_active gauge\n"
        "ase_fail_mode_active %ui\n"
        "# HELP ase_detections_dropped_total Real-time detections dropped"
        " (queue full or store down).\n"
        "# TYPE ase_detections_dropped_total counter\n"
        "ase_detections_dropped_total %uL\n"
        "# HELP ase_background_panics_total Panics caught in background"
        " threads (each restarted).\n"
        "# TYPE ase_background_panics_total counter\n"
        "ase_background_panics_total %uL\n"
        "# HELP ase_abs_configured 1 when abs.conf names an ABS endpoint.\n"
        "# TYPE ase_abs_configured gauge\n"
        "ase_abs_configured %ui\n"
        "# HELP ase_abs_leader Workers of this nginx polling ABS"
        " for the host.\n"
        "# TYPE ase_abs_leader gauge\n"
        "ase_abs_leader %ui\n",
        store_up, fail_mode,
        det_dropped, panics, configured, leaders);

    p = ngx_sprintf(p,
        "# HELP ase_abs_last_attempt_timestamp_seconds Start of the last"
        " attack-list sync attempt (0: never).\n"
        "# TYPE ase_abs_last_attempt_timestamp_seconds gauge\n"
        "ase_abs_last_attempt_timestamp_seconds %uL\n"
        "# HELP ase_abs_last_success_timestamp_seconds End of the last"
        " good attack-list sync (0: never).\n"
        "# TYPE ase_abs_last_success_timestamp_seconds gauge\n"
        "ase_abs_last_success_timestamp_seconds %uL\n"
        "# HELP ase_abs_entries Entries of the ABS attack list in force.\n"
        "# TYPE ase_abs_entries gauge\n"
        "ase_abs_entries %uL\n"
        "# HELP ase_abs_bad_items Unreadable items skipped in that list.\n"
        "# TYPE ase_abs_bad_items gauge\n"
        "ase_abs_bad_items %uL\n"
        "# HELP ase_abs_dropped_items Entries of that list dropped:"
        " over attack_list_memory.\n"
        "# TYPE ase_abs_dropped_items gauge\n"
        "ase_abs_dropped_items %uL\n"
        "# HELP ase_abs_syncs_total Good attack-list syncs"
        " (of the polling process).\n"
        "# TYPE ase_abs_syncs_total counter\n"
        "ase_abs_syncs_total %uL\n"
        "# HELP ase_abs_sync_failures_total Failed attack-list syncs"
        " (of the polling process).\n"
        "# TYPE ase_abs_sync_failures_total counter\n"
        "ase_abs_sync_failures_total %uL\n"
        "# HELP ase_abs_consecutive_failures Failed syncs since the last"
        " good one.\n"
        "# TYPE ase_abs_consecutive_failures gauge\n"
        "ase_abs_consecutive_failures %uD\n",
        latest ? latest->last_attempt_ms / 1000 : 0,
        latest ? latest->last_success_ms / 1000 : 0,
        latest ? latest->entries : 0,
        latest ? latest->bad_items : 0,
        latest ? latest->dropped_items : 0,
        latest ? latest->syncs : 0,
        latest ? latest->failures : 0,
        latest ? latest->consecutive_failures : 0);

    p = ngx_sprintf(p,
        "# HELP ase_abs_traffic_sent_total Traffic records ABS accepted.\n"
        "# TYPE ase_abs_traffic_sent_total counter\n"
        "ase_abs_traffic_sent_total %uL\n"
        "# HELP ase_abs_traffic_dropped_total Traffic records dropped"
        " (queue full, or ABS refused every try).\n"
        "# TYPE ase_abs_traffic_dropped_total counter\n"
        "ase_abs_traffic_dropped_total %uL\n"
        "# HELP ase_abs_traffic_queued Traffic records waiting to be sent.\n"
        "# TYPE ase_abs_traffic_queued gauge\n"
        "ase_abs_traffic_queued %uL\n",
        sent, dropped, queued);

    return p;
}


static void
ngx_http_ase_publish(ngx_http_ase_main_conf_t *amcf)
{
    ase_stats             stats;
    ase_health            health;
    ase_abs_state         abs;
    ngx_http_ase_slot_t  *slot;

    if (amcf->engine == NULL || amcf->slots == NULL
        || ngx_worker >= NGX_HTTP_ASE_SLOTS
        || ase_engine_stats(amcf->engine, &stats) != ASE_OK
        || ase_abs_status(amcf->engine, &abs) != ASE_OK
        || ase_engine_health(amcf->engine, &health) != ASE_OK)
    {
        return;
    }

    slot = &amcf->slots[ngx_worker];
    slot->stats = stats;
    slot->abs = abs;
    slot->health = health;
    slot->pid = ngx_pid;
}


static void
ngx_http_ase_stats_timer(ngx_event_t *ev)
{
    ngx_http_ase_main_conf_t  *amcf = ev->data;

    ngx_http_ase_publish(amcf);

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_add_timer(ev, NGX_HTTP_ASE_STATS_INTERVAL);
}


static ngx_int_t
ngx_http_ase_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t           *shpool;
    ngx_http_ase_main_conf_t  *amcf;

    amcf = shm_zone->data;

    if (data) {
        /* reload: the previous cycle's zone, same size, keeps the slots */
        amcf->slots = ((ngx_http_ase_main_conf_t *) data)->slots;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    amcf->slots = ngx_slab_calloc(shpool,
                           NGX_HTTP_ASE_SLOTS * sizeof(ngx_http_ase_slot_t));
    if (amcf->slots == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ase_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_ase_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static void *
ngx_http_ase_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ase_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ase_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     amcf->config = { 0, NULL };
     *     amcf->engine = NULL;
     *     amcf->shm_zone = NULL;
     *     amcf->slots = NULL;
     */

    return amcf;
}


static void *
ngx_http_ase_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ase_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ase_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->enable = NGX_CONF_UNSET;
    conf->unknown_api = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_ase_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ase_loc_conf_t  *prev = parent;
    ngx_http_ase_loc_conf_t  *conf = child;

    ngx_http_ase_main_conf_t  *amcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_uint_value(conf->unknown_api, prev->unknown_api,
                              ASE_UNKNOWN_API_DEFAULT);

    if (conf->enable) {
        amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ase_module);

        if (amcf->config.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"ase on\" requires \"ase_config\" "
                               "in the http block");
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ase_config(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ase_main_conf_t *amcf = conf;

    size_t        size;
    ngx_str_t    *value, name;
    ase_str       path;
    ase_result    rc;
    char          err[NGX_HTTP_ASE_ERR_LEN];

    if (amcf->config.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    amcf->config = value[1];

    if (ngx_conf_full_name(cf->cycle, &amcf->config, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /*
     * Validate now so that "nginx -t" shows the library's message.  The
     * master only checks the files: it opens no state store (whose files
     * must stay owned by the workers' user) and starts no thread; each
     * worker makes its engine in init_process.
     */

    path.len = amcf->config.len;
    path.data = amcf->config.data;
    err[0] = '\0';

    rc = ase_config_check(path, err, sizeof(err));

    if (rc != ASE_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "ase_config \"%V\": %s (%s)",
                           &amcf->config, err[0] ? err : "failed",
                           ase_result_str(rc));
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&name, "ase_stats");
    size = NGX_HTTP_ASE_SLOTS * sizeof(ngx_http_ase_slot_t) + 64 * 1024;

    amcf->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_ase_module);
    if (amcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    amcf->shm_zone->init = ngx_http_ase_init_zone;
    amcf->shm_zone->data = amcf;

    return NGX_CONF_OK;
}


static char *
ngx_http_ase_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_ase_main_conf_t  *amcf;

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ase_module);

    if (amcf->config.len == 0) {
        return "requires \"ase_config\" before it in the http block";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_ase_status_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ase_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ase_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ase_log_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ase_init_process(ngx_cycle_t *cycle)
{
    ase_str                    path;
    ase_result                 rc;
    ase_abs_state              abs;
    ngx_http_ase_main_conf_t  *amcf;
    char                       err[NGX_HTTP_ASE_ERR_LEN];

    /* threads do not survive fork(): engines live in workers only */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_ase_module);

    if (amcf == NULL || amcf->config.len == 0) {
        return NGX_OK;
    }

    path.len = amcf->config.len;
    path.data = amcf->config.data;
    err[0] = '\0';

    rc = ase_engine_new(path, err, sizeof(err), &amcf->engine);

    if (rc != ASE_OK) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "ase_config \"%V\": %s (%s)", &amcf->config,
                      err[0] ? err : "failed", ase_result_str(rc));
        amcf->engine = NULL;
        return NGX_ERROR;
    }

    if (ngx_worker == 0) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "ase %s, config \"%V\"", ase_version(), &amcf->config);
    }

    /* whether the log phase has anything to report to */

    amcf->abs_configured = 0;

    if (ase_abs_status(amcf->engine, &abs) == ASE_OK) {
        amcf->abs_configured = abs.configured;
    }

    amcf->stats_event.handler = ngx_http_ase_stats_timer;
    amcf->stats_event.data = amcf;
    amcf->stats_event.log = cycle->log;
    amcf->stats_event.cancelable = 1;

    ngx_http_ase_publish(amcf);
    ngx_add_timer(&amcf->stats_event, NGX_HTTP_ASE_STATS_INTERVAL);

    return NGX_OK;
}


static void
ngx_http_ase_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_ase_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_ase_module);

    if (amcf == NULL || amcf->engine == NULL) {
        return;
    }

    if (amcf->stats_event.timer_set) {
        ngx_del_timer(&amcf->stats_event);
    }

    ase_engine_free(amcf->engine);
    amcf->engine = NULL;
}
