
/*
 * ngx_http_ase_module: API client blocking by the in-process ase engine.
 *
 * Each worker builds its engine (libase, include/ase.h) in init_process and
 * frees it in exit_process.  The engine is evented: it starts no thread, and
 * a worker timer (ngx_http_ase_tick_timer) drives its background work, a
 * bounded slice per tick; the one worker that takes the host role (unless
 * "ase_host_role off" leaves it to ase-agent) runs the thread that builds
 * the lists snapshot every worker maps, polls ABS and ships traffic.
 * The master only reads the files at config time: ase_config_check
 * so that "nginx -t" and a reload report a bad configuration, and
 * ase_config_fail_verdict for the verdict of fail_mode.  A worker that
 * cannot build its engine (the files are unreadable for its user, say)
 * serves on: it decides every request by that verdict, logs why at "alert"
 * and retries from a timer.  The access handler hands the request to
 * ase_check_request and turns the verdict into the response, and logs every
 * request it stops (ase_log_level).  A worker whose engine cannot open or
 * read the state store says so at "alert", again every minute while it
 * lasts.  Request counters live in a shared zone, so that ase_status counts
 * on across reloads, as stub_status does.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ase.h>


#define NGX_HTTP_ASE_ERR_LEN           1024
#define NGX_HTTP_ASE_STACK_HEADERS     64
#define NGX_HTTP_ASE_STATS_INTERVAL    1000
#define NGX_HTTP_ASE_RETRY_INTERVAL    5000
#define NGX_HTTP_ASE_RETRY_ALERT       12  /* a minute of retries */
#define NGX_HTTP_ASE_STORE_ALERT       60000  /* at most this often */
#define NGX_HTTP_ASE_STORE_CALM        5000   /* answering, before said */
#define NGX_HTTP_ASE_SLOT_STALE        10     /* s without publishing */
#define NGX_HTTP_ASE_SLOTS             NGX_MAX_PROCESSES

/* APIs with their own ase_api_requests_total series; the others share one */
#define NGX_HTTP_ASE_APIS              64
#define NGX_HTTP_ASE_API_NAME          64
#define NGX_HTTP_ASE_API_CACHE         256
#define NGX_HTTP_ASE_SOURCES           (ASE_SOURCE_INVALID_CONTENT_TYPE + 1)

/* outcomes of ase_api_requests_total */
#define NGX_HTTP_ASE_ALLOWED           0
#define NGX_HTTP_ASE_STOPPED           1
#define NGX_HTTP_ASE_WOULD_BLOCK       2
#define NGX_HTTP_ASE_OUTCOMES          3


/*
 * One worker's gauges (list sizes, health, ABS state), published to the
 * shared zone for ase_status.  A worker claims a free slot at start (pid
 * 0, or the pid of a process that is gone) and frees it at exit, so the
 * workers of two cycles overlapping in a reload each have their own.
 * The gauges count once published (a slot just claimed holds zeros, not
 * a store that is down), and while published again every second: the
 * slot of a worker that died without freeing it stops counting even when
 * its pid was reused by a process kill() cannot signal.
 */

typedef struct {
    ngx_atomic_t               pid;
    ngx_atomic_t               published;  /* the gauges are this pid's */
    ngx_atomic_t               beat;       /* ngx_time() of publication */
    ngx_uint_t                 no_engine;  /* building it failed */
    ase_stats                  stats;
    ase_abs_state              abs;
    ase_health                 health;
} ngx_http_ase_slot_t;


/*
 * Counters.  Each worker counts its requests in its own memory and adds
 * what it counted to the shared ones about once a second (and when it
 * exits); the counters of the library (detections, ...) are added as
 * differences from what the worker added last.  Nothing is reset by a
 * reload: the zone is the previous cycle's.
 */

typedef struct {
    uint64_t                   allowed[ASE_REASON_COUNT];
    uint64_t                   blocked[ASE_REASON_COUNT];
    uint64_t                   would_block[ASE_REASON_COUNT];
    uint64_t                   deny_by_source[NGX_HTTP_ASE_SOURCES];
    uint64_t                   api[NGX_HTTP_ASE_APIS + 1]
                                  [NGX_HTTP_ASE_OUTCOMES];
    uint64_t                   without_engine;
    uint64_t                   detections;
    uint64_t                   detections_dropped;
    uint64_t                   panics;
    uint64_t                   snapshot_refusals;
    uint64_t                   traffic_sent;
    uint64_t                   traffic_dropped;
} ngx_http_ase_counts_t;


typedef struct {
    ngx_atomic_t               allowed[ASE_REASON_COUNT];
    ngx_atomic_t               blocked[ASE_REASON_COUNT];
    ngx_atomic_t               would_block[ASE_REASON_COUNT];
    ngx_atomic_t               deny_by_source[NGX_HTTP_ASE_SOURCES];
    ngx_atomic_t               api[NGX_HTTP_ASE_APIS + 1]
                                  [NGX_HTTP_ASE_OUTCOMES];
    ngx_atomic_t               without_engine;
    ngx_atomic_t               detections;
    ngx_atomic_t               detections_dropped;
    ngx_atomic_t               panics;
    ngx_atomic_t               snapshot_refusals;
    ngx_atomic_t               traffic_sent;
    ngx_atomic_t               traffic_dropped;
} ngx_http_ase_shared_counts_t;


/* the name of an API with its own series; set once, under the zone's lock */

typedef struct {
    size_t                     len;
    u_char                     data[NGX_HTTP_ASE_API_NAME];
} ngx_http_ase_api_name_t;


typedef struct {
    ngx_http_ase_shared_counts_t  counts;
    ngx_atomic_t                  napis;
    ngx_http_ase_api_name_t       apis[NGX_HTTP_ASE_APIS];
    ngx_http_ase_slot_t           slots[NGX_HTTP_ASE_SLOTS];
} ngx_http_ase_shctx_t;


/* a worker's index of API names (the engine's strings) to series */

typedef struct {
    u_char                    *data;
    ngx_uint_t                 index;
} ngx_http_ase_api_cache_t;


typedef struct {
    ngx_str_t                  config;
    ase_engine                *engine;
    ngx_shm_zone_t            *shm_zone;
    ngx_slab_pool_t           *shpool;
    ngx_http_ase_shctx_t      *sh;
    ngx_http_ase_slot_t       *slot;       /* this worker's */
    ngx_http_ase_counts_t      counts;     /* not yet added to sh */
    ngx_http_ase_counts_t      lib_seen;   /* library counters added */
    ngx_http_ase_api_cache_t   api_cache[NGX_HTTP_ASE_API_CACHE];
    ngx_event_t                stats_event;
    ngx_event_t                tick_event;
    ngx_flag_t                 abs_configured;
    ngx_flag_t                 host_role;

    /* what a worker without engine does, and how it retries */
    ase_verdict                fail_verdict;
    ngx_event_t                retry_event;
    ngx_uint_t                 failures;
    char                       error[NGX_HTTP_ASE_ERR_LEN];
    uint64_t                   snapshot_refusals;

    /* the store error last said at alert, and when; since when it answers */
    char                       store_error[ASE_MESSAGE_LEN];
    ngx_msec_t                 store_alerted;
    ngx_msec_t                 store_answers;
    ngx_flag_t                 store_alert_said;
} ngx_http_ase_main_conf_t;


typedef struct {
    ngx_flag_t                 enable;
    ngx_uint_t                 unknown_api;
    ngx_uint_t                 log_level;
    ngx_flag_t                 intercept_errors;
} ngx_http_ase_loc_conf_t;


/*
 * What ase_status shows: the counters of every worker summed, the list
 * sizes of one engine, the host's latest ABS sync.
 */

