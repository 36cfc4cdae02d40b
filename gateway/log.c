/*
 * cglog: see log.h. One fprintf per line onto an unbuffered stderr, so lines
 * from one process never interleave mid-line and nothing is lost on a crash.
 */
#include "gateway/log.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* Read by every thread on every line, set by the main thread (a reload). */
static _Atomic int current_level = CGLOG_INFO;
static _Atomic int as_json;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void cglog_set_level(enum cglog_level level)
{
	atomic_store_explicit(&current_level, (int)level, memory_order_relaxed);
}

void cglog_set_json(int json)
{
	atomic_store_explicit(&as_json, !!json, memory_order_relaxed);
}

/* Appends `s` JSON-escaped (RFC 8259) to out[*n..size), NUL-terminated;
 * stops short rather than overflow. */
static void json_escape(char *out, size_t size, size_t *n, const char *s)
{
	for (; *s && *n + 7 < size; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[(*n)++] = '\\';
			out[(*n)++] = (char)c;
		} else if (c < 0x20) {
			*n += (size_t)snprintf(out + *n, size - *n, "\\u%04x", c);
		} else {
			out[(*n)++] = (char)c;
		}
	}
	out[*n] = '\0';
}

static void on_libevent_log(int severity, const char *msg)
{
	/* libevent's own warnings, in the gateway's format (and level) */
	enum cglog_level level = severity >= EVENT_LOG_ERR ? CGLOG_ERROR
				 : severity == EVENT_LOG_WARN ? CGLOG_WARN
				 : severity == EVENT_LOG_MSG ? CGLOG_INFO : CGLOG_DEBUG;

	cglog(level, "libevent: %s", msg);
}

void cglog_capture_libevent(void)
{
	event_set_log_callback(on_libevent_log);
}

int cglog_enabled(enum cglog_level level)
{
	return (int)level <= atomic_load_explicit(&current_level, memory_order_relaxed);
}

int cglog_parse_level(const char *name, enum cglog_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum cglog_level)i;
			return 0;
		}
	}
	return -1;
}

void cglog(enum cglog_level level, const char *fmt, ...)
{
	char line[1024], msg[900], stamp[40];
	struct timeval tv;
	struct tm tm;
	size_t n;
	va_list ap;

	if (!cglog_enabled(level))
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + n, sizeof(stamp) - n, ".%03dZ", (int)(tv.tv_usec / 1000));
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (atomic_load_explicit(&as_json, memory_order_relaxed)) {
		n = (size_t)snprintf(line, sizeof(line), "{\"time\":\"%s\",\"level\":\"%s\","
				     "\"msg\":\"", stamp, level_names[level]);
		json_escape(line, sizeof(line) - 3, &n, msg);
		fprintf(stderr, "%s\"}\n", line);
	} else {
		fprintf(stderr, "%s %s %s\n", stamp, level_names[level], msg);
	}
}
