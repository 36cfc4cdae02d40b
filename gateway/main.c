/*
 * contacts-gateway: main. Reads the settings, raises the open-file limit to
 * what they need, and builds the gateway:
 *
 *   main thread: the fetch layer's loop (fetch.c: flights, admission, curl
 *   multi, the store's writes), the admin endpoint, signals, the sync timer,
 *   systemd's notifications
 *   front threads (--threads): one loop each (front.c), serving hits and
 *   handing misses to the fetch layer
 *
 * Signals: SIGTERM/SIGINT drain (the fronts stop accepting and report once
 * nothing is in flight, at most --shutdown-timeout; then every fetch is cut
 * short and answered 503), then everything stops and exits 0. SIGHUP
 * rereads the config file (reload below); SIGUSR1 reopens the logs (as
 * nginx); SIGRTMIN+1 / SIGRTMIN+2 switch offline on / off (SIGUSR1 and
 * SIGUSR2 did before; logrotate-style tooling sends SIGUSR1). A bad setting
 * exits 2 before anything starts.
 *
 * Reload. The file given by --config is read again over the defaults, the
 * command-line flags applied over it again, as at start. A config that does
 * not parse or validate is refused whole (the exact error logged, the
 * failure counted, the running settings kept). Settings that cannot change
 * without a restart (listen, cache-dir, cache-size, threads, admin-listen)
 * keep their running values, named in one warning. The rest apply to what
 * starts from now on: the fetch layer and the upstream client at once, each
 * front loop when its message arrives; requests in flight finish on the
 * settings they started with. A settings struct is freed once every front
 * has moved past it.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/event.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "cache/lru.h"
#include "cache/store.h"
#include "cache/tool.h"
#include "gateway/admin.h"
#include "gateway/config.h"
#include "gateway/fetch.h"
#include "gateway/front.h"
#include "gateway/handover.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/startup.h"
#include "gateway/upstream.h"
#include "policy/check.h"

#define FD_RESERVE 64       /* logs, LMDB, resolver threads, control sockets */
#define FLUSH_GRACE_MS 1000 /* after the deadline, time to write the 503s */
#define READERS_RESERVE 64  /* LMDB reader slots for the cache tools and the writer */
#define RETIRED_MAX 16      /* settings kept until every front moved past them */

struct app {
	struct event_base *base;
	int argc;
	char **argv;
	struct cg_config *cfg;                 /* the settings in force */
	struct cg_config *retired[RETIRED_MAX]; /* older ones, until acknowledged */
	size_t n_retired;
	unsigned acks_due;                     /* FRONT_CONFIGURED still to come */
	unsigned long reload_failures;
	struct store *store;
	struct lru *lru;
	struct upstream *up;
	struct fetcher *fetcher;
	struct chan *events; /* from the fronts */
	struct metrics *metrics;
	int access_fd;       /* the access log (-1: none); reopened by dup2 */
	struct front *fronts[FRONT_THREADS_MAX];
	unsigned n_fronts;
	unsigned n_started; /* their threads run */
	unsigned n_drained, n_stopped;
	int listen_fds[FRONT_THREADS_MAX]; /* inherited: systemd's (LISTEN_FDS) or a handover's */
	size_t n_listen_fds;
	const char *listen_from; /* "systemd", "a handover", or NULL */
	struct admin *admin; /* NULL unless --admin-listen */
	struct handover *handover; /* offering our sockets to a successor */
	atomic_long conns_total;   /* client connections open on every front loop */
	struct event *sync_timer;
	struct event *watchdog;
	struct timeval watchdog_every;
	struct event *deadline;
	struct event *signals[6];
	int draining;
	int sync_failed; /* said once */
	int stopping; /* the fronts were told to stop */
	int aborted;  /* the deadline passed: in-flight requests were answered 503 */
};

/* systemd's notification socket (NOTIFY_SOCKET), when there is one:
 * sd_notify does nothing otherwise. */
static void notify(const char *state)
{
	sd_notify(0, state);
}