typedef struct {
    uint64_t                   checked;
    uint64_t                   allowed[ASE_REASON_COUNT];
    uint64_t                   blocked[ASE_REASON_COUNT];
    uint64_t                   would_block[ASE_REASON_COUNT];
    uint64_t                   deny_by_source[NGX_HTTP_ASE_SOURCES];
    uint64_t                   api[NGX_HTTP_ASE_APIS + 1]
                                  [NGX_HTTP_ASE_OUTCOMES];
    ngx_uint_t                 napis;
    ngx_http_ase_api_name_t   *apis;
    uint64_t                   detections;
    uint64_t                   deny_entries;
    uint64_t                   allow_entries;
    uint64_t                   store_up;
    uint64_t                   fail_mode_active;
    uint64_t                   workers_without_engine;
    uint64_t                   requests_without_engine;
    uint64_t                   detections_dropped;
    uint64_t                   panics;
    uint64_t                   abs_configured;
    uint64_t                   abs_leader;
    uint64_t                   abs_last_attempt;
    uint64_t                   abs_last_success;
    uint64_t                   abs_entries;
    uint64_t                   abs_bad_items;
    uint64_t                   abs_dropped_items;
    uint64_t                   abs_syncs;
    uint64_t                   abs_failures;
    uint64_t                   abs_consecutive_failures;
    uint64_t                   traffic_sent;
    uint64_t                   traffic_dropped;
    uint64_t                   traffic_queued;
    uint64_t                   snapshot_seq;
    uint64_t                   snapshot_refused;
    uint64_t                   snapshot_refusals;
    uint64_t                   overlay_entries;
    uint64_t                   host_role;
} ngx_http_ase_totals_t;


/*
 * One metric of ase_status, in Prometheus text format: a value of
 * ngx_http_ase_totals_t; or one per ASE_REASON_* in "reasons" (a bit per
 * reason: only those that can happen), "reason" label; or one per deny
 * source ("source" label); or one per API and outcome ("api" and
 * "outcome" labels); or the library version ("version" label, value 1).
 */

#define NGX_HTTP_ASE_VALUE             0
#define NGX_HTTP_ASE_BY_REASON         1
#define NGX_HTTP_ASE_VERSION           2
#define NGX_HTTP_ASE_BY_SOURCE         3
#define NGX_HTTP_ASE_BY_API            4

#define ngx_http_ase_bit(reason)       (1 << ASE_REASON_ ## reason)

/* reasons a request can be stopped for */
#define NGX_HTTP_ASE_STOP_REASONS                                             \
    (ngx_http_ase_bit(UNKNOWN_API) | ngx_http_ase_bit(DECOY)                  \
     | ngx_http_ase_bit(DENY_LIST) | ngx_http_ase_bit(PROTOCOL)               \
     | ngx_http_ase_bit(METHOD) | ngx_http_ase_bit(CONTENT_TYPE)              \
     | ngx_http_ase_bit(FAIL_MODE) | ngx_http_ase_bit(DUPLICATE_IDENTIFIER))

/* reasons of a monitor-mode "would block" */
#define NGX_HTTP_ASE_MONITOR_REASONS                                          \
    (ngx_http_ase_bit(DENY_LIST) | ngx_http_ase_bit(PROTOCOL)                 \
     | ngx_http_ase_bit(METHOD) | ngx_http_ase_bit(CONTENT_TYPE)              \
     | ngx_http_ase_bit(DUPLICATE_IDENTIFIER))

/* reasons a request is allowed for, a would-block's included */
#define NGX_HTTP_ASE_ALLOW_REASONS                                            \
    (ngx_http_ase_bit(NONE) | ngx_http_ase_bit(FIREWALL_OFF)                  \
     | ngx_http_ase_bit(UNKNOWN_API) | ngx_http_ase_bit(ALLOW_LIST)           \
     | ngx_http_ase_bit(FAIL_MODE) | NGX_HTTP_ASE_MONITOR_REASONS)

typedef struct {
    ngx_str_t                  name;
    ngx_str_t                  type;
    ngx_uint_t                 labels;
    ngx_uint_t                 reasons;
    size_t                     offset;
    ngx_str_t                  help;
} ngx_http_ase_metric_t;


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
static ngx_int_t ngx_http_ase_error_page(ngx_http_request_t *r,
    ngx_uint_t status);
static void ngx_http_ase_log_verdict(ngx_http_request_t *r,
    ngx_http_ase_loc_conf_t *alcf, ase_verdict *v);
static void ngx_http_ase_count(ngx_http_ase_main_conf_t *amcf,
    ase_verdict *v);
static ngx_uint_t ngx_http_ase_api_index(ngx_http_ase_main_conf_t *amcf,
    ase_str *name);
static void ngx_http_ase_flush(ngx_http_ase_main_conf_t *amcf);
static void ngx_http_ase_claim_slot(ngx_http_ase_main_conf_t *amcf);
static ngx_uint_t ngx_http_ase_slot_live(ngx_http_ase_slot_t *slot);
static void ngx_http_ase_store_alert(ngx_http_ase_main_conf_t *amcf,
    ase_health *health);
static ngx_int_t ngx_http_ase_log_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ase_status_handler(ngx_http_request_t *r);
static void ngx_http_ase_totals(ngx_http_ase_main_conf_t *amcf,
    ngx_http_ase_totals_t *t);
static size_t ngx_http_ase_metric_size(ngx_http_ase_metric_t *m);
static u_char *ngx_http_ase_metric_write(u_char *p, u_char *last,
    ngx_http_ase_metric_t *m, ngx_http_ase_totals_t *t);
static ngx_http_ase_ctx_t *ngx_http_ase_get_ctx(ngx_http_request_t *r);
static void ngx_http_ase_cleanup(void *data);
static ngx_int_t ngx_http_ase_verdict_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ase_api_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ase_source_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ase_matched_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_ase_publish(ngx_http_ase_main_conf_t *amcf);
static void ngx_http_ase_stats_timer(ngx_event_t *ev);
static ngx_int_t ngx_http_ase_engine_new(ngx_http_ase_main_conf_t *amcf,
    ngx_log_t *log);
static void ngx_http_ase_retry_timer(ngx_event_t *ev);
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


static ngx_conf_enum_t  ngx_http_ase_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


/*
 * Indexed by ASE_REASON_*; names as in $ase_verdict and the metrics.  The
 * typedef below fails to compile when a reason is added to the library and
 * not here (a sized array would fill the gap with empty names).
 */

static ngx_str_t  ngx_http_ase_reasons[] = {
    ngx_string("none"),
    ngx_string("firewall_off"),
    ngx_string("unknown_api"),
    ngx_string("allow_list"),
    ngx_string("decoy"),
    ngx_string("deny_list"),
    ngx_string("protocol"),
    ngx_string("method"),
    ngx_string("content_type"),
    ngx_string("fail_mode"),
    ngx_string("duplicate_identifier")
};

typedef char  ngx_http_ase_reasons_cover_every_reason[
    sizeof(ngx_http_ase_reasons) / sizeof(ngx_str_t) == ASE_REASON_COUNT
    ? 1 : -1];


static ngx_str_t  ngx_http_ase_actions[] = {
    ngx_string("allow"),
    ngx_string("block"),
    ngx_string("respond"),
    ngx_string("redirect")
};


/* indexed by ASE_SOURCE_*, as in view_blacklist's filters */

static ngx_str_t  ngx_http_ase_sources[] = {
    ngx_string("manual"),
    ngx_string("abs"),
    ngx_string("decoy"),
    ngx_string("invalid_protocol"),
    ngx_string("invalid_method"),
    ngx_string("invalid_content_type")
};

