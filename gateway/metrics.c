/*
 * metrics: see metrics.h. The exposition follows Prometheus' text format
 * 0.0.4: one # HELP and # TYPE per family, series with their labels,
 * histograms as cumulative _bucket{le} series then _sum and _count.
 */
#include "gateway/metrics.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache/derived.h"
#include "policy/check.h"

/* Upper bounds of the duration buckets, seconds (then +Inf). */
static const double bucket_le[METRICS_BUCKETS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};

static const char *const cache_names[MC_N] = {
	"hit", "stale", "miss", "collapsed", "bypass", "derived", "none",
};

_Static_assert(METRICS_DERIVE_REASONS >= DERIVED_REASONS, "derive reasons fit");

static const char *const refusal_names[MR_N] = {
	"rate", "queue_full", "queue_timeout", "vendor_429", "breaker", "offline",
	"caller_quota", "new_key_rate", "client_rate", "unauthorized",
};

static const char *const upfail_names[MU_N] = {
	"timeout", "refused", "reset", "tls", "dns", "truncated", "too_big",
	"malformed", "invalid", "failed",
};

const char *metrics_cache_name(enum metrics_cache c)
{
	return c < MC_N ? cache_names[c] : "none";
}

struct metrics *metrics_new(unsigned n_fronts, size_t max_callers, const char *instance)
{
	struct metrics *m = calloc(1, sizeof(*m));
	struct timespec ts;

	AN(m);
	CHECK(n_fronts <= METRICS_FRONTS_MAX);
	m->n_fronts = n_fronts;
	for (unsigned i = 0; i < n_fronts; i++) {
		m->fronts[i] = calloc(1, sizeof(*m->fronts[i]));
		AN(m->fronts[i]);
	}
	if (max_callers > METRICS_CALLERS_MAX)
		max_callers = METRICS_CALLERS_MAX;
	m->max_callers = max_callers;
	m->callers = calloc(max_callers ? max_callers : 1, sizeof(*m->callers));
	AN(m->callers);
	AZ(pthread_mutex_init(&m->callers_lock, NULL));
	snprintf(m->other.name, sizeof(m->other.name), "other");
	metrics_sanitise(m->instance, sizeof(m->instance), instance);
	clock_gettime(CLOCK_REALTIME, &ts);
	m->start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	return m;
}

void metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	for (unsigned i = 0; i < m->n_fronts; i++)
		free(m->fronts[i]);
	pthread_mutex_destroy(&m->callers_lock);
	free(m->callers);
	free(m);
}

void metrics_observe(struct metrics_hist *h, uint64_t us)
{
	double s = (double)us / 1e6;

	for (size_t i = 0; i < METRICS_BUCKETS; i++) {
		if (s <= bucket_le[i]) {
			metrics_add(&h->buckets[i], 1);
			break;
		}
	}
	metrics_add(&h->count, 1);
	metrics_add(&h->sum_us, us);
}

static size_t status_slot(int status)
{
	if (status < METRICS_STATUS_MIN || status > METRICS_STATUS_MAX)
		status = METRICS_STATUS_MAX;
	return (size_t)(status - METRICS_STATUS_MIN);
}

void metrics_request(struct metrics_front *fr, int status, enum metrics_cache cache,
		     uint64_t us)
{
	metrics_add(&fr->requests[status_slot(status)][cache], 1);
	metrics_observe(&fr->duration[cache], us);
}

size_t metrics_sanitise(char *out, size_t size, const char *in)
{
	size_t n = 0;

	CHECK(size > 0);
	for (; in && *in && n + 1 < size && n < METRICS_CALLER_LEN; in++) {
		unsigned char c = (unsigned char)*in;
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			 (c >= '0' && c <= '9') || strchr("._:/-", c) != NULL;

		out[n++] = ok ? (char)c : '_';
	}
	out[n] = '\0';
	return n;
}

/* The caller's slot: found among the published ones, else made (under the
 * lock) while there is room, else "other". */
static struct metrics_caller *caller_slot(struct metrics *m, const char *name)
{
	size_t n = atomic_load_explicit(&m->n_callers, memory_order_acquire);
	struct metrics_caller *c = NULL;

	for (size_t i = 0; i < n; i++)
		if (strcmp(m->callers[i].name, name) == 0)
			return &m->callers[i];
	if (n >= m->max_callers)
		return &m->other;
	AZ(pthread_mutex_lock(&m->callers_lock));
	n = atomic_load_explicit(&m->n_callers, memory_order_relaxed);
	for (size_t i = 0; i < n && c == NULL; i++)
		if (strcmp(m->callers[i].name, name) == 0)
			c = &m->callers[i];
	if (c == NULL && n < m->max_callers) {
		c = &m->callers[n];
		snprintf(c->name, sizeof(c->name), "%s", name);
		/* release: a reader that sees the count sees the name */
		atomic_store_explicit(&m->n_callers, n + 1, memory_order_release);
	}
	AZ(pthread_mutex_unlock(&m->callers_lock));
	return c ? c : &m->other;
}