static void ucfg_of(const struct cg_config *cfg, struct upstream_config *u)
{
	memset(u, 0, sizeof(*u));
	u->base_url = cfg->upstream;
	u->timeout_ms = cfg->upstream_timeout_ms;
	u->connect_timeout_ms = cfg->connect_timeout_ms;
	u->max_connections = cfg->upstream_connections;
	u->max_body = cfg->max_body_bytes;
	u->ca_file = cfg->upstream_ca_file;
}

static void stop_fronts(struct app *app)
{
	if (app->stopping)
		return;
	app->stopping = 1;
	fetcher_abort(app->fetcher); /* refreshes behind, anything left */
	for (unsigned i = 0; i < app->n_fronts; i++)
		front_post(app->fronts[i], front_msg_new(FRONT_STOP, i));
}

static void free_retired(struct app *app)
{
	for (size_t i = 0; i < app->n_retired; i++)
		free(app->retired[i]);
	app->n_retired = 0;
}

/* chan_fn: a front drained, stopped, or took new settings. */
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
	} else if (fm->what == FRONT_CONFIGURED && app->acks_due > 0 &&
		   --app->acks_due == 0) {
		free_retired(app);
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
	if (store_sync(app->store) == 0) {
		app->sync_failed = 0;
	} else if (!app->sync_failed) {
		app->sync_failed = 1; /* said once per spell: each sync would fail */
		cglog(CGLOG_ERROR, "cache: sync to disk failed: %s; answers stored since the "
		      "last sync would not survive a power loss", store_last_error(app->store));
	}
}

/* systemd's watchdog: alive only if every front loop ticked lately, so a
 * wedged loop gets the service restarted. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	struct app *app = arg;
	int64_t limit = (int64_t)app->watchdog_every.tv_sec * 2000 +
			app->watchdog_every.tv_usec / 500;
	struct timespec ts;
	int64_t now;

	(void)fd;
	(void)what;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	for (unsigned i = 0; i < app->n_started; i++) {
		if (now - front_heartbeat(app->fronts[i]) > limit) {
			cglog(CGLOG_ERROR, "front loop %u has not ticked for %lld ms: not "
			      "telling systemd's watchdog we are alive", i,
			      (long long)(now - front_heartbeat(app->fronts[i])));
			return;
		}
	}
	notify("WATCHDOG=1");
}

static void set_timer(struct event *ev, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	event_add(ev, &tv);
}

/*
 * Copies the settings that cannot change without a restart from `run` into
 * `next`, naming those that differed in `out` (comma-separated, "" if none).
 */
static void keep_fixed(const struct cg_config *run, struct cg_config *next, char *out,
		       size_t size)
{
	size_t n = 0;

	out[0] = '\0';
#define KEEP(field, name, differ)                                                     \
	do {                                                                          \
		if (differ)                                                           \
			n += (size_t)snprintf(out + n, n < size ? size - n : 0, "%s%s",     \
					      n ? ", " : "", name);                  \
		memcpy(&next->field, &run->field, sizeof(run->field));                \
	} while (0)
	KEEP(listen, "listen", strcmp(run->listen.host, next->listen.host) != 0 ||
				       run->listen.port != next->listen.port);
	KEEP(cache_dir, "cache-dir", strcmp(run->cache_dir, next->cache_dir) != 0);
	KEEP(cache_size, "cache-size", run->cache_size != next->cache_size);
	KEEP(threads, "threads", next->threads != 0 && run->threads != next->threads);
	KEEP(access_log, "access-log", strcmp(run->access_log, next->access_log) != 0);
	KEEP(max_callers, "max-callers", run->max_callers != next->max_callers);
	KEEP(instance_name, "instance-name", strcmp(run->instance_name, next->instance_name) != 0);
	KEEP(admin_listen, "admin-listen",
	     strcmp(run->admin_listen.host, next->admin_listen.host) != 0 ||
		     run->admin_listen.port != next->admin_listen.port);
#undef KEEP
	(void)0;
}

/* Opens the access log at `path` ("-": a copy of stdout). -1 with a
 * message in err when it cannot. */
static int open_access_log(const char *path, char *err, size_t err_size)
{
	int fd = strcmp(path, "-") == 0 ? fcntl(1, F_DUPFD_CLOEXEC, 3)
					: open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
					       0640);

	if (fd < 0)
		snprintf(err, err_size, "access-log: %.400s: %s", path, strerror(errno));
	return fd;
}

