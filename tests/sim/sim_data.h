/*
 * sim_data: the simulator's synthetic vendor data and the vendor's query
 * semantics (validation, filters, ordering, paging, JSON output).
 *
 * Deterministic: the same seed, keys, contact count and `now` give the same
 * bytes on every run and machine (own PRNG, no libc time zone use). Each API
 * key is one organisation with its own client_id, 3 pipelines of 4 stages,
 * and its contacts; every contact carries ticket and customer custom fields
 * (filterable, never serialised).
 */
#ifndef CG_SIM_DATA_H
#define CG_SIM_DATA_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define SIM_KEYS_MAX 16
#define SIM_KEY_MAX 64
#define SIM_CONTACTS_MAX 100000
#define SIM_PIPELINES 3
#define SIM_STAGES_PER_PIPELINE 4
#define SIM_FIELDS 3 /* custom field keys */

struct sim_contact {
	char id[37];
	char name[40];
	char phone[20];  /* "" is null */
	char email[64];  /* "" is null */
	const char *platform;
	const char *chat_status;
	int64_t last_message_ms, created_ms, updated_ms;
	char ai_customer_id[37];   /* "" is null */
	int default_stage;         /* index or -1 (null) */
	int blocked, is_chat_read;
	int has_ticket;
	char ticket_id[37];
	int ticket_stage;          /* index or -1 (null current_stage_id) */
	int ticket_field[SIM_FIELDS];   /* value index or -1 */
	int customer_field[SIM_FIELDS]; /* value index or -1 */
};

struct sim_org {
	char key[SIM_KEY_MAX];
	char client_id[37];
	char pipeline_id[SIM_PIPELINES][37];
	char stage_id[SIM_PIPELINES * SIM_STAGES_PER_PIPELINE][37];
	struct sim_contact *contacts;
	size_t n;
};

/* Builds an organisation. Returns 0, or -1 on allocation failure. */
int sim_org_build(struct sim_org *org, const char *key, unsigned key_index,
		  uint64_t seed, size_t n_contacts, int64_t now_ms);
void sim_org_free(struct sim_org *org);

/*
 * Answers one query (the raw query string) for `org` at `now_ms`: on success
 * returns 200 with the JSON array in `out`; on a contract violation returns
 * 400 with a one-line reason in `why`.
 */
int sim_query(const struct sim_org *org, const char *raw, int64_t now_ms,
	      struct evbuffer *out, char *why, size_t why_size);

/* Parses an ISO 8601 timestamp (the contract's forms) into ms; 0 or -1. */
int sim_parse_time(const char *s, size_t n, int64_t *ms);

#endif
