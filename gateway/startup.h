/*
 * startup: the checks between a parsed config and a serving gateway, shared
 * by a real start and by `contacts-gateway -t` (check-config).
 *
 * config.c checks each value on its own (syntax and bounds, no system
 * calls beyond opening a named file). startup_check asks the system what a
 * start would need, without changing anything: the listen and admin hosts
 * resolve, and the cache directory is a directory or can be created. It
 * binds nothing and creates nothing, so `-t` may run beside a live gateway.
 * A busy port can only be seen by binding; the front reports that one.
 *
 * Runs once, in main, before any thread or loop exists.
 */
#ifndef CG_GATEWAY_STARTUP_H
#define CG_GATEWAY_STARTUP_H

#include <stddef.h>

#include "gateway/config.h"

/*
 * Returns 0 if a start with `cfg` can go ahead, or -1 with `err` (err_size
 * bytes, one line, no newline) naming the setting and what is wrong, e.g.
 * "listen: cannot resolve 'nohost.invalid': Name or service not known" or
 * "cache-dir: /srv/cg is not a directory". Borrows cfg.
 */
int startup_check(const struct cg_config *cfg, char *err, size_t err_size);

/*
 * Logs (cglog, warn) one line per risky way a setting was given: the admin
 * token on the command line (other users see it in ps), or in a config file
 * other users can read. main calls it for -t, and for a start once the
 * listeners are up, so a start that fails is still one line. Returns the
 * number of lines logged. Borrows cfg.
 */
int startup_warn(const struct cg_config *cfg);

#endif