/* Log rotation: the access log's path opened again, put in place of the
 * old file under the same descriptor (dup2: the loops keep writing to it,
 * each write going to the new file from then on). */
static void reopen_logs(struct app *app)
{
	char err[CONFIG_ERR_MAX];
	int fd;

	if (app->access_fd < 0 || strcmp(app->cfg->access_log, "-") == 0)
		return;
	if ((fd = open_access_log(app->cfg->access_log, err, sizeof(err))) < 0) {
		cglog(CGLOG_ERROR, "%s; still writing to the file open before", err);
		return;
	}
	if (dup2(fd, app->access_fd) < 0)
		cglog(CGLOG_ERROR, "access-log: cannot switch to the reopened file: %s",
		      strerror(errno));
	close(fd);
}

/* SIGHUP: see the file comment. */
static void reload(struct app *app)
{
	struct cg_config *next = malloc(sizeof(*next));
	struct upstream_config u;
	char err[CONFIG_ERR_MAX], kept[256];
	struct timespec ts;
	char state[64];

	AN(next);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000 + (unsigned long long)ts.tv_nsec / 1000);
	notify(state);
	config_defaults(next);
	kept[0] = '\0';
	if (config_from_args(next, app->argc, app->argv, 1, err, sizeof(err)) != CONFIG_OK ||
	    (keep_fixed(app->cfg, next, kept, sizeof(kept)),
	     admin_check(next, err, sizeof(err)) != 0)) {
		/* admin_check after keep_fixed: the running admin endpoint's
		 * address with the new token */
		app->reload_failures++;
		metrics_add(&app->metrics->fetch.reload_failures, 1);
		cglog(CGLOG_ERROR, "reload: %s; keeping the running settings (%lu failed "
		      "reload(s))", err, app->reload_failures);
		free(next);
		notify("READY=1");
		return;
	}
	if (kept[0])
		cglog(CGLOG_WARN, "reload: %s cannot change without a restart; keeping the "
		      "running value(s)", kept);
	if (fetcher_set_config(app->fetcher, next, err, sizeof(err)) != 0) {
		app->reload_failures++;
		metrics_add(&app->metrics->fetch.reload_failures, 1);
		cglog(CGLOG_ERROR, "reload: %s; keeping the running settings", err);
		free(next);
		notify("READY=1");
		return;
	}
	ucfg_of(next, &u);
	upstream_set_config(app->up, &u);
	cglog_set_level(next->log_level);
	cglog_set_json(next->log_json);
	if (next->offline != app->cfg->offline)
		fetcher_set_offline(app->fetcher, next->offline, "a reload of --offline");
	if (app->admin)
		admin_set_config(app->admin, next);
	if (next->cache_sync_ms != app->cfg->cache_sync_ms)
		set_timer(app->sync_timer, next->cache_sync_ms);
	if (app->n_retired == RETIRED_MAX) /* fronts that never answer: leak-free anyway */
		free(app->retired[--app->n_retired]);
	app->retired[app->n_retired++] = app->cfg;
	app->cfg = next;
	for (unsigned i = 0; i < app->n_started; i++) {
		struct front_msg *m = front_msg_new(FRONT_CONFIG, i);

		m->cfg = next;
		front_post(app->fronts[i], m);
		app->acks_due++;
	}
	cglog(CGLOG_INFO, "reload: settings from %s applied", next->config_path);
	notify("READY=1");
}

/* Stops accepting everywhere and drains (SIGTERM, SIGINT, a handover). */
static void begin_drain(struct app *app, const char *why)
{
	if (app->draining)
		return;
	app->draining = 1;
	notify("STOPPING=1");
	cglog(CGLOG_INFO, "%s: no new connections, draining %zu upstream fetch(es)", why,
	      fetcher_flights(app->fetcher));
	set_timer(app->deadline, app->cfg->shutdown_timeout_ms);
	for (unsigned i = 0; i < app->n_fronts; i++)
		front_post(app->fronts[i], front_msg_new(FRONT_DRAIN, i));
}

