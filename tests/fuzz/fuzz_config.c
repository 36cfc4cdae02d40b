/*
 * fuzz_config: gateway/config.c's config_set and config_load_file (used
 * as they are; this target only reads them).
 *
 * Input: "name\nvalue" for config_set; the whole input is also a config
 * file (in a memfd, read through /proc/self/fd). Properties: no crash; a
 * refusal always says why (a non-empty, NUL-terminated err; the file's
 * name in it for a file); an accepted setting is accepted again and
 * setting it twice changes nothing more (a setter is a function of its
 * value).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gateway/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cg_config a, b;
	char err[CONFIG_ERR_MAX], name[128], *value, path[64];
	const uint8_t *nl = memchr(data, '\n', size);
	size_t name_len = nl ? (size_t)(nl - data) : size;
	int fd;

	if (name_len < sizeof(name) && (value = malloc(size + 1)) != NULL) {
		memcpy(name, data, name_len);
		name[name_len] = '\0';
		memcpy(value, nl ? nl + 1 : data + size, nl ? size - name_len - 1 : 0);
		value[nl ? size - name_len - 1 : 0] = '\0';
		config_defaults(&a);
		memset(err, 'x', sizeof(err));
		if (config_set(&a, name, value, err, sizeof(err)) != 0) {
			if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0')
				abort();
		} else {
			b = a;
			if (config_set(&b, name, value, err, sizeof(err)) != 0 ||
			    memcmp(&a, &b, sizeof(a)) != 0)
				abort();
		}
		free(value);
	}

	fd = memfd_create("cg-fuzz-config", MFD_CLOEXEC);
	if (fd < 0)
		abort();
	if (size && write(fd, data, size) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	config_defaults(&a);
	memset(err, 'x', sizeof(err));
	if (config_load_file(&a, path, err, sizeof(err)) != 0 &&
	    (memchr(err, '\0', sizeof(err)) == NULL || strstr(err, path) == NULL))
		abort();
	close(fd);
	return 0;
}
