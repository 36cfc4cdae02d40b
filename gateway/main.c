/*
 * contacts-gateway: main. Reads the settings, raises the open-file limit to
 * what they need, and builds the gateway:
 *
 *   main thread: the fetch layer's loop (fetch.c: flights, admission, curl
 *   multi, the store's writes), the admin endpoint, signals, the sync timer
 *   front threads (--threads): one loop each (front.c), serving hits and
 *   handing misses to the fetch layer
 *
 * It runs until SIGTERM/SIGINT, then drains: the fronts stop accepting and
 * report once nothing is in flight (at most --shutdown-timeout; then every
 * fetch is cut short and answered 503), the fronts stop, the threads are
 * joined, everything is freed, exit 0. A bad setting exits 2 before
 * anything starts.
 */
#include <curl/curl.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <pthread.h>
#include <unistd.h>

#include "cache/lru.h"
#include "cache/store.h"
#include "cache/tool.h"
#include "gateway/admin.h"
#include "gateway/config.h"
#include "gateway/fetch.h"
#include "gateway/front.h"
#include "gateway/log.h"
#include "gateway/upstream.h"
#include "policy/check.h"

#define FD_RESERVE 64       /* listeners, logs, LMDB, eventfds, resolver threads */
#define FLUSH_GRACE_MS 1000 /* after the deadline, time to write the 503s */
#define READERS_RESERVE 64  /* LMDB reader slots for the cache tools and the writer */

struct app {
	struct event_base *base;
	struct cg_config cfg;
	struct store *store;
	struct lru *lru;
	struct upstream *up;
	struct fetcher *fetcher;
	struct chan *events; /* from the fronts */
	struct front *fronts[FRONT_THREADS_MAX];
	unsigned n_fronts;
	unsigned n_started; /* their threads run */
	unsigned n_drained, n_stopped;
	struct admin *admin; /* NULL unless --admin-listen */
	struct event *sync_timer;
	struct event *deadline;
	struct timeval drain_limit; /* --shutdown-timeout */
	int draining;
	int stopping; /* the fronts were told to stop */
	int aborted;  /* the deadline passed: in-flight requests were answered 503 */
};

static void stop_fronts(struct app *app)
{
	if (app->stopping)
		return;
	app->stopping = 1;
	fetcher_abort(app->fetcher); /* refreshes behind, anything left */
	for (unsigned i = 0; i < app->n_fronts; i++)
		front_post(app->fronts[i], front_msg_new(FRONT_STOP, i));
}

/* chan_fn: a front drained, or stopped. */
static void on_front_event(struct chan_msg *m, void *arg)
{
	struct app *app = arg;
	struct front_msg *fm = (struct front_msg *)m;

	CHECK(m->kind == MSG_FRONT);
	CHECK_OBJ_NOTNULL(fm, FRONT_MSG_MAGIC);
	if (fm->what == FRONT_DRAINED && ++app->n_drained == app->n_started) {
		cglog(CGLOG_INFO, "drained: exiting");
		stop_fronts(app);
	} else if (fm->what == FRONT_STOPPED && ++app->n_stopped == app->n_started) {
		event_base_loopexit(app->base, NULL);
	}
	front_msg_free(fm);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct app *app = arg;
	struct timeval grace = {FLUSH_GRACE_MS / 1000, (FLUSH_GRACE_MS % 1000) * 1000};

	(void)fd;
	(void)what;
	if (app->aborted) { /* the 503s could not be written in time either */
		stop_fronts(app);
		return;
	}
	app->aborted = 1;
	cglog(CGLOG_ERROR, "shutdown timeout: answering %zu in-flight upstream fetch(es) 503",
	      fetcher_flights(app->fetcher));
	event_add(app->deadline, &grace);
	fetcher_abort(app->fetcher); /* the fronts drain once they are written */
}

/* MDB_NOSYNC commits reach the page cache at once (a crash of the process
 * loses nothing); this makes them survive a power loss too. */