void metrics_caller(struct metrics *m, const char *raw, enum metrics_cache cache)
{
	char name[METRICS_CALLER_LEN + 1];

	if (metrics_sanitise(name, sizeof(name), raw) == 0)
		return;
	atomic_fetch_add_explicit(&caller_slot(m, name)->requests[cache], 1,
				  memory_order_relaxed);
}

void metrics_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

void metrics_set(_Atomic int64_t *g, int64_t v)
{
	atomic_store_explicit(g, v, memory_order_relaxed);
}

int64_t metrics_gauge_get(_Atomic int64_t *g)
{
	return atomic_load_explicit(g, memory_order_relaxed);
}

static uint64_t load(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

static int64_t load_g(_Atomic int64_t *g)
{
	return atomic_load_explicit(g, memory_order_relaxed);
}

static void family(struct evbuffer *out, const char *name, const char *type,
		   const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gauge(struct evbuffer *out, const char *name, const char *help, double v)
{
	family(out, name, "gauge", help);
	evbuffer_add_printf(out, "%s %.17g\n", name, v);
}

/* A histogram's series: buckets summed from `n` blocks. */
static void histogram(struct evbuffer *out, const char *name, const char *labels,
		      struct metrics_hist *const *h, size_t n)
{
	uint64_t cum = 0, count = 0, sum = 0;
	const char *sep = labels[0] ? "," : "";

	for (size_t b = 0; b < METRICS_BUCKETS; b++) {
		for (size_t i = 0; i < n; i++)
			cum += load(&h[i]->buckets[b]);
		evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name, labels,
				    sep, bucket_le[b], cum);
	}
	for (size_t i = 0; i < n; i++) {
		count += load(&h[i]->count);
		sum += load(&h[i]->sum_us);
	}
	evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep,
			    count);
	evbuffer_add_printf(out, "%s_sum%s%s%s %.6f\n", name, labels[0] ? "{" : "", labels,
			    labels[0] ? "}" : "", (double)sum / 1e6);
	evbuffer_add_printf(out, "%s_count%s%s%s %" PRIu64 "\n", name, labels[0] ? "{" : "",
			    labels, labels[0] ? "}" : "", count);
}