typedef char  ngx_http_ase_sources_cover_every_source[
    sizeof(ngx_http_ase_sources) / sizeof(ngx_str_t) == NGX_HTTP_ASE_SOURCES
    ? 1 : -1];


/* indexed by ASE_ID_* */

static ngx_str_t  ngx_http_ase_kinds[] = {
    ngx_string("ip"),
    ngx_string("cookie"),
    ngx_string("token"),
    ngx_string("api_key"),
    ngx_string("username")
};

typedef char  ngx_http_ase_kinds_cover_every_kind[
    sizeof(ngx_http_ase_kinds) / sizeof(ngx_str_t) == ASE_ID_USERNAME + 1
    ? 1 : -1];


static ngx_str_t  ngx_http_ase_outcomes[] = {
    ngx_string("allowed"),
    ngx_string("stopped"),
    ngx_string("would_block")
};

static ngx_str_t  ngx_http_ase_other_api = ngx_string("_other");


#define ngx_http_ase_metric(name, type, labels, field, help)                 \
    { ngx_string(name), ngx_string(type), labels, 0,                          \
      offsetof(ngx_http_ase_totals_t, field), ngx_string(help) }

#define ngx_http_ase_by_reason(name, reasons, field, help)                   \
    { ngx_string(name), ngx_string("counter"), NGX_HTTP_ASE_BY_REASON,        \
      reasons, offsetof(ngx_http_ase_totals_t, field), ngx_string(help) }

/* ase_status, in this order; the page is sized from this table */

static ngx_http_ase_metric_t  ngx_http_ase_metrics[] = {

    /* the value is 1: the field is not read */

    ngx_http_ase_metric("ase_info", "gauge", NGX_HTTP_ASE_VERSION, checked,
        "Library version."),

    ngx_http_ase_metric("ase_requests_checked_total", "counter",
        NGX_HTTP_ASE_VALUE, checked,
        "Requests checked."),

    ngx_http_ase_by_reason("ase_requests_allowed_total",
        NGX_HTTP_ASE_ALLOW_REASONS, allowed,
        "Requests allowed, by reason (fail_mode: fail open; a monitor-mode"
        " request by the reason it would have been stopped for)."),

    ngx_http_ase_by_reason("ase_requests_blocked_total",
        NGX_HTTP_ASE_STOP_REASONS, blocked,
        "Requests stopped (blocked, answered, redirected), by reason."),

    ngx_http_ase_by_reason("ase_requests_would_block_total",
        NGX_HTTP_ASE_MONITOR_REASONS, would_block,
        "Monitor mode: requests that would have been stopped, by reason."),

    ngx_http_ase_metric("ase_deny_list_matches_total", "counter",
        NGX_HTTP_ASE_BY_SOURCE, deny_by_source,
        "Requests that met a deny-list entry (stopped, or allowed in"
        " monitor mode), by the entry's source."),

    ngx_http_ase_metric("ase_api_requests_total", "counter",
        NGX_HTTP_ASE_BY_API, api,
        "Requests of each API by outcome (the first 64 APIs seen; the"
        " others under api _other)."),

    ngx_http_ase_metric("ase_detections_total", "counter",
        NGX_HTTP_ASE_VALUE, detections,
        "Real-time detections recorded."),

    ngx_http_ase_metric("ase_deny_list_entries", "gauge",
        NGX_HTTP_ASE_VALUE, deny_entries,
        "Deny-list entries."),

    ngx_http_ase_metric("ase_allow_list_entries", "gauge",
        NGX_HTTP_ASE_VALUE, allow_entries,
        "Allow-list entries."),

    ngx_http_ase_metric("ase_store_up", "gauge",
        NGX_HTTP_ASE_VALUE, store_up,
        "1 when every worker reaches the state store."),

    ngx_http_ase_metric("ase_fail_mode_active", "gauge",
        NGX_HTTP_ASE_VALUE, fail_mode_active,
        "Workers deciding by fail_mode (state never loaded)."),

    ngx_http_ase_metric("ase_workers_without_engine", "gauge",
        NGX_HTTP_ASE_VALUE, workers_without_engine,
        "Workers that could not build their engine"
        " (deciding by fail_mode, retrying)."),

    ngx_http_ase_metric("ase_requests_without_engine_total", "counter",
        NGX_HTTP_ASE_VALUE, requests_without_engine,
        "Requests decided by fail_mode in workers without engine"
        " (counted as checked too)."),

    ngx_http_ase_metric("ase_detections_dropped_total", "counter",
        NGX_HTTP_ASE_VALUE, detections_dropped,
        "Real-time detections dropped (queue full or store down)."),

    ngx_http_ase_metric("ase_background_panics_total", "counter",
        NGX_HTTP_ASE_VALUE, panics,
        "Panics caught in background threads (each restarted)."),

    ngx_http_ase_metric("ase_abs_configured", "gauge",
        NGX_HTTP_ASE_VALUE, abs_configured,
        "1 when abs.conf names an ABS endpoint."),

    ngx_http_ase_metric("ase_abs_leader", "gauge",
        NGX_HTTP_ASE_VALUE, abs_leader,
        "Workers of this nginx polling ABS for the host."),

    ngx_http_ase_metric("ase_abs_last_attempt_timestamp_seconds", "gauge",
        NGX_HTTP_ASE_VALUE, abs_last_attempt,
        "Start of the last attack-list sync attempt (0: never)."),

    ngx_http_ase_metric("ase_abs_last_success_timestamp_seconds", "gauge",
        NGX_HTTP_ASE_VALUE, abs_last_success,
        "End of the last good attack-list sync (0: never)."),

    ngx_http_ase_metric("ase_abs_entries", "gauge",
        NGX_HTTP_ASE_VALUE, abs_entries,
        "Entries of the ABS attack list in force."),

    ngx_http_ase_metric("ase_abs_bad_items", "gauge",
        NGX_HTTP_ASE_VALUE, abs_bad_items,
        "Unreadable items skipped in that list."),

    ngx_http_ase_metric("ase_abs_dropped_items", "gauge",
        NGX_HTTP_ASE_VALUE, abs_dropped_items,
        "Entries of that list dropped: over attack_list_memory."),

    ngx_http_ase_metric("ase_abs_syncs_total", "counter",
        NGX_HTTP_ASE_VALUE, abs_syncs,
        "Good attack-list syncs (of the polling process)."),

    ngx_http_ase_metric("ase_abs_sync_failures_total", "counter",
        NGX_HTTP_ASE_VALUE, abs_failures,
        "Failed attack-list syncs (of the polling process)."),

    ngx_http_ase_metric("ase_abs_consecutive_failures", "gauge",
        NGX_HTTP_ASE_VALUE, abs_consecutive_failures,
        "Failed syncs since the last good one."),

    ngx_http_ase_metric("ase_abs_traffic_sent_total", "counter",
        NGX_HTTP_ASE_VALUE, traffic_sent,
        "Traffic records ABS accepted."),

    ngx_http_ase_metric("ase_abs_traffic_dropped_total", "counter",
        NGX_HTTP_ASE_VALUE, traffic_dropped,
        "Traffic records dropped (queue full, or ABS refused every try)."),

    ngx_http_ase_metric("ase_abs_traffic_queued", "gauge",
        NGX_HTTP_ASE_VALUE, traffic_queued,
        "Traffic records waiting to be sent."),

    ngx_http_ase_metric("ase_snapshot_log_position", "gauge",
        NGX_HTTP_ASE_VALUE, snapshot_seq,
        "Store log position of the oldest lists snapshot a worker maps"
        " (0: a worker has none and holds the lists itself)."),

    ngx_http_ase_metric("ase_snapshot_refused", "gauge",
        NGX_HTTP_ASE_VALUE, snapshot_refused,
        "Workers whose last snapshot file failed its check (or, in the"
        " host-role worker, whose last build failed); see error.log."),

    ngx_http_ase_metric("ase_snapshot_refusals_total", "counter",
        NGX_HTTP_ASE_VALUE, snapshot_refusals,
        "Snapshot files refused by a worker, or found bad and rebuilt by"
        " the host-role worker."),

    ngx_http_ase_metric("ase_overlay_entries", "gauge",
        NGX_HTTP_ASE_VALUE, overlay_entries,
        "Entries the workers hold above the snapshot (changes since it),"
        " summed."),

    ngx_http_ase_metric("ase_host_role", "gauge",
        NGX_HTTP_ASE_VALUE, host_role,
        "Workers of this nginx holding the host role (building snapshots).")
};


