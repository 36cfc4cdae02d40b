/*
 * sim_data: the simulator's synthetic vendor data and the vendor's query
 * semantics (parsing, validation, filters, ordering, paging, JSON output).
 *
 * Data model. One struct sim_org per API key: the organisation's client_id,
 * SIM_PIPELINES pipelines of SIM_STAGES_PER_PIPELINE stages (stage s belongs
 * to pipeline s / SIM_STAGES_PER_PIPELINE), and an array of contacts. A
 * contact refers to stages by index (-1 is null); its custom fields are value
 * indexes into fixed vocabularies (-1: the contact lacks that field).
 *
 * Invariants, for every contact of an org:
 *   now - 400 days <= created <= updated <= now, created <= last_message <= now;
 *   ticket custom fields and a ticket stage only when has_ticket;
 *   every UUID is lower-case, version 4, RFC 4122 variant.
 *
 * Deterministic: the same seed, key, contact count and `now` give the same
 * bytes on every run and machine (own PRNG, integer-only calendar, no libc
 * time zone use). An org depends on its key's text, not its position in
 * --keys. The clock is a parameter: nothing here reads it.
 */
#ifndef CG_SIM_DATA_H
#define CG_SIM_DATA_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define SIM_KEYS_MAX 16          /* API keys (organisations) per process */
#define SIM_KEY_MAX 128          /* bytes of one API key, NUL included */
#define SIM_CONTACTS_MAX 100000  /* contacts per organisation */
#define SIM_PIPELINES 3
#define SIM_STAGES_PER_PIPELINE 4
#define SIM_STAGES (SIM_PIPELINES * SIM_STAGES_PER_PIPELINE)
#define SIM_FIELDS 3             /* custom field keys: status, tier, region */
#define SIM_VALUE_MAX 1024       /* decoded bytes of one known query value */
#define SIM_UUID_LEN 36

struct sim_contact {
	char id[SIM_UUID_LEN + 1];
	char name[96];              /* 40 would do, but --data adversarial */
	char phone[20];             /* "" is null */
	char email[64];             /* "" is null */
	const char *platform;       /* static string */
	const char *chat_status;    /* static string */
	int64_t last_message_ms, created_ms, updated_ms;
	char ai_customer_id[SIM_UUID_LEN + 1]; /* "" is null */
	int default_stage;          /* stage index, or -1 (null) */
	int blocked, is_chat_read;
	int has_ticket;             /* active_ticket_v2 non-null */
	char ticket_id[SIM_UUID_LEN + 1];
	int ticket_stage;           /* stage index, or -1 (null current_stage_id) */
	int ticket_field[SIM_FIELDS];   /* value index, or -1 */
	int customer_field[SIM_FIELDS]; /* value index, or -1 */
};

struct sim_org {
	char key[SIM_KEY_MAX];
	char client_id[SIM_UUID_LEN + 1];
	char pipeline_id[SIM_PIPELINES][SIM_UUID_LEN + 1];
	char stage_id[SIM_STAGES][SIM_UUID_LEN + 1];
	struct sim_contact *contacts; /* owned; n entries */
	size_t n;
};

/*
 * Builds the organisation of API key `key` (borrowed, copied; at most
 * SIM_KEY_MAX - 1 bytes) with `n_contacts` (<= SIM_CONTACTS_MAX) contacts
 * around `now_ms`. Returns 0, or -1 on a bad argument or allocation failure
 * (then `org` holds nothing to free). Free with sim_org_free().
 */
int sim_org_build(struct sim_org *org, const char *key, uint64_t seed,
		  size_t n_contacts, int64_t now_ms);

/*
 * --data adversarial (docs/simulator.md): reshapes a built org for the
 * derivation tests. Every contact's three timestamps are snapped down, by
 * one grain per contact (a day, an hour or a second, counted back from
 * now_ms), so equal timestamps are common and fall exactly on `days` cuts;
 * about half the contacts get a name from a list of hostile strings
 * (quotes, backslashes, brackets, a fake "updated_at", control bytes,
 * 4-byte UTF-8, invalid UTF-8). The invariants of the data model still
 * hold, except that a snapped created_at may lie up to a day before the
 * 400-day span. Deterministic, from its own stream of `seed` and the key:
 * the normal data set is unchanged by its existence.
 */
void sim_org_adversarial(struct sim_org *org, uint64_t seed, int64_t now_ms);

/* Frees what sim_org_build() allocated; `org` may then be built again. */
void sim_org_free(struct sim_org *org);

/*
 * Answers one query for `org` at `now_ms`. `raw` is the raw query string
 * (borrowed; NULL is empty). On success returns 200 and appends the compact
 * JSON array to `out`; on a contract violation returns 400, appends nothing
 * and writes a one-line reason (plain ASCII, no quotes) into `why`.
 */
int sim_query(const struct sim_org *org, const char *raw, int64_t now_ms,
	      struct evbuffer *out, char *why, size_t why_size);

/*
 * Parses the contract's ISO 8601 forms (`YYYY-MM-DD`, or
 * `YYYY-MM-DDTHH:MM[:SS[.fraction]]` with `Z`, `+HH:MM`, `-HH:MM`, `+HHMM`)
 * of exactly `n` bytes into epoch milliseconds (fraction truncated).
 * Returns 0, or -1 (then *ms is unchanged).
 */
int sim_parse_time(const char *s, size_t n, int64_t *ms);

/*
 * Appends `n` bytes of `s` to `out` as the inside of a JSON string: quotes,
 * backslashes and control bytes escaped, valid UTF-8 copied, invalid bytes
 * replaced by U+FFFD, so the result is always valid JSON.
 */
void sim_json_string(struct evbuffer *out, const char *s, size_t n);

#endif