static void on_sync(evutil_socket_t fd, short what, void *arg)
{
	struct app *app = arg;

	(void)fd;
	(void)what;
	if (store_sync(app->store) != 0)
		cglog(CGLOG_ERROR, "cache: sync to disk failed: answers stored since the "
		      "last sync would not survive a power loss");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct app *app = arg;

	(void)what;
	if (app->draining) {
		cglog(CGLOG_WARN, "second signal: stopping now");
		on_deadline(-1, 0, app);
		return;
	}
	app->draining = 1;
	cglog(CGLOG_INFO, "%s: no new connections, draining %zu upstream fetch(es)",
	      sig == SIGTERM ? "SIGTERM" : "SIGINT", fetcher_flights(app->fetcher));
	event_add(app->deadline, &app->drain_limit);
	for (unsigned i = 0; i < app->n_fronts; i++)
		front_post(app->fronts[i], front_msg_new(FRONT_DRAIN, i));
}

/* SIGUSR1: go offline (answer from the cache only); SIGUSR2: back online. */
static void on_offline_signal(evutil_socket_t sig, short what, void *arg)
{
	struct app *app = arg;

	(void)what;
	fetcher_set_offline(app->fetcher, sig == SIGUSR1);
}

/* Raises the soft open-file limit to what the settings need. */
static int ensure_fd_limit(const struct cg_config *cfg, char *err, size_t err_size)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)(cfg->max_connections + cfg->upstream_connections +
			       FD_RESERVE + 4 * cfg->threads);

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		snprintf(err, err_size,
			 "max-connections %ld needs %llu open files but the hard limit is %llu",
			 cfg->max_connections, (unsigned long long)need,
			 (unsigned long long)rl.rlim_max);
		return -1;
	}
	rl.rlim_cur = need;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
		snprintf(err, err_size, "cannot raise the open-file limit to %llu",
			 (unsigned long long)need);
		return -1;
	}
	return 0;
}

/* Builds the fronts: the first picks the port (when 0), the others share
 * it. Starts their threads with every signal blocked (the main loop takes
 * them). */
static int start_fronts(struct app *app, char *err, size_t err_size)
{
	struct front_shared sh = {&app->cfg, app->store, app->lru, app->fetcher, app->events};
	unsigned port = app->cfg.listen.port;
	sigset_t all, old;
	int rc = 0;

	for (unsigned i = 0; i < (unsigned)app->cfg.threads; i++) {
		app->fronts[i] = front_new(&sh, i, port, err, err_size);
		if (app->fronts[i] == NULL)
			return -1;
		app->n_fronts++;
		port = front_port(app->fronts[i]);
	}
	sigfillset(&all);
	AZ(pthread_sigmask(SIG_SETMASK, &all, &old));
	for (unsigned i = 0; i < app->n_fronts && rc == 0; i++)
		if ((rc = front_start(app->fronts[i], err, err_size)) == 0)
			app->n_started++;
	AZ(pthread_sigmask(SIG_SETMASK, &old, NULL));
	return rc;
}