static ngx_command_t  ngx_http_ase_commands[] = {

    { ngx_string("ase_config"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_ase_config,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ase_host_role"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ase_main_conf_t, host_role),
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

    { ngx_string("ase_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ase_loc_conf_t, log_level),
      &ngx_http_ase_log_levels },

    { ngx_string("ase_intercept_errors"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ase_loc_conf_t, intercept_errors),
      NULL },

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

    { ngx_string("ase_api"), NULL,
      ngx_http_ase_api_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ase_source"), NULL,
      ngx_http_ase_source_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ase_matched"), NULL,
      ngx_http_ase_matched_variable, 0,
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

    c = r->connection;

    if (amcf->engine) {
        if (ngx_http_ase_request(r, &req, stack) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        req.unknown_api = alcf->unknown_api;
    }

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

    if (amcf->engine == NULL) {

        /*
         * this worker could not build its engine and retries from a
         * timer; meanwhile fail_mode decides, as in an engine that cannot
         * load its state
         */

        *v = amcf->fail_verdict;
        amcf->counts.without_engine++;

    } else {
        ctx->rc = ase_check_request(amcf->engine, &req, v);
    }

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

    ngx_http_ase_count(amcf, v);
    ngx_http_ase_log_verdict(r, alcf, v);

    switch (v->action) {

    case ASE_ACTION_ALLOW:
        return NGX_DECLINED;

    case ASE_ACTION_REDIRECT:
        return ngx_http_ase_redirect(r, v);

    default: /* ASE_ACTION_BLOCK, ASE_ACTION_RESPOND */

        /*
         * With ase_intercept_errors, a block or a pattern error whose
         * status has an error_page here is answered by that page; a
         * decoy keeps its configured answer, which must look like an API.
         */

        if (alcf->intercept_errors
            && v->reason != ASE_REASON_DECOY
            && ngx_http_ase_error_page(r, v->status))
        {
            ngx_http_finalize_request(r, v->status);
            return NGX_DONE;
        }

        return ngx_http_ase_respond(r, v);
    }
}


/* whether the location has an error_page for "status" */

static ngx_int_t
ngx_http_ase_error_page(ngx_http_request_t *r, ngx_uint_t status)
{
    ngx_uint_t                 i;
    ngx_http_err_page_t       *err_page;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->error_pages == NULL || status < 300 || status > 599) {
        return 0;
    }

    err_page = clcf->error_pages->elts;

    for (i = 0; i < clcf->error_pages->nelts; i++) {
        if (err_page[i].status == (ngx_int_t) status) {
            return 1;
        }
    }

    return 0;
}


/*
 * One line per request stopped, or allowed in monitor mode only, as the
 * access module's "access forbidden by rule": client, API, reason, source
 * and identifier kind.  Never the identifier nor the request line (whose
 * query string may hold an API key): the request's log handler, which
 * would add it, is set aside for the line.
 */

static void
ngx_http_ase_log_verdict(ngx_http_request_t *r, ngx_http_ase_loc_conf_t *alcf,
    ase_verdict *v)
{
    u_char                    *p, *last;
    ngx_log_t                 *log;
    ngx_str_t                 *action;
    ngx_uint_t                 reason;
    ngx_log_handler_pt         handler;
    ngx_http_core_srv_conf_t  *cscf;
    u_char                     buf[NGX_MAX_ERROR_STR];

    if (v->action == ASE_ACTION_ALLOW && !v->would_block) {
        return;
    }

    log = r->connection->log;

    if (log->log_level < alcf->log_level) {
        return;
    }

    reason = v->reason < ASE_REASON_COUNT ? v->reason : ASE_REASON_NONE;
    action = &ngx_http_ase_actions[v->action <= ASE_ACTION_REDIRECT
                                   ? v->action : ASE_ACTION_BLOCK];

    p = buf;
    last = buf + sizeof(buf);

    if (v->would_block) {
        p = ngx_slprintf(p, last, "would block: %V (monitor mode, allowed)",
                         &ngx_http_ase_reasons[reason]);

    } else {
        p = ngx_slprintf(p, last, "%V: %V, status %uD", action,
                         &ngx_http_ase_reasons[reason], v->status);
    }

    if (v->api_name.len) {
        p = ngx_slprintf(p, last, ", api: \"%*s\"", v->api_name.len,
                         v->api_name.data);
    }

    if (reason == ASE_REASON_DENY_LIST && v->source < NGX_HTTP_ASE_SOURCES) {
        p = ngx_slprintf(p, last, ", source: %V",
                         &ngx_http_ase_sources[v->source]);
    }

    if (v->matched_kind <= ASE_ID_USERNAME) {
        p = ngx_slprintf(p, last, ", identifier: %V",
                         &ngx_http_ase_kinds[v->matched_kind]);
    }

    cscf = ngx_http_get_module_srv_conf(r, ngx_http_core_module);

    p = ngx_slprintf(p, last, ", client: %V", &r->connection->addr_text);

    if (cscf->server_name.len) {
        p = ngx_slprintf(p, last, ", server: %V", &cscf->server_name);
    }

    if (r->headers_in.server.len) {
        p = ngx_slprintf(p, last, ", host: \"%V\"", &r->headers_in.server);
    }

    handler = log->handler;
    log->handler = NULL;

    ngx_log_error(alcf->log_level, log, 0, "ase: %*s",
                  (size_t) (p - buf), buf);

    log->handler = handler;
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
 * queued without waiting; the engine's shipper thread sends it.  A worker
 * without engine has nothing to report through.
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


/* sets "v" to "value"; not found when the verdict has none */

static ngx_int_t
ngx_http_ase_set_variable(ngx_http_variable_value_t *v, u_char *data,
    size_t len)
{
    if (len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = data;
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/* $ase_api: the API the request matched (the engine's string) */

static ngx_int_t
ngx_http_ase_api_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ase_ctx_t  *ctx;

    ctx = ngx_http_ase_get_ctx(r);

    if (ctx == NULL || ctx->rc != ASE_OK) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_ase_set_variable(v, (u_char *) ctx->verdict.api_name.data,
                                     ctx->verdict.api_name.len);
}


/* $ase_source: the source of the deny-list entry that matched */

static ngx_int_t
ngx_http_ase_source_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ase_ctx_t  *ctx;

    ctx = ngx_http_ase_get_ctx(r);

    if (ctx == NULL || ctx->rc != ASE_OK
        || ctx->verdict.reason != ASE_REASON_DENY_LIST
        || ctx->verdict.source >= NGX_HTTP_ASE_SOURCES)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_ase_set_variable(v,
                          ngx_http_ase_sources[ctx->verdict.source].data,
                          ngx_http_ase_sources[ctx->verdict.source].len);
}


/* $ase_matched: the kind of identifier that met the allow or deny list */

static ngx_int_t
ngx_http_ase_matched_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ase_ctx_t  *ctx;

    ctx = ngx_http_ase_get_ctx(r);

    if (ctx == NULL || ctx->rc != ASE_OK
        || ctx->verdict.matched_kind > ASE_ID_USERNAME)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_ase_set_variable(v,
                          ngx_http_ase_kinds[ctx->verdict.matched_kind].data,
                          ngx_http_ase_kinds[ctx->verdict.matched_kind].len);
}


/* counts a request in this worker's memory (see ngx_http_ase_flush) */

static void
ngx_http_ase_count(ngx_http_ase_main_conf_t *amcf, ase_verdict *v)
{
    ngx_uint_t              reason, outcome;
    ngx_http_ase_counts_t  *c;

    c = &amcf->counts;
    reason = v->reason < ASE_REASON_COUNT ? v->reason : ASE_REASON_NONE;

    if (v->action != ASE_ACTION_ALLOW) {
        c->blocked[reason]++;
        outcome = NGX_HTTP_ASE_STOPPED;

    } else {
        c->allowed[reason]++;
        outcome = NGX_HTTP_ASE_ALLOWED;

        if (v->would_block) {
            c->would_block[reason]++;
            outcome = NGX_HTTP_ASE_WOULD_BLOCK;
        }
    }

    if (reason == ASE_REASON_DENY_LIST && v->source < NGX_HTTP_ASE_SOURCES) {
        c->deny_by_source[v->source]++;
    }

    if (v->api_name.len) {
        c->api[ngx_http_ase_api_index(amcf, &v->api_name)][outcome]++;
    }
}


/*
 * The series of an API: its index in the zone's table of names, found
 * once per name in this worker (the engine's strings do not move), and
 * added to the table under the zone's lock when no worker has added it
 * yet.  Past NGX_HTTP_ASE_APIS names, and for names too long to keep,
 * the shared "_other" series.
 */

static ngx_uint_t
ngx_http_ase_api_index(ngx_http_ase_main_conf_t *amcf, ase_str *name)
{
    ngx_uint_t                 h, i, n;
    ngx_http_ase_shctx_t      *sh;
    ngx_http_ase_api_cache_t  *e;

    h = ((uintptr_t) name->data >> 3) % NGX_HTTP_ASE_API_CACHE;
    e = &amcf->api_cache[h];

    if (e->data == (u_char *) name->data) {
        return e->index;
    }

    sh = amcf->sh;
    i = NGX_HTTP_ASE_APIS;

    if (sh && name->len <= NGX_HTTP_ASE_API_NAME) {
        ngx_shmtx_lock(&amcf->shpool->mutex);

        n = sh->napis;

        for (i = 0; i < n; i++) {
            if (sh->apis[i].len == name->len
                && ngx_memcmp(sh->apis[i].data, name->data, name->len) == 0)
            {
                break;
            }
        }

        if (i == n && n < NGX_HTTP_ASE_APIS) {
            sh->apis[n].len = name->len;
            ngx_memcpy(sh->apis[n].data, name->data, name->len);
            ngx_memory_barrier();
            sh->napis = n + 1;
        }

        ngx_shmtx_unlock(&amcf->shpool->mutex);
    }

    e->data = (u_char *) name->data;
    e->index = i;

    return i;
}


static ngx_int_t
ngx_http_ase_status_handler(ngx_http_request_t *r)
{
    size_t                     size;
    ngx_int_t                  rc;
    ngx_buf_t                 *b;
    ngx_uint_t                 i;
    ngx_chain_t                out;
    ngx_http_ase_totals_t      totals;
    ngx_http_ase_main_conf_t  *amcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_ase_module);

    /* every worker's counters: this one's now, the others' <= 1 s old */

    ngx_http_ase_publish(amcf);
    ngx_http_ase_totals(amcf, &totals);

    /*
     * Every number is counted at its longest; the spare byte tells a page
     * that fits from one cut short by a size that no longer matches what
     * ngx_http_ase_metric_write() writes.
     */

    size = 1;

    for (i = 0; i < sizeof(ngx_http_ase_metrics)
                    / sizeof(ngx_http_ase_metric_t); i++)
    {
        size += ngx_http_ase_metric_size(&ngx_http_ase_metrics[i]);
    }

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < sizeof(ngx_http_ase_metrics)
                    / sizeof(ngx_http_ase_metric_t); i++)
    {
        b->last = ngx_http_ase_metric_write(b->last, b->end,
                                            &ngx_http_ase_metrics[i],
                                            &totals);
    }

    if (b->last == b->end) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ase_status: page larger than its %uz bytes", size);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

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
 * The counters of the zone, and the gauges of the slots the workers
 * published.  Sync state is the host's (every worker shows the latest
 * attempt, whichever process made it): the slot with the latest attempt
 * gives it.  List sizes are those of this worker's engine or, in a worker
 * without engine, of the first slot that has one.
 */

static void
ngx_http_ase_totals(ngx_http_ase_main_conf_t *amcf, ngx_http_ase_totals_t *t)
{
    ngx_uint_t                     i, k, seen_snapshot;
    ase_stats                     *lists;
    ase_abs_state                 *latest;
    ngx_http_ase_slot_t           *slot;
    ngx_http_ase_shared_counts_t  *c;

    ngx_memzero(t, sizeof(ngx_http_ase_totals_t));

    t->store_up = 1;
    latest = NULL;
    lists = NULL;
    seen_snapshot = 0;

    if (amcf->sh == NULL) {
        return;
    }

    c = &amcf->sh->counts;

    for (k = 0; k < ASE_REASON_COUNT; k++) {
        t->allowed[k] = c->allowed[k];
        t->blocked[k] = c->blocked[k];
        t->would_block[k] = c->would_block[k];
        t->checked += t->allowed[k] + t->blocked[k];
    }

    for (k = 0; k < NGX_HTTP_ASE_SOURCES; k++) {
        t->deny_by_source[k] = c->deny_by_source[k];
    }

    t->napis = amcf->sh->napis;
    t->apis = amcf->sh->apis;
    ngx_memory_barrier();

    for (i = 0; i <= NGX_HTTP_ASE_APIS; i++) {
        for (k = 0; k < NGX_HTTP_ASE_OUTCOMES; k++) {
            t->api[i][k] = c->api[i][k];
        }
    }

    t->requests_without_engine = c->without_engine;
    t->detections = c->detections;
    t->detections_dropped = c->detections_dropped;
    t->panics = c->panics;
    t->snapshot_refusals = c->snapshot_refusals;
    t->traffic_sent = c->traffic_sent;
    t->traffic_dropped = c->traffic_dropped;

    if (amcf->engine && amcf->slot) {
        lists = &amcf->slot->stats;
    }

    for (i = 0; i < NGX_HTTP_ASE_SLOTS; i++) {
        slot = &amcf->sh->slots[i];

        if (!ngx_http_ase_slot_live(slot)) {
            continue;
        }

        if (lists == NULL && !slot->no_engine) {
            lists = &slot->stats;
        }

        if (!slot->health.store_ok) {
            t->store_up = 0;
        }

        t->fail_mode_active += slot->health.fail_mode_active ? 1 : 0;
        t->workers_without_engine += slot->no_engine ? 1 : 0;

        if (slot->abs.configured) {
            t->abs_configured = 1;

            if (latest == NULL
                || slot->abs.last_attempt_ms > latest->last_attempt_ms)
            {
                latest = &slot->abs;
            }
        }

        /* the oldest snapshot in use (0 if a worker has none) */

        if (!seen_snapshot || slot->health.snapshot_seq < t->snapshot_seq) {
            t->snapshot_seq = slot->health.snapshot_seq;
            seen_snapshot = 1;
        }

        t->snapshot_refused += slot->health.snapshot_error[0] ? 1 : 0;
        t->overlay_entries += slot->health.overlay_entries;
        t->host_role += slot->health.host_role ? 1 : 0;

        t->abs_leader += slot->abs.leader ? 1 : 0;
        t->traffic_queued += slot->abs.traffic_queued;
    }

    if (lists) {
        t->deny_entries = lists->deny_entries;
        t->allow_entries = lists->allow_entries;
    }

    if (latest) {
        t->abs_last_attempt = latest->last_attempt_ms / 1000;
        t->abs_last_success = latest->last_success_ms / 1000;
        t->abs_entries = latest->entries;
        t->abs_bad_items = latest->bad_items;
        t->abs_dropped_items = latest->dropped_items;
        t->abs_syncs = latest->syncs;
        t->abs_failures = latest->failures;
        t->abs_consecutive_failures = latest->consecutive_failures;
    }
}


/* an API name as a label value: \, " and newline escaped */

static u_char *
ngx_http_ase_label_value(u_char *p, u_char *last, u_char *s, size_t len)
{
    while (len-- && p < last) {
        switch (*s) {

        case '\\':
        case '"':
            *p++ = '\\';
            break;

        case '\n':
            *p++ = '\\';
            if (p < last) {
                *p++ = 'n';
            }
            s++;
            continue;
        }

        if (p < last) {
            *p++ = *s;
        }

        s++;
    }

    return p;
}


/* the longest text ngx_http_ase_metric_write() makes of "m" */

static size_t
ngx_http_ase_metric_size(ngx_http_ase_metric_t *m)
{
    size_t      size;
    ngx_uint_t  k;

    size = sizeof("# HELP  \n") - 1 + m->name.len + m->help.len
           + sizeof("# TYPE  \n") - 1 + m->name.len + m->type.len;

    switch (m->labels) {

    case NGX_HTTP_ASE_BY_REASON:
        for (k = 0; k < ASE_REASON_COUNT; k++) {
            size += m->name.len + sizeof("{reason=\"\"} \n") - 1
                    + ngx_http_ase_reasons[k].len + NGX_INT64_LEN;
        }

        break;

    case NGX_HTTP_ASE_BY_SOURCE:
        for (k = 0; k < NGX_HTTP_ASE_SOURCES; k++) {
            size += m->name.len + sizeof("{source=\"\"} \n") - 1
                    + ngx_http_ase_sources[k].len + NGX_INT64_LEN;
        }

        break;

    case NGX_HTTP_ASE_BY_API:

        /* every name escaped at its longest, "_other" included */

        size += (NGX_HTTP_ASE_APIS + 1) * NGX_HTTP_ASE_OUTCOMES
                * (m->name.len + sizeof("{api=\"\",outcome=\"\"} \n") - 1
                   + 2 * NGX_HTTP_ASE_API_NAME
                   + sizeof("would_block") - 1 + NGX_INT64_LEN);
        break;

    case NGX_HTTP_ASE_VERSION:
        size += m->name.len + sizeof("{version=\"\"} 1\n") - 1
                + ngx_strlen(ase_version());
        break;

    default: /* NGX_HTTP_ASE_VALUE */
        size += m->name.len + sizeof(" \n") - 1 + NGX_INT64_LEN;
        break;
    }

    return size;
}


static u_char *
ngx_http_ase_metric_write(u_char *p, u_char *last, ngx_http_ase_metric_t *m,
    ngx_http_ase_totals_t *t)
{
    uint64_t                 *value;
    ngx_str_t                *name;
    ngx_uint_t                i, k;
    ngx_http_ase_api_name_t  *api;

    value = (uint64_t *) ((u_char *) t + m->offset);

    p = ngx_slprintf(p, last, "# HELP %V %V\n# TYPE %V %V\n",
                     &m->name, &m->help, &m->name, &m->type);

    switch (m->labels) {

    case NGX_HTTP_ASE_BY_REASON:

        /* only the reasons this count can have */

        for (k = 0; k < ASE_REASON_COUNT; k++) {
            if (m->reasons & ((ngx_uint_t) 1 << k)) {
                p = ngx_slprintf(p, last, "%V{reason=\"%V\"} %uL\n",
                                 &m->name, &ngx_http_ase_reasons[k],
                                 value[k]);
            }
        }

        break;

    case NGX_HTTP_ASE_BY_SOURCE:
        for (k = 0; k < NGX_HTTP_ASE_SOURCES; k++) {
            p = ngx_slprintf(p, last, "%V{source=\"%V\"} %uL\n", &m->name,
                             &ngx_http_ase_sources[k], value[k]);
        }

        break;

    case NGX_HTTP_ASE_BY_API:

        /* the APIs seen so far, then "_other" once it counted any */

        for (i = 0; i <= NGX_HTTP_ASE_APIS; i++) {
            if (i < NGX_HTTP_ASE_APIS && i >= t->napis) {
                continue;
            }

            if (i == NGX_HTTP_ASE_APIS
                && t->api[i][0] + t->api[i][1] + t->api[i][2] == 0)
            {
                break;
            }

            for (k = 0; k < NGX_HTTP_ASE_OUTCOMES; k++) {
                p = ngx_slprintf(p, last, "%V{api=\"", &m->name);

                if (i == NGX_HTTP_ASE_APIS) {
                    name = &ngx_http_ase_other_api;
                    p = ngx_http_ase_label_value(p, last, name->data,
                                                 name->len);

                } else {
                    api = &t->apis[i];
                    p = ngx_http_ase_label_value(p, last, api->data,
                                                 api->len);
                }

                p = ngx_slprintf(p, last, "\",outcome=\"%V\"} %uL\n",
                                 &ngx_http_ase_outcomes[k], t->api[i][k]);
            }
        }

        break;

    case NGX_HTTP_ASE_VERSION:
        p = ngx_slprintf(p, last, "%V{version=\"%s\"} 1\n", &m->name,
                         ase_version());
        break;

    default: /* NGX_HTTP_ASE_VALUE */
        p = ngx_slprintf(p, last, "%V %uL\n", &m->name, *value);
        break;
    }

    return p;
}


/*
 * Publishes this worker's gauges to its slot and adds its counts to the
 * zone's counters.  A worker without engine publishes that it reaches no
 * store.  A store that cannot be opened or read is said at alert.
 */

static void
ngx_http_ase_publish(ngx_http_ase_main_conf_t *amcf)
{
    ase_stats             stats;
    ase_health            health;
    ase_abs_state         abs;
    ngx_http_ase_slot_t  *slot;

    /* the requests counted so far count whatever the engine answers */

    ngx_http_ase_flush(amcf);

    if (amcf->engine) {
        if (ase_engine_stats(amcf->engine, &stats) != ASE_OK
            || ase_abs_status(amcf->engine, &abs) != ASE_OK
            || ase_engine_health(amcf->engine, &health) != ASE_OK)
        {
            return;
        }

        /* the library's counters, as differences from the last time */

        amcf->counts.detections += stats.detections
                                   - amcf->lib_seen.detections;
        amcf->counts.detections_dropped += health.detections_dropped
                                   - amcf->lib_seen.detections_dropped;
        amcf->counts.panics += health.panics - amcf->lib_seen.panics;
        amcf->counts.snapshot_refusals += health.snapshot_refusals
                                   - amcf->lib_seen.snapshot_refusals;
        amcf->counts.traffic_sent += abs.traffic_sent
                                   - amcf->lib_seen.traffic_sent;
        amcf->counts.traffic_dropped += abs.traffic_dropped
                                   - amcf->lib_seen.traffic_dropped;

        amcf->lib_seen.detections = stats.detections;
        amcf->lib_seen.detections_dropped = health.detections_dropped;
        amcf->lib_seen.panics = health.panics;
        amcf->lib_seen.snapshot_refusals = health.snapshot_refusals;
        amcf->lib_seen.traffic_sent = abs.traffic_sent;
        amcf->lib_seen.traffic_dropped = abs.traffic_dropped;

        ngx_http_ase_store_alert(amcf, &health);

    } else {
        ngx_memzero(&stats, sizeof(ase_stats));
        ngx_memzero(&abs, sizeof(ase_abs_state));
        ngx_memzero(&health, sizeof(ase_health));
        health.fail_mode_active = 1;
    }

    /* each refused snapshot file is said, at alert, with the last reason */

    if (health.snapshot_refusals > amcf->snapshot_refusals) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "ase: %uL snapshot file(s) refused, the last: %s; "
                      "the lists in force stay until a good snapshot "
                      "replaces it (the host role rebuilds it)",
                      health.snapshot_refusals - amcf->snapshot_refusals,
                      health.snapshot_last_refusal);
        amcf->snapshot_refusals = health.snapshot_refusals;
    }

    ngx_http_ase_flush(amcf);

    if (amcf->slot == NULL) {
        ngx_http_ase_claim_slot(amcf);
    }

    slot = amcf->slot;

    if (slot == NULL) {
        return;
    }

    slot->stats = stats;
    slot->abs = abs;
    slot->health = health;
    slot->no_engine = (amcf->engine == NULL);
    slot->beat = (ngx_atomic_uint_t) ngx_time();

    /* readers in other workers see the gauges before the flag */

    ngx_memory_barrier();
    slot->published = 1;
}