static double resident_bytes(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
		resident = 0;
	fclose(f);
	return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

void metrics_write(struct metrics *m, struct evbuffer *out)
{
	struct metrics_fetch *fx = &m->fetch;
	struct metrics_hist *hs[METRICS_FRONTS_MAX];
	size_t n_callers;

	family(out, "contacts_gateway_requests_total", "counter",
	       "Contacts requests answered, by HTTP status sent and cache outcome.");
	for (size_t s = 0; s < METRICS_STATUSES; s++) {
		for (int c = 0; c < MC_N; c++) {
			uint64_t v = 0;

			for (unsigned i = 0; i < m->n_fronts; i++)
				v += load(&m->fronts[i]->requests[s][c]);
			if (v)
				evbuffer_add_printf(out, "contacts_gateway_requests_total{code=\"%zu\","
						    "cache=\"%s\"} %" PRIu64 "\n",
						    s + METRICS_STATUS_MIN, cache_names[c], v);
		}
	}
	family(out, "contacts_gateway_request_duration_seconds", "histogram",
	       "Time from a request's head to its answer, by cache outcome.");
	for (int c = 0; c < MC_N; c++) {
		char labels[32];

		for (unsigned i = 0; i < m->n_fronts; i++)
			hs[i] = &m->fronts[i]->duration[c];
		snprintf(labels, sizeof(labels), "cache=\"%s\"", cache_names[c]);
		histogram(out, "contacts_gateway_request_duration_seconds", labels, hs,
			  m->n_fronts);
	}
	family(out, "contacts_gateway_upstream_requests_total", "counter",
	       "Requests sent to the vendor (retries included), by its status or the failure.");
	for (size_t s = 0; s < METRICS_STATUSES; s++) {
		uint64_t v = load(&fx->upstream[s]);

		if (v)
			evbuffer_add_printf(out, "contacts_gateway_upstream_requests_total{code=\"%zu\"}"
					    " %" PRIu64 "\n", s + METRICS_STATUS_MIN, v);
	}
	for (int f = 0; f < MU_N; f++) {
		uint64_t v = load(&fx->upstream_failed[f]);

		if (v)
			evbuffer_add_printf(out, "contacts_gateway_upstream_requests_total{code=\"%s\"}"
					    " %" PRIu64 "\n", upfail_names[f], v);
	}
	family(out, "contacts_gateway_upstream_duration_seconds", "histogram",
	       "Time an upstream exchange took.");
	hs[0] = &fx->upstream_duration;
	histogram(out, "contacts_gateway_upstream_duration_seconds", "", hs, 1);
	family(out, "contacts_gateway_upstream_refusals_total", "counter",
	       "Fetches not sent to the vendor, by reason.");
	for (int r = 0; r < MR_N; r++)
		evbuffer_add_printf(out, "contacts_gateway_upstream_refusals_total{reason=\"%s\"} %"
				    PRIu64 "\n", refusal_names[r], load(&fx->refusals[r]));
	gauge(out, "contacts_gateway_queue_waiting", "Fetches waiting for an upstream slot.",
	      (double)load_g(&fx->queue_waiting));
	gauge(out, "contacts_gateway_upstream_in_flight", "Upstream requests in progress.",
	      (double)load_g(&fx->in_flight));
	{
		int64_t conns = 0;

		for (unsigned i = 0; i < m->n_fronts; i++)
			conns += load_g(&m->fronts[i]->connections);
		gauge(out, "contacts_gateway_connections", "Client connections open.",
		      (double)conns);
	}
	gauge(out, "contacts_gateway_cache_entries", "Answers stored (read once a second).",
	      (double)load_g(&fx->cache_entries));
	gauge(out, "contacts_gateway_cache_bytes",
	      "Bytes the cache map uses (read once a second).", (double)load_g(&fx->cache_bytes));
	gauge(out, "contacts_gateway_cache_map_bytes", "The cache map's size in bytes.",
	      (double)load_g(&fx->cache_map_bytes));
	family(out, "contacts_gateway_cache_evictions_total", "counter",
	       "Entries evicted to make room.");
	evbuffer_add_printf(out, "contacts_gateway_cache_evictions_total %" PRIu64 "\n",
			    load(&fx->evictions));
	family(out, "contacts_gateway_derived_total", "counter",
	       "Misses answered from another stored answer (--derive), by rule.");
	for (unsigned r = 0; r < DERIVE_RULES_N; r++)
		evbuffer_add_printf(out, "contacts_gateway_derived_total{rule=\"%s\"} %" PRIu64
				    "\n", derive_rule_name((enum derive_rule)(1u << r)),
				    load(&fx->derived[r]));
	family(out, "contacts_gateway_widened_total", "counter",
	       "Misses asked upstream as a wider page (--widen-pages).");
	evbuffer_add_printf(out, "contacts_gateway_widened_total %" PRIu64 "\n",
			    load(&fx->widened));
	family(out, "contacts_gateway_derive_misses_total", "counter",
	       "Misses --derive could not answer, by reason (then asked upstream).");
	for (int why = 1; why < DERIVED_REASONS; why++)
		evbuffer_add_printf(out, "contacts_gateway_derive_misses_total{reason=\"%s\"} %"
				    PRIu64 "\n", deriver_reason_name(why),
				    load(&fx->derive_missed[why]));
	{
		uint64_t corrupt = 0;

		for (unsigned i = 0; i < m->n_fronts; i++)
			corrupt += load(&m->fronts[i]->corrupt);
		family(out, "contacts_gateway_cache_corrupt_total", "counter",
		       "Stored records that failed their checks (never served).");
		evbuffer_add_printf(out, "contacts_gateway_cache_corrupt_total %" PRIu64 "\n",
				    corrupt);
	}
	gauge(out, "contacts_gateway_breaker_open", "1 while the circuit breaker is open.",
	      (double)load_g(&fx->breaker_open));
	gauge(out, "contacts_gateway_offline", "1 while the gateway is offline.",
	      (double)load_g(&fx->offline));
	gauge(out, "contacts_gateway_keys_blocked",
	      "API keys cooling down after a vendor 429.", (double)load_g(&fx->keys_blocked));
	family(out, "contacts_gateway_reload_failures_total", "counter",
	       "Reloads refused (a config that did not parse or validate).");
	evbuffer_add_printf(out, "contacts_gateway_reload_failures_total %" PRIu64 "\n",
			    load(&fx->reload_failures));
	n_callers = atomic_load_explicit(&m->n_callers, memory_order_acquire);
	if (m->max_callers > 0) {
		family(out, "contacts_gateway_caller_requests_total", "counter",
		       "Contacts requests by caller (--caller-header) and cache outcome.");
		for (size_t i = 0; i <= n_callers; i++) {
			struct metrics_caller *c = i < n_callers ? &m->callers[i] : &m->other;

			for (int k = 0; k < MC_N; k++) {
				uint64_t v = load(&c->requests[k]);

				if (v)
					evbuffer_add_printf(out, "contacts_gateway_caller_requests_total"
							    "{caller=\"%s\",cache=\"%s\"} %" PRIu64
							    "\n", c->name, cache_names[k], v);
			}
		}
	}
	family(out, "contacts_gateway_build_info", "gauge", "The gateway's version.");
	if (m->instance[0])
		evbuffer_add_printf(out, "contacts_gateway_build_info{version=\"%s\",instance=\"%s\"} 1\n",
				    CG_VERSION, m->instance);
	else
		evbuffer_add_printf(out, "contacts_gateway_build_info{version=\"%s\"} 1\n",
				    CG_VERSION);
	gauge(out, "process_start_time_seconds", "Start time of the process, Unix seconds.",
	      m->start_time);
	gauge(out, "process_resident_memory_bytes", "Resident memory in bytes.",
	      resident_bytes());
}