/* A successor took our listening sockets: drain and go. */
static void on_handed_over(void *arg)
{
	begin_drain(arg, "handover");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct app *app = arg;

	(void)what;
	if (sig == SIGHUP) {
		if (app->cfg->config_path[0] == '\0') {
			cglog(CGLOG_WARN, "SIGHUP: no --config file to read again; nothing changed");
			return;
		}
		if (!app->draining)
			reload(app);
		reopen_logs(app);
		return;
	}
	if (sig == SIGUSR1) {
		/* the error log is stderr (journald, a pipe): nothing to reopen */
		reopen_logs(app);
		cglog(CGLOG_INFO, "SIGUSR1: logs reopened");
		return;
	}
	if (sig == SIGUSR2) {
		cglog(CGLOG_WARN, "SIGUSR2: ignored (offline is now SIGRTMIN+1 / SIGRTMIN+2 "
		      "or the admin endpoint)");
		return;
	}
	if (sig == SIGRTMIN + 1 || sig == SIGRTMIN + 2) {
		fetcher_set_offline(app->fetcher, sig == SIGRTMIN + 1,
				    sig == SIGRTMIN + 1 ? "signal SIGRTMIN+1" : "signal SIGRTMIN+2");
		return;
	}
	if (app->draining) {
		cglog(CGLOG_WARN, "second signal: stopping now");
		on_deadline(-1, 0, app);
		return;
	}
	begin_drain(app, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* Raises the soft open-file limit to what the settings need. */
static int ensure_fd_limit(const struct cg_config *cfg, char *err, size_t err_size)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)(cfg->max_connections + cfg->upstream_connections +
			       FD_RESERVE + 4 * cfg->threads);

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0;
	if (rl.rlim_cur < need) {
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
			snprintf(err, err_size,
				 "max-connections %ld needs %llu open files but the hard limit "
				 "is %llu", cfg->max_connections, (unsigned long long)need,
				 (unsigned long long)rl.rlim_max);
			return -1;
		}
		rl.rlim_cur = need;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			snprintf(err, err_size, "cannot raise the open-file limit to %llu",
				 (unsigned long long)need);
			return -1;
		}
	}
	return 0;
}

/* Says, once serving, how the open-file limit covers what the settings
 * need (issue 14: a gateway out of descriptors serves nobody). */
static void log_fd_budget(const struct cg_config *cfg)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		cglog(CGLOG_INFO, "open files: limit %llu >= %ld client connections + %ld "
		      "upstream + %ld for the loops + %d reserved",
		      (unsigned long long)rl.rlim_cur, cfg->max_connections,
		      cfg->upstream_connections, 4 * cfg->threads, FD_RESERVE);
}

/* Builds the fronts: the first picks the port (when 0), the others share
 * it, or all accept on the socket systemd passed. Starts their threads
 * with every signal blocked (the main loop takes them). */
static int start_fronts(struct app *app, char *err, size_t err_size)
{
	struct front_shared sh = {app->cfg, app->store, app->lru, app->fetcher, app->events,
				  app->listen_fds, app->n_listen_fds, app->metrics, app->access_fd,
				  &app->conns_total};
	unsigned port = app->cfg->listen.port;
	sigset_t all, old;
	int rc = 0;

	for (unsigned i = 0; i < (unsigned)app->cfg->threads; i++) {
		app->fronts[i] = front_new(&sh, i, port, err, err_size);
		if (app->fronts[i] == NULL)
			return -1;
		app->n_fronts++;
		port = front_port(app->fronts[i]);
	}
	/* every asynchronous signal goes to the main loop; the synchronous ones
	 * must stay open (blocked, a fault kills the process at once instead
	 * of reaching the store's SIGBUS guard) */
	sigfillset(&all);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	AZ(pthread_sigmask(SIG_SETMASK, &all, &old));
	for (unsigned i = 0; i < app->n_fronts && rc == 0; i++)
		if ((rc = front_start(app->fronts[i], err, err_size)) == 0)
			app->n_started++;
	AZ(pthread_sigmask(SIG_SETMASK, &old, NULL));
	return rc;
}

/* Listening sockets from systemd (socket activation), when it passed
 * some. 0, or -1 with err. */