/*
 * Whether a slot's gauges count: claimed, published, and published again
 * lately (its worker lives).
 */

static ngx_uint_t
ngx_http_ase_slot_live(ngx_http_ase_slot_t *slot)
{
    if (slot->pid == 0 || !slot->published) {
        return 0;
    }

    return ngx_time() - (time_t) slot->beat <= NGX_HTTP_ASE_SLOT_STALE;
}


/*
 * Says at alert that the store cannot be opened or read, with the path and
 * the reason the library gives, and what decides meanwhile: when it starts
 * and every minute while it lasts, never more often (a store that fails
 * and answers by turns, or whose reason changes, is said once a minute);
 * then once that it answers again, when it has answered for
 * NGX_HTTP_ASE_STORE_CALM.
 */

static void
ngx_http_ase_store_alert(ngx_http_ase_main_conf_t *amcf, ase_health *health)
{
    if (health->store_error[0] == '\0') {
        if (amcf->store_error[0] == '\0') {
            return;
        }

        if (amcf->store_answers == 0) {
            amcf->store_answers = ngx_current_msec ? ngx_current_msec : 1;
            return;
        }

        if (ngx_current_msec - amcf->store_answers < NGX_HTTP_ASE_STORE_CALM)
        {
            return;
        }

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "ase_config \"%V\": the state store answers again",
                      &amcf->config);
        amcf->store_error[0] = '\0';
        amcf->store_answers = 0;

        return;
    }

    amcf->store_answers = 0;

    if (amcf->store_alert_said
        && ngx_current_msec - amcf->store_alerted < NGX_HTTP_ASE_STORE_ALERT)
    {
        return;
    }

    ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                  "ase_config \"%V\": %s; %s",
                  &amcf->config, health->store_error,
                  !health->fail_mode_active
                  ? "the lists last loaded stay in force, changes made "
                    "meanwhile are not"
                  : amcf->fail_verdict.action == ASE_ACTION_ALLOW
                  ? "fail_mode open: every request that decoys and API "
                    "patterns let through is allowed"
                  : "fail_mode closed: every request that decoys and API "
                    "patterns let through is refused");

    ngx_cpystrn((u_char *) amcf->store_error, (u_char *) health->store_error,
                sizeof(amcf->store_error));
    amcf->store_alerted = ngx_current_msec;
    amcf->store_alert_said = 1;
}


