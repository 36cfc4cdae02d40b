/*
 * contacts-gateway: main. Reads the settings, raises the open-file limit to
 * what they need, builds the loop (upstream client, then front end), runs
 * it until SIGTERM/SIGINT, drains in-flight requests for at most
 * --shutdown-timeout, and exits 0. A bad setting exits 2 before anything
 * starts.
 */
#include <curl/curl.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cache/store.h"
#include "cache/tool.h"
#include "gateway/admin.h"
#include "gateway/config.h"
#include "gateway/front.h"
#include "gateway/log.h"
#include "gateway/startup.h"
#include "gateway/upstream.h"

#define FD_RESERVE 64     /* listener, logs, LMDB, resolver threads */
#define FLUSH_GRACE_MS 1000 /* after the deadline, time to write the 503s */

struct app {
	struct event_base *base;
	struct front *front;
	struct admin *admin; /* NULL unless --admin-listen */
	struct store *store;
	struct event *sync_timer;
	struct event *deadline;
	struct timeval drain_limit; /* --shutdown-timeout */
	int stopping;
	int aborted; /* the deadline passed: in-flight requests were answered 503 */
};

static void on_drained(void *arg)
{
	struct app *app = arg;

	cglog(CGLOG_INFO, "drained: exiting");
	event_base_loopexit(app->base, NULL);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct app *app = arg;

	struct timeval grace = {FLUSH_GRACE_MS / 1000, (FLUSH_GRACE_MS % 1000) * 1000};

	(void)fd;
	(void)what;
	if (app->aborted) { /* the 503s could not be written in time either */
		event_base_loopexit(app->base, NULL);
		return;
	}
	app->aborted = 1;
	cglog(CGLOG_WARN, "shutdown timeout: answering %zu in-flight request(s) 503",
	      front_in_flight(app->front));
	event_add(app->deadline, &grace);
	front_abort_pending(app->front); /* on_drained runs once they are written */
}

/* MDB_NOSYNC commits reach the page cache at once (a crash of the process
 * loses nothing); this makes them survive a power loss too. */
static void on_sync(evutil_socket_t fd, short what, void *arg)
{
	struct app *app = arg;

	(void)fd;
	(void)what;
	if (store_sync(app->store) != 0)
		cglog(CGLOG_WARN, "cache: sync to disk failed");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct app *app = arg;

	(void)what;
	if (app->stopping) {
		cglog(CGLOG_WARN, "second signal: stopping now");
		on_deadline(-1, 0, app);
		return;
	}
	app->stopping = 1;
	cglog(CGLOG_INFO, "%s: no new connections, draining %zu in-flight request(s)",
	      sig == SIGTERM ? "SIGTERM" : "SIGINT", front_in_flight(app->front));
	event_add(app->deadline, &app->drain_limit);
	front_drain(app->front, on_drained, app);
}

/* SIGUSR1: go offline (answer from the cache only); SIGUSR2: back online. */
static void on_offline_signal(evutil_socket_t sig, short what, void *arg)
{
	struct app *app = arg;

	(void)what;
	front_set_offline(app->front, sig == SIGUSR1);
}

/* Raises the soft open-file limit to what the settings need. */
static int ensure_fd_limit(const struct cg_config *cfg, char *err, size_t err_size)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)(cfg->max_connections + cfg->upstream_connections +
			       FD_RESERVE);

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

int main(int argc, char **argv)
{
	struct cg_config cfg;
	struct upstream_config ucfg;
	struct upstream *up = NULL;
	struct app app = {0};
	struct event *sigterm = NULL, *sigint = NULL, *sigusr1 = NULL, *sigusr2 = NULL;
	char err[CONFIG_ERR_MAX];
	char shown_url[CONFIG_URL_MAX]; /* cfg.upstream without its credential */
	int rc = 1, check_only = 0;

	if (argc > 1 && strcmp(argv[1], "cache") == 0)
		return cache_tool_main(argc - 1, argv + 1);
	config_defaults(&cfg);
	switch (config_from_args(&cfg, argc, argv, 1, err, sizeof(err))) {
	case CONFIG_HELP:
		config_usage(stdout, "contacts-gateway");
		return 0;
	case CONFIG_VERSION:
		printf("contacts-gateway %s\n", CG_VERSION);
		return 0;
	case CONFIG_ERROR:
		fprintf(stderr, "contacts-gateway: %s\n", err);
		return 2;
	case CONFIG_CHECK:
		check_only = 1;
		break;
	case CONFIG_OK:
		break;
	}
	if (admin_check(&cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		return 2;
	}
	if (ensure_fd_limit(&cfg, err, sizeof(err)) != 0 ||
	    startup_check(&cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		return 2;
	}
	cglog_set_level(cfg.log_level);
	if (check_only) {
		startup_warn(&cfg);
		printf("configuration ok\n");
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "contacts-gateway: curl_global_init failed\n");
		return 1;
	}

	{
		/* the changelist folds an add and a delete of the same event in
		 * one loop turn into nothing: fewer epoll_ctl calls per answer */
		struct event_config *ecfg = event_config_new();

		if (ecfg == NULL)
			goto out;
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
		app.base = event_base_new_with_config(ecfg);
		event_config_free(ecfg);
	}
	if (app.base == NULL)
		goto out;
	ucfg.base_url = cfg.upstream;
	ucfg.timeout_ms = cfg.upstream_timeout_ms;
	ucfg.connect_timeout_ms = cfg.connect_timeout_ms;
	ucfg.max_connections = cfg.upstream_connections;
	ucfg.max_body = cfg.max_body_bytes;
	up = upstream_new(app.base, &ucfg);
	if (up == NULL) {
		fprintf(stderr, "contacts-gateway: cannot set up the upstream client\n");
		goto out;
	}
	app.store = store_open(cfg.cache_dir, cfg.cache_size,
			       (unsigned)cfg.max_connections + 64, STORE_EXCLUSIVE, err, sizeof(err));
	if (app.store == NULL) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		rc = 2;
		goto out;
	}
	app.front = front_new(app.base, &cfg, up, app.store, err, sizeof(err));
	if (app.front == NULL) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		rc = 2; /* the listen address is busy or not ours */
		goto out;
	}
	if (cfg.admin_listen.host[0] != '\0') {
		app.admin = admin_new(app.base, &cfg, app.store, app.front, err, sizeof(err));
		if (app.admin == NULL) {
			fprintf(stderr, "contacts-gateway: %s\n", err);
			rc = 2;
			goto out;
		}
		cglog(CGLOG_INFO, "admin endpoint on %s:%u", cfg.admin_listen.host,
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
	app.drain_limit.tv_sec = cfg.shutdown_timeout_ms / 1000;
	app.drain_limit.tv_usec = (cfg.shutdown_timeout_ms % 1000) * 1000;
	{
		struct timeval every = {cfg.cache_sync_ms / 1000,
					(cfg.cache_sync_ms % 1000) * 1000};

		event_add(app.sync_timer, &every);
	}

	startup_warn(&cfg); /* once serving: a failed start stays one line */
	config_redact_url(cfg.upstream, shown_url, sizeof(shown_url));
	cglog(CGLOG_INFO, "contacts-gateway %s listening on %s:%u, upstream %s, cache %s%s",
	      CG_VERSION, cfg.listen.host, front_port(app.front), shown_url,
	      cfg.cache_dir, cfg.offline ? ", offline" : "");
	event_base_dispatch(app.base);
	rc = 0;
out:
	admin_free(app.admin);
	front_free(app.front);
	upstream_free(up);
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
