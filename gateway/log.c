/*
 * cglog: see log.h. One fprintf per line onto an unbuffered stderr, so lines
 * from one process never interleave mid-line and nothing is lost on a crash.
 */
#include "gateway/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* Read by every thread on every line, set by the main thread (a reload). */
static _Atomic int current_level = CGLOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void cglog_set_level(enum cglog_level level)
{
	atomic_store_explicit(&current_level, (int)level, memory_order_relaxed);
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
	char line[1024];
	struct timeval tv;
	struct tm tm;
	size_t n;
	va_list ap;

	if (!cglog_enabled(level))
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03dZ %s ",
			      (int)(tv.tv_usec / 1000), level_names[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s\n", line);
}