/* adds this worker's counts to the zone's counters and clears them */

static void
ngx_http_ase_flush(ngx_http_ase_main_conf_t *amcf)
{
    ngx_uint_t                     i, k;
    ngx_http_ase_counts_t         *l;
    ngx_http_ase_shared_counts_t  *c;

    if (amcf->sh == NULL) {
        return;
    }

    l = &amcf->counts;
    c = &amcf->sh->counts;

#define ngx_http_ase_add(field)                                               \
    if (l->field) {                                                           \
        (void) ngx_atomic_fetch_add(&c->field, (ngx_atomic_int_t) l->field);  \
    }

    for (k = 0; k < ASE_REASON_COUNT; k++) {
        ngx_http_ase_add(allowed[k]);
        ngx_http_ase_add(blocked[k]);
        ngx_http_ase_add(would_block[k]);
    }

    for (k = 0; k < NGX_HTTP_ASE_SOURCES; k++) {
        ngx_http_ase_add(deny_by_source[k]);
    }

    for (i = 0; i <= NGX_HTTP_ASE_APIS; i++) {
        for (k = 0; k < NGX_HTTP_ASE_OUTCOMES; k++) {
            ngx_http_ase_add(api[i][k]);
        }
    }

    ngx_http_ase_add(without_engine);
    ngx_http_ase_add(detections);
    ngx_http_ase_add(detections_dropped);
    ngx_http_ase_add(panics);
    ngx_http_ase_add(snapshot_refusals);
    ngx_http_ase_add(traffic_sent);
    ngx_http_ase_add(traffic_dropped);

#undef ngx_http_ase_add

    ngx_memzero(l, sizeof(ngx_http_ase_counts_t));
}


