/*
 * startup: see startup.h. Everything here only looks (getaddrinfo, stat,
 * access); nothing is bound, created or written.
 */
#include "gateway/startup.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway/log.h"

/* The host of a listening address resolves to at least one address. */
static int check_host(const char *setting, const struct cg_addr *addr, char *err,
		      size_t err_size)
{
	struct addrinfo hints, *res = NULL;
	int rc;

	if (addr->host[0] == '\0') /* not set: that listener is off */
		return 0;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	rc = getaddrinfo(addr->host, NULL, &hints, &res);
	if (rc != 0) {
		snprintf(err, err_size, "%s: cannot resolve '%s': %s", setting, addr->host,
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return -1;
	}
	freeaddrinfo(res);
	return 0;
}

/*
 * The cache directory exists as a directory this process may use, or its
 * nearest existing ancestor is a directory this process may create entries
 * in (the store creates the missing levels, mode 0700). A file on the way
 * is named: "cannot create /srv/f/cache: /srv/f is not a directory".
 */
static int check_cache_dir(const char *dir, char *err, size_t err_size)
{
	char path[CONFIG_PATH_MAX];
	struct stat sb;
	size_t len;

	if (dir[0] == '\0') {
		snprintf(err, err_size, "cache-dir: empty path");
		return -1;
	}
	if (stat(dir, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode)) {
			snprintf(err, err_size, "cache-dir: %s is not a directory", dir);
			return -1;
		}
		if (access(dir, R_OK | W_OK | X_OK) != 0) {
			snprintf(err, err_size, "cache-dir: %s: %s", dir, strerror(errno));
			return -1;
		}
		return 0;
	}
	if (errno != ENOENT && errno != ENOTDIR) {
		snprintf(err, err_size, "cache-dir: %s: %s", dir, strerror(errno));
		return -1;
	}
	/* walk up to the nearest ancestor that exists */
	snprintf(path, sizeof(path), "%s", dir);
	for (;;) {
		char *slash;

		len = strlen(path);
		while (len > 1 && path[len - 1] == '/')
			path[--len] = '\0';
		slash = strrchr(path, '/');
		if (slash == NULL) {
			snprintf(path, sizeof(path), ".");
		} else if (slash == path) {
			path[1] = '\0';
		} else {
			*slash = '\0';
		}
		if (stat(path, &sb) == 0)
			break;
		if ((errno != ENOENT && errno != ENOTDIR) || strcmp(path, ".") == 0 ||
		    strcmp(path, "/") == 0) {
			snprintf(err, err_size, "cache-dir: %s: %s", path, strerror(errno));
			return -1;
		}
	}
	if (!S_ISDIR(sb.st_mode)) {
		snprintf(err, err_size, "cache-dir: cannot create %s: %s is not a directory",
			 dir, path);
		return -1;
	}
	if (access(path, W_OK | X_OK) != 0) {
		snprintf(err, err_size, "cache-dir: cannot create %s in %s: %s", dir, path,
			 strerror(errno));
		return -1;
	}
	return 0;
}

int startup_check(const struct cg_config *cfg, char *err, size_t err_size)
{
	if (check_host("listen", &cfg->listen, err, err_size) != 0 ||
	    check_host("admin-listen", &cfg->admin_listen, err, err_size) != 0 ||
	    check_cache_dir(cfg->cache_dir, err, err_size) != 0)
		return -1;
	return 0;
}

int startup_warn(const struct cg_config *cfg)
{
	int n = 0;

	if (cfg->warn & CONFIG_WARN_TOKEN_ARGV) {
		cglog(CGLOG_WARN, "admin-token given on the command line: other users can "
		      "read it (ps, /proc); set it in the config file instead");
		n++;
	}
	if (cfg->warn & CONFIG_WARN_TOKEN_FILE) {
		cglog(CGLOG_WARN, "config file %s holds admin-token and can be read by "
		      "other users: chmod 600 (or 640 with a group of the gateway's own)",
		      cfg->config_path);
		n++;
	}
	return n;
}