int main(int argc, char **argv)
{
	struct app app;
	struct upstream_config ucfg;
	struct event *sigterm = NULL, *sigint = NULL, *sigusr1 = NULL, *sigusr2 = NULL;
	char err[CONFIG_ERR_MAX];
	int rc = 1;

	if (argc > 1 && strcmp(argv[1], "cache") == 0)
		return cache_tool_main(argc - 1, argv + 1);
	memset(&app, 0, sizeof(app));
	config_defaults(&app.cfg);
	switch (config_from_args(&app.cfg, argc, argv, 1, err, sizeof(err))) {
	case CONFIG_HELP:
		config_usage(stdout, "contacts-gateway");
		return 0;
	case CONFIG_VERSION:
		printf("contacts-gateway %s\n", CG_VERSION);
		return 0;
	case CONFIG_ERROR:
		fprintf(stderr, "contacts-gateway: %s\n", err);
		return 2;
	case CONFIG_OK:
		break;
	}
	if (app.cfg.threads == 0) {
		long cores = sysconf(_SC_NPROCESSORS_ONLN);

		app.cfg.threads = cores < 1 ? 1 : cores > FRONT_THREADS_MAX ? FRONT_THREADS_MAX
									   : cores;
	}
	if (admin_check(&app.cfg, err, sizeof(err)) != 0 ||
	    ensure_fd_limit(&app.cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		return 2;
	}
	cglog_set_level(app.cfg.log_level);
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "contacts-gateway: curl_global_init failed\n");
		return 1;
	}
	app.base = event_base_new();
	if (app.base == NULL)
		goto out;
	ucfg.base_url = app.cfg.upstream;
	ucfg.timeout_ms = app.cfg.upstream_timeout_ms;
	ucfg.connect_timeout_ms = app.cfg.connect_timeout_ms;
	ucfg.max_connections = app.cfg.upstream_connections;
	ucfg.max_body = app.cfg.max_body_bytes;
	app.up = upstream_new(app.base, &ucfg);
	if (app.up == NULL) {
		fprintf(stderr, "contacts-gateway: cannot set up the upstream client\n");
		goto out;
	}
	app.store = store_open(app.cfg.cache_dir, app.cfg.cache_size,
			       (unsigned)(app.cfg.max_connections + READERS_RESERVE +
					  app.cfg.threads * (STORE_READER_SPARES + 1)),
			       STORE_EXCLUSIVE, err, sizeof(err));
	if (app.store == NULL) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		rc = 2;
		goto out;
	}
	app.lru = lru_new();
	app.fetcher = fetcher_new(app.base, &app.cfg, app.up, app.store, app.lru, err,
				  sizeof(err));
	app.events = chan_new(app.base, SIZE_MAX, on_front_event, &app);
	if (app.fetcher == NULL || app.events == NULL) {
		fprintf(stderr, "contacts-gateway: %s\n",
			app.fetcher ? "cannot make the front loops' queue" : err);
		goto out;
	}
	if (start_fronts(&app, err, sizeof(err)) != 0) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		goto out;
	}
	if (app.cfg.admin_listen.host[0] != '\0') {
		app.admin = admin_new(app.base, &app.cfg, app.store, app.fetcher, err,
				      sizeof(err));
		if (app.admin == NULL) {
			fprintf(stderr, "contacts-gateway: %s\n", err);
			goto out;
		}
		cglog(CGLOG_INFO, "admin endpoint on %s:%u", app.cfg.admin_listen.host,
		      admin_port(app.admin));
	}
	sigterm = evsignal_new(app.base, SIGTERM, on_signal, &app);
	sigint = evsignal_new(app.base, SIGINT, on_signal, &app);
	sigusr1 = evsignal_new(app.base, SIGUSR1, on_offline_signal, &app);
	sigusr2 = evsignal_new(app.base, SIGUSR2, on_offline_signal, &app);
	app.deadline = evtimer_new(app.base, on_deadline, &app);
	app.sync_timer = event_new(app.base, -1, EV_PERSIST, on_sync, &app);
	if (sigterm == NULL || sigint == NULL || sigusr1 == NULL || sigusr2 == NULL ||
	    app.deadline == NULL || app.sync_timer == NULL ||
	    event_add(sigterm, NULL) != 0 || event_add(sigint, NULL) != 0 ||
	    event_add(sigusr1, NULL) != 0 || event_add(sigusr2, NULL) != 0)
		goto out;
	app.drain_limit.tv_sec = app.cfg.shutdown_timeout_ms / 1000;
	app.drain_limit.tv_usec = (app.cfg.shutdown_timeout_ms % 1000) * 1000;
	{
		struct timeval every = {app.cfg.cache_sync_ms / 1000,
					(app.cfg.cache_sync_ms % 1000) * 1000};

		event_add(app.sync_timer, &every);
	}

	cglog(CGLOG_INFO, "contacts-gateway %s listening on %s:%u, upstream %s, cache %s, "
	      "%ld front loop(s)%s", CG_VERSION, app.cfg.listen.host,
	      front_port(app.fronts[0]), app.cfg.upstream, app.cfg.cache_dir,
	      app.cfg.threads, fetcher_offline(app.fetcher, 0) ? ", offline" : "");
	event_base_dispatch(app.base);
	rc = 0;
out:
	if (rc != 0 && app.n_started > 0) {
		/* a start that failed half-way: stop the fronts that run */
		stop_fronts(&app);
		while (app.n_stopped < app.n_started)
			event_base_loop(app.base, EVLOOP_ONCE);
	}
	for (unsigned i = 0; i < app.n_fronts; i++)
		front_free(app.fronts[i]); /* joins */
	admin_free(app.admin);
	fetcher_free(app.fetcher);
	chan_free(app.events);
	upstream_free(app.up);
	lru_free(app.lru);
	store_close(app.store); /* syncs */
	if (app.sync_timer)
		event_free(app.sync_timer);
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	if (sigusr1)
		event_free(sigusr1);
	if (sigusr2)
		event_free(sigusr2);
	if (app.deadline)
		event_free(app.deadline);
	if (app.base)
		event_base_free(app.base);
	curl_global_cleanup();
	return rc;
}