/*
 * Takes a slot for this worker's gauges: a free one, or one whose process
 * is gone (a worker that crashed could not free its own).
 */

static void
ngx_http_ase_claim_slot(ngx_http_ase_main_conf_t *amcf)
{
    ngx_uint_t            i;
    ngx_atomic_uint_t     pid;
    ngx_http_ase_slot_t  *slot;

    if (amcf->sh == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_ASE_SLOTS; i++) {
        slot = &amcf->sh->slots[i];
        pid = slot->pid;

        /*
         * taken: by a process that lives, or by one kill() may not signal
         * (another user's, maybe a reused pid) that still publishes
         */

        if (pid != 0
            && (kill((pid_t) pid, 0) == 0
                || (ngx_errno != NGX_ESRCH && ngx_http_ase_slot_live(slot))))
        {
            continue;
        }

        if (ngx_atomic_cmp_set(&slot->pid, pid, (ngx_atomic_uint_t) ngx_pid)) {
            slot->published = 0;
            ngx_memory_barrier();
            ngx_memzero(&slot->stats, sizeof(ase_stats));
            ngx_memzero(&slot->abs, sizeof(ase_abs_state));
            ngx_memzero(&slot->health, sizeof(ase_health));
            slot->no_engine = 0;
            amcf->slot = slot;
            return;
        }
    }
}


/*
 * Publishes every second, also while the worker drains its connections
 * after a reload (its gauges stay current and its slot live): the timer
 * is cancelable, so it does not hold the exit back.
 */

static void
ngx_http_ase_stats_timer(ngx_event_t *ev)
{
    ngx_http_ase_main_conf_t  *amcf = ev->data;

    ngx_http_ase_publish(amcf);

    if (ngx_terminate) {
        return;
    }

    ngx_add_timer(ev, NGX_HTTP_ASE_STATS_INTERVAL);
}


/*
 * Drives the evented engine: each tick picks up other processes' changes,
 * moves to a newer snapshot (checked a slice per tick), writes queued
 * detections; it never waits for a lock or the network.  The engine says
 * when to come back.  A worker draining its connections after a reload
 * still decides their requests, and its engine stays registered (changes
 * wait for it): it ticks on; the timer is cancelable.
 */