static int inherited_listeners(struct app *app, char *err, size_t err_size)
{
	int n = sd_listen_fds(1);

	if (n <= 0)
		return 0;
	if (n > FRONT_THREADS_MAX) {
		snprintf(err, err_size, "systemd passed %d sockets; at most %d are used", n,
			 FRONT_THREADS_MAX);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		if (sd_is_socket(SD_LISTEN_FDS_START + i, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
			snprintf(err, err_size, "socket %d systemd passed is not a listening "
				 "stream socket", i);
			return -1;
		}
		app->listen_fds[app->n_listen_fds++] = SD_LISTEN_FDS_START + i;
	}
	app->listen_from = "systemd";
	return 0;
}

/*
 * --takeover: the running gateway's listening sockets (handover.h), then
 * its cache directory's lock, once it has drained and exited. With no
 * gateway running there, a normal start.
 */
static int take_over(struct app *app, char *err, size_t err_size)
{
	char lock_path[CONFIG_PATH_MAX + 16];
	int64_t waited = 0, limit = 2 * app->cfg->shutdown_timeout_ms + 10000;
	int n, fd;

	if (app->n_listen_fds > 0) {
		snprintf(err, err_size, "takeover: systemd passed the sockets already "
			 "(systemctl restart needs no --takeover)");
		return -1;
	}
	n = handover_take(app->cfg->cache_dir, app->listen_fds, FRONT_THREADS_MAX, err,
			  err_size);
	if (n < 0)
		return -1;
	if (n == 0) {
		cglog(CGLOG_INFO, "takeover: no gateway runs on %s; starting as usual",
		      app->cfg->cache_dir);
		return 0;
	}
	app->n_listen_fds = (size_t)n;
	app->listen_from = "a handover";
	cglog(CGLOG_INFO, "takeover: %d listening socket(s) taken; waiting for the old "
	      "gateway to drain and exit", n);
	/* its lock goes when it exits; connections wait in the sockets' backlog */
	snprintf(lock_path, sizeof(lock_path), "%s/gateway.lock", app->cfg->cache_dir);
	for (;;) {
		fd = open(lock_path, O_RDWR | O_CLOEXEC);
		if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) == 0) {
			if (fd >= 0)
				close(fd); /* store_open takes it for good */
			return 0;
		}
		close(fd);
		if (waited >= limit) {
			snprintf(err, err_size, "takeover: the old gateway still holds "
				 "%.300s after %lld ms", lock_path, (long long)waited);
			return -1;
		}
		usleep(50000);
		waited += 50;
	}
}

static int add_signals(struct app *app)
{
	const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, 0};

	for (size_t i = 0; i < sizeof(app->signals) / sizeof(app->signals[0]); i++) {
		int sig = sigs[i] ? sigs[i] : SIGRTMIN + 1;

		app->signals[i] = evsignal_new(app->base, sig, on_signal, app);
		if (app->signals[i] == NULL || event_add(app->signals[i], NULL) != 0)
			return -1;
	}
	return 0;
}

/*
 * glibc raises its mmap threshold to the size of every mmapped block that is
 * freed (up to 32 MiB), so after the first large answer (a body, LMDB's
 * overflow pages for a put) every later one comes from the heap, where a
 * freed block below a live one cannot go back to the kernel: anonymous memory
 * then creeps up with the largest answers seen (bench/soak: +9 % in 30 min,
 * and 3.5 MB coming and going). Fixed thresholds turn that adjustment off:
 * blocks from 128 KiB are mapped and unmapped on their own, and the heap is
 * trimmed once 256 KiB at its top are free. Large blocks are allocated on the
 * miss path only (hits are written from the map), where a mmap is cheap.
 */
#define MALLOC_MMAP_FROM (128 * 1024)
#define MALLOC_TRIM_FROM (256 * 1024)

static void fix_malloc_thresholds(void)
{
	/* a failure is left unsaid: under ASan's or valgrind's allocator
	 * mallopt does nothing and returns 0, and glibc's only refuses values
	 * above its limits, which these are not */
	(void)mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_FROM);
	(void)mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_FROM);
}

