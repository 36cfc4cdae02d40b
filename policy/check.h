/*
 * check: invariant checks that stay on in every build we ship.
 *
 * <assert.h> checks nothing once NDEBUG is defined, and CMake's Release and
 * RelWithDebInfo builds define it: an assert there protects nothing in
 * production. These macros (after Varnish's vas.h and miniobj.h) are always
 * compiled in; a failed check prints where and what, then aborts, so a
 * use-after-free or a broken invariant stops the process at once instead of
 * serving wrong bytes.
 *
 *   CHECK(cond)                     an invariant: cond must hold
 *   AN(x) / AZ(x)                   x must be non-zero (non-NULL) / zero
 *   CHECK_OBJ(ptr, magic)           ptr->magic must equal magic
 *   CHECK_OBJ_NOTNULL(ptr, magic)   ptr non-NULL and ptr->magic == magic
 *
 * Every struct that travels through a `void *` (libevent and curl callback
 * arguments, messages between threads) carries a `unsigned magic` field set
 * at creation and zeroed when freed, and is checked with CHECK_OBJ_NOTNULL on
 * every entry point. Pure header: policy/ code may use it (no I/O library).
 */
#ifndef CG_POLICY_CHECK_H
#define CG_POLICY_CHECK_H

#include <stdio.h>
#include <stdlib.h>

/* Prints the failed check and aborts; never returns. */
static inline void check_fail(const char *file, int line, const char *func,
			      const char *what) __attribute__((noreturn, cold));

static inline void check_fail(const char *file, int line, const char *func,
			      const char *what)
{
	fprintf(stderr, "contacts-gateway: check failed at %s:%d (%s): %s\n", file, line,
		func, what);
	abort();
}

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (__builtin_expect(!(cond), 0))                            \
			check_fail(__FILE__, __LINE__, __func__, #cond);     \
	} while (0)

#define AN(x) CHECK((x) != 0)
#define AZ(x) CHECK((x) == 0)

#define CHECK_OBJ(ptr, m) CHECK((ptr)->magic == (m))

#define CHECK_OBJ_NOTNULL(ptr, m)                                            \
	do {                                                                 \
		CHECK((ptr) != NULL);                                        \
		CHECK((ptr)->magic == (m));                                  \
	} while (0)

#endif