static void
ngx_http_ase_tick_timer(ngx_event_t *ev)
{
    uint32_t                   next;
    ngx_http_ase_main_conf_t  *amcf = ev->data;

    next = NGX_HTTP_ASE_STATS_INTERVAL;

    if (amcf->engine && ase_engine_tick(amcf->engine, &next) != ASE_OK) {
        next = NGX_HTTP_ASE_STATS_INTERVAL;
    }

    if (ngx_terminate) {
        return;
    }

    ngx_add_timer(ev, next ? next : 1);
}


/*
 * Builds this worker's engine.  On failure the worker goes on without one
 * (see ngx_http_ase_handler) rather than exit: a worker that fails in
 * init_process is not respawned, and after a reload nginx would be left
 * without workers.  The alert is repeated when the reason changes and
 * every NGX_HTTP_ASE_RETRY_ALERT failures, not at every retry.
 */

static ngx_int_t
ngx_http_ase_engine_new(ngx_http_ase_main_conf_t *amcf, ngx_log_t *log)
{
    ase_str              path;
    ase_result           rc;
    ase_abs_state        abs;
    ase_engine_options   opts;
    char                 err[NGX_HTTP_ASE_ERR_LEN];

    path.len = amcf->config.len;
    path.data = amcf->config.data;
    err[0] = '\0';

    opts.flags = ASE_ENGINE_EVENTED;

    if (amcf->host_role == 0) {
        opts.flags |= ASE_ENGINE_NO_HOST_ROLE;
    }

    rc = ase_engine_new_ex(path, &opts, err, sizeof(err), &amcf->engine);

    if (rc != ASE_OK) {
        amcf->engine = NULL;

        if (amcf->failures % NGX_HTTP_ASE_RETRY_ALERT == 0
            || ngx_strcmp(err, amcf->error) != 0)
        {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "ase_config \"%V\": %s (%s); this worker has no "
                          "engine: fail_mode %s decides every request, "
                          "retrying every %ui s",
                          &amcf->config, err[0] ? err : "failed",
                          ase_result_str(rc),
                          amcf->fail_verdict.action == ASE_ACTION_ALLOW
                          ? "open" : "closed",
                          (ngx_uint_t) NGX_HTTP_ASE_RETRY_INTERVAL / 1000);

            ngx_cpystrn((u_char *) amcf->error, (u_char *) err,
                        sizeof(amcf->error));
        }

        amcf->failures++;

        return NGX_ERROR;
    }

    if (amcf->failures) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "ase_config \"%V\": engine built after %ui failures",
                      &amcf->config, amcf->failures);
        amcf->failures = 0;
        amcf->error[0] = '\0';

    } else if (ngx_worker == 0) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "ase %s, config \"%V\"", ase_version(), &amcf->config);
    }

    /* whether the log phase has anything to report to */

    amcf->abs_configured = 0;

    if (ase_abs_status(amcf->engine, &abs) == ASE_OK) {
        amcf->abs_configured = abs.configured;
    }

    return NGX_OK;
}


static void
ngx_http_ase_retry_timer(ngx_event_t *ev)
{
    ngx_http_ase_main_conf_t  *amcf = ev->data;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    if (ngx_http_ase_engine_new(amcf, ev->log) == NGX_OK) {
        ngx_http_ase_publish(amcf);
        return;
    }

    ngx_add_timer(ev, NGX_HTTP_ASE_RETRY_INTERVAL);
}


static ngx_int_t
ngx_http_ase_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t           *shpool;
    ngx_http_ase_main_conf_t  *amcf;

    amcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    amcf->shpool = shpool;

    if (data || shm_zone->shm.exists) {

        /*
         * reload: the previous cycle's zone, same size, keeps the counters
         * (and the slots of the workers still running)
         */

        amcf->sh = shpool->data;
        return NGX_OK;
    }

    amcf->sh = ngx_slab_calloc(shpool, sizeof(ngx_http_ase_shctx_t));
    if (amcf->sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = amcf->sh;

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
     *     amcf->sh = NULL;
     *     amcf->slot = NULL;
     *     amcf->counts = { 0 };
     *     amcf->failures = 0;
     *     amcf->error = "";
     *     amcf->store_error = "";
     */

    amcf->host_role = NGX_CONF_UNSET;

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
    conf->log_level = NGX_CONF_UNSET_UINT;
    conf->intercept_errors = NGX_CONF_UNSET;

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

    /* the access module's "access forbidden by rule" is at error */
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_ERR);
    ngx_conf_merge_value(conf->intercept_errors, prev->intercept_errors, 0);

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
     * master only reads the files: it opens no state store (whose files
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

    /*
     * Read here, where the files were just read, for a worker that cannot
     * build its engine: it may be unable to read ase.conf itself.  The
     * verdict's strings are static in the library.
     */

    rc = ase_config_fail_verdict(path, &amcf->fail_verdict);

    if (rc != ASE_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ase_config \"%V\": fail_mode: %s",
                           &amcf->config, ase_result_str(rc));
        return NGX_CONF_ERROR;
    }

    /* ASE keys of the files that have no effect here, for the operator */

    err[0] = '\0';

    if (ase_config_notice(path, err, sizeof(err)) == ASE_OK && err[0]) {
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0, "ase_config \"%V\": %s",
                           &amcf->config, err);
    }

    ngx_str_set(&name, "ase_stats");
    size = sizeof(ngx_http_ase_shctx_t) + 64 * 1024;

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
    ngx_http_ase_main_conf_t  *amcf;

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

    /* cancelable: neither timer keeps a worker from a graceful exit */

    amcf->stats_event.handler = ngx_http_ase_stats_timer;
    amcf->stats_event.data = amcf;
    amcf->stats_event.log = cycle->log;
    amcf->stats_event.cancelable = 1;

    amcf->retry_event.handler = ngx_http_ase_retry_timer;
    amcf->retry_event.data = amcf;
    amcf->retry_event.log = cycle->log;
    amcf->retry_event.cancelable = 1;

    amcf->tick_event.handler = ngx_http_ase_tick_timer;
    amcf->tick_event.data = amcf;
    amcf->tick_event.log = cycle->log;
    amcf->tick_event.cancelable = 1;

    ngx_http_ase_claim_slot(amcf);

    if (ngx_http_ase_engine_new(amcf, cycle->log) != NGX_OK) {
        ngx_add_timer(&amcf->retry_event, NGX_HTTP_ASE_RETRY_INTERVAL);
    }

    ngx_http_ase_publish(amcf);
    ngx_add_timer(&amcf->stats_event, NGX_HTTP_ASE_STATS_INTERVAL);
    ngx_add_timer(&amcf->tick_event, 1);

    return NGX_OK;
}


static void
ngx_http_ase_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_ase_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_ase_module);

    if (amcf == NULL) {
        return;
    }

    if (amcf->stats_event.timer_set) {
        ngx_del_timer(&amcf->stats_event);
    }

    if (amcf->retry_event.timer_set) {
        ngx_del_timer(&amcf->retry_event);
    }

    if (amcf->tick_event.timer_set) {
        ngx_del_timer(&amcf->tick_event);
    }

    /* what this worker counted since its last publication counts on */

    ngx_http_ase_flush(amcf);

    if (amcf->slot) {
        ngx_http_ase_publish(amcf);
        amcf->slot->published = 0;
        ngx_memory_barrier();
        amcf->slot->pid = 0;
        amcf->slot = NULL;
    }

    ase_engine_free(amcf->engine);
    amcf->engine = NULL;
}