int main(int argc, char **argv)
{
	struct app app;
	struct upstream_config ucfg;
	struct event *rt_off = NULL;
	char err[CONFIG_ERR_MAX];
	char shown_url[CONFIG_URL_MAX]; /* cfg.upstream without its credential */
	uint64_t wd_usec = 0;
	int rc = 1, check_only = 0;

	if (argc > 1 && strcmp(argv[1], "cache") == 0)
		return cache_tool_main(argc - 1, argv + 1);
	fix_malloc_thresholds();
	memset(&app, 0, sizeof(app));
	app.argc = argc;
	app.argv = argv;
	app.access_fd = -1;
	atomic_init(&app.conns_total, 0);
	app.cfg = malloc(sizeof(*app.cfg));
	AN(app.cfg);
	config_defaults(app.cfg);
	switch (config_from_args(app.cfg, argc, argv, 1, err, sizeof(err))) {
	case CONFIG_HELP:
		config_usage(stdout, "contacts-gateway");
		free(app.cfg);
		return 0;
	case CONFIG_VERSION:
		printf("contacts-gateway %s\n", CG_VERSION);
		free(app.cfg);
		return 0;
	case CONFIG_ERROR:
		fprintf(stderr, "contacts-gateway: %s\n", err);
		free(app.cfg);
		return 2;
	case CONFIG_CHECK:
		check_only = 1;
		break;
	case CONFIG_OK:
		break;
	}
	if (app.cfg->threads == 0) {
		long cores = sysconf(_SC_NPROCESSORS_ONLN);

		app.cfg->threads = cores < 1 ? 1 : cores > FRONT_THREADS_MAX ? FRONT_THREADS_MAX
									    : cores;
	}
	cglog_set_level(app.cfg->log_level);
	cglog_set_json(app.cfg->log_json);
	cglog_capture_libevent();
	if (admin_check(app.cfg, err, sizeof(err)) != 0 ||
	    startup_check(app.cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		free(app.cfg);
		return 2;
	}
	if (check_only) {
		startup_warn(app.cfg);
		printf("configuration ok\n");
		free(app.cfg);
		return 0;
	}
	err[0] = '\0';
	if (ensure_fd_limit(app.cfg, err, sizeof(err)) != 0 ||
	    inherited_listeners(&app, err, sizeof(err)) != 0) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		free(app.cfg);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "contacts-gateway: curl_global_init failed\n");
		free(app.cfg);
		return 1;
	}
	app.base = event_base_new();
	if (app.base == NULL)
		goto out;
	ucfg_of(app.cfg, &ucfg);
	app.up = upstream_new(app.base, &ucfg);
	if (app.up == NULL) {
		fprintf(stderr, "contacts-gateway: cannot set up the upstream client\n");
		goto out;
	}
	if (app.cfg->takeover && take_over(&app, err, sizeof(err)) != 0) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		rc = 2;
		goto out;
	}
	app.store = store_open(app.cfg->cache_dir, app.cfg->cache_size,
			       (unsigned)(app.cfg->max_connections + READERS_RESERVE +
					  app.cfg->threads * (STORE_READER_SPARES + 1)),
			       STORE_EXCLUSIVE, err, sizeof(err));
	if (app.store == NULL) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		rc = 2;
		goto out;
	}
	if (app.cfg->access_log[0] &&
	    (app.access_fd = open_access_log(app.cfg->access_log, err, sizeof(err))) < 0) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		rc = 2;
		goto out;
	}
	app.metrics = metrics_new((unsigned)app.cfg->threads,
				  app.cfg->caller_header[0] ? (size_t)app.cfg->max_callers : 0,
				  app.cfg->instance_name);
	app.lru = lru_new();
	app.fetcher = fetcher_new(app.base, app.cfg, app.up, app.store, app.lru, err,
				  sizeof(err));
	app.events = chan_new(app.base, SIZE_MAX, on_front_event, &app);
	if (app.fetcher == NULL || app.events == NULL) {
		fprintf(stderr, "contacts-gateway: %s\n",
			app.fetcher ? "cannot make the front loops' queue" : err);
		goto out;
	}
	fetcher_set_metrics(app.fetcher, app.metrics);
	if (start_fronts(&app, err, sizeof(err)) != 0) {
		fprintf(stderr, "contacts-gateway: %s\n", err);
		rc = 2; /* the listen address is busy or not ours */
		goto out;
	}
	for (size_t i = 0; i < app.n_listen_fds; i++)
		close(app.listen_fds[i]); /* the fronts have their own dups */
	{
		int fds[HANDOVER_FDS_MAX];
		size_t n = 0;

		for (unsigned i = 0; i < app.n_fronts && n < HANDOVER_FDS_MAX; i++)
			n += front_listen_fds(app.fronts[i], fds + n, HANDOVER_FDS_MAX - n);
		app.handover = handover_offer(app.base, app.cfg->cache_dir, fds, n,
					      on_handed_over, &app, err, sizeof(err));
		if (app.handover == NULL)
			cglog(CGLOG_WARN, "%s; a restart with --takeover will not find this "
			      "gateway", err);
	}
	if (app.cfg->admin_listen.host[0] != '\0') {
		app.admin = admin_new(app.base, app.cfg, app.store, app.fetcher, err,
				      sizeof(err));
		if (app.admin == NULL) {
			fprintf(stderr, "contacts-gateway: %s\n", err);
			rc = 2;
			goto out;
		}
		cglog(CGLOG_INFO, "admin endpoint on %s:%u", app.cfg->admin_listen.host,
		      admin_port(app.admin));
	}
	rt_off = evsignal_new(app.base, SIGRTMIN + 2, on_signal, &app);
	app.deadline = evtimer_new(app.base, on_deadline, &app);
	app.sync_timer = event_new(app.base, -1, EV_PERSIST, on_sync, &app);
	app.watchdog = event_new(app.base, -1, EV_PERSIST, on_watchdog, &app);
	if (add_signals(&app) != 0 || rt_off == NULL || event_add(rt_off, NULL) != 0 ||
	    app.deadline == NULL || app.sync_timer == NULL || app.watchdog == NULL)
		goto out;
	set_timer(app.sync_timer, app.cfg->cache_sync_ms);
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
		wd_usec /= 2; /* tell it twice per period */
		app.watchdog_every.tv_sec = (time_t)(wd_usec / 1000000);
		app.watchdog_every.tv_usec = (suseconds_t)(wd_usec % 1000000);
		event_add(app.watchdog, &app.watchdog_every);
	}

	startup_warn(app.cfg); /* once serving: a failed start stays one line */
	log_fd_budget(app.cfg);
	config_redact_url(app.cfg->upstream, shown_url, sizeof(shown_url));
	cglog(CGLOG_INFO, "contacts-gateway %s%s%s listening on %s:%u%s, upstream %s, cache %s, "
	      "%ld front loop(s)%s", CG_VERSION, app.cfg->instance_name[0] ? " " : "",
	      app.cfg->instance_name, app.cfg->listen.host,
	      front_port(app.fronts[0]),
	      app.listen_from ? (strcmp(app.listen_from, "systemd") == 0 ? " (socket from systemd)"
									 : " (sockets handed over)")
			      : "",
	      shown_url, app.cfg->cache_dir, app.cfg->threads,
	      fetcher_offline(app.fetcher, 0) ? ", offline" : "");
	notify("READY=1");
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
	handover_free(app.handover);
	admin_free(app.admin);
	fetcher_free(app.fetcher);
	chan_free(app.events);
	upstream_free(app.up);
	lru_free(app.lru);
	store_close(app.store); /* syncs */
	for (size_t i = 0; i < sizeof(app.signals) / sizeof(app.signals[0]); i++)
		if (app.signals[i])
			event_free(app.signals[i]);
	if (rt_off)
		event_free(rt_off);
	if (app.sync_timer)
		event_free(app.sync_timer);
	if (app.watchdog)
		event_free(app.watchdog);
	if (app.deadline)
		event_free(app.deadline);
	if (app.base)
		event_base_free(app.base);
	free_retired(&app);
	free(app.cfg);
	metrics_free(app.metrics);
	if (app.access_fd >= 0)
		close(app.access_fd);
	curl_global_cleanup();
	return rc;
}
