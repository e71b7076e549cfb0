/*
 * IMAP as pure functions over bytes (RFC 9051, RFC 3501, RFC 7888
 * literals, RFC 5530 response codes): the framing of command and response
 * lines with the literal that may end them, the tag and verb of a
 * command, the kind of a response, and the rewrite of a capability list
 * in each of the three places it appears.  No libevent, no logging.
 *
 * Framing is what the proxy and every backend must agree on byte for
 * byte, or bytes the proxy takes for literal data run as commands at the
 * backend (past require_tls, and across the upgrade).  A line ends at its
 * LF; a literal is announced only at the end of a line, "{n}" or "{n+}"
 * (or "~{...}", RFC 3516), and its n bytes are data, whatever they hold;
 * the command goes on with the line after them.  A command line is read
 * strictly: a '{' outside a quoted string is allowed only as that final
 * marker, where an argument starts, so that no server can see a literal
 * where the proxy sees none, or none where it sees one.
 */
#ifndef STP_IMAP_PARSE_H
#define STP_IMAP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "parse.h"

#define IMAP_LINE_MAX_PRE_TLS	8192	/* a command before TLS, literals included (SPEC;
					   Dovecot's IMAP_LOGIN_MAX_LINE_LENGTH) */
#define IMAP_LINE_MAX		65536	/* a command line inside TLS until authentication;
					   literals are streamed, not held */
#define IMAP_RESPONSE_LINE_MAX	65536	/* a backend response line until authentication */
#define IMAP_TAG_MAX		64	/* bytes of a tag the proxy keeps and echoes */
#define IMAP_PIPELINE_MAX	32	/* relayed commands awaiting their completion */
#define IMAP_LITERAL_DIGITS_MAX	19	/* so that n fits in 63 bits */
#define IMAP_LITERAL_MINUS_MAX	4096	/* the largest {n+} under LITERAL- (RFC 7888 section 3) */
#define IMAP_CAPABILITY_ITEMS_MAX 256	/* items of one capability list */
#define IMAP_CAPABILITY_GROWTH	32	/* what a rewrite may add: " STARTTLS LOGINDISABLED" */

enum imap_literal {
	IMAP_LITERAL_NONE,
	IMAP_LITERAL_SYNC,	/* {n}: the server answers "+" before the data */
	IMAP_LITERAL_NONSYNC,	/* {n+}: the data follows at once (RFC 7888) */
};

/* How a line is read. */
enum imap_line_mode {
	/*
	 * A client's command line: quoted strings are tracked, and a '{'
	 * outside one that is not a literal marker where an argument
	 * starts (after SP or '(') makes the line malformed, as does an
	 * unterminated quoted string and a marker that is not "{digits}"
	 * or "{digits+}".
	 */
	IMAP_LINE_COMMAND,
	/*
	 * A backend's response line: a literal is any "{digits}" that ends
	 * it, as clients read it (Python's imaplib, among others); "+" is no
	 * part of a response's literal.
	 */
	IMAP_LINE_RESPONSE,
};

struct imap_line {
	size_t		 len;		/* with its line ending */
	size_t		 textlen;	/* without it (CRLF or LF) */
	bool		 clean;		/* it ends in CRLF and holds no other CR, no NUL */
	bool		 malformed;	/* IMAP_LINE_COMMAND: see above */
	enum imap_literal literal;	/* the literal announced at its end */
	bool		 literal8;	/* "~{n}" */
	uint64_t	 literal_size;
};

/*
 * The first line of p[0..len), at most max bytes with its line ending.
 * PARSE_OK with *out filled; PARSE_NEED_MORE without an LF in fewer than
 * max bytes; PARSE_TOO_LONG without one in max bytes.  *out is written
 * only with PARSE_OK.  A line is never PARSE_MALFORMED: how it is
 * malformed is in out->malformed and out->clean, for the caller to
 * decide.
 */
enum parse_result imap_line_next(const char *p, size_t len, size_t max,
		    enum imap_line_mode mode, struct imap_line *out);

enum imap_verb {
	IMAP_OTHER,
	IMAP_CAPABILITY,
	IMAP_NOOP,
	IMAP_LOGOUT,
	IMAP_ID,		/* RFC 2971 */
	IMAP_STARTTLS,
	IMAP_LOGIN,
	IMAP_AUTHENTICATE,
};

struct imap_command {
	const char	*tag;		/* NULL when the line has no valid tag */
	size_t		 taglen;
	enum imap_verb	 verb;
	const char	*args;		/* after the verb and its SP; NULL without */
	size_t		 argslen;
};

/*
 * The first line of a command, its text without the line ending:
 * tag SP verb [SP arguments].  A tag is 1 to IMAP_TAG_MAX ASTRING-CHARs
 * but "+" (RFC 9051 section 9); the verb an atom.  PARSE_OK, or
 * PARSE_MALFORMED with out->tag set when the tag alone was valid (the
 * reply can then carry it).  *out is always written.
 */
enum parse_result imap_command_parse(const char *text, size_t len, struct imap_command *out);

/* The commands allowed before TLS under require_tls (SPEC). */
bool	imap_allowed_before_tls(enum imap_verb);

enum imap_response_kind {
	IMAP_RESP_CONTINUATION,	/* "+" [SP text] */
	IMAP_RESP_UNTAGGED,	/* "*" SP ... */
	IMAP_RESP_TAGGED,	/* tag SP status ... */
};

enum imap_status {
	IMAP_STATUS_NONE,	/* untagged data: "* CAPABILITY", "* 3 EXISTS", ... */
	IMAP_STATUS_OK,
	IMAP_STATUS_NO,
	IMAP_STATUS_BAD,
	IMAP_STATUS_BYE,
	IMAP_STATUS_PREAUTH,
};

struct imap_response {
	enum imap_response_kind kind;
	const char	*tag;		/* IMAP_RESP_TAGGED */
	size_t		 taglen;
	enum imap_status status;
	bool		 capability;	/* "* CAPABILITY ..." or a [CAPABILITY ...] code */
	size_t		 caps_off;	/* where its list starts in the text */
	size_t		 caps_len;	/* and its length */
};

/*
 * A response line's text (without its line ending).  A tagged response
 * must carry a status (OK, NO or BAD; BYE and PREAUTH are untagged only).
 * PARSE_OK or PARSE_MALFORMED; *out is written only with PARSE_OK.
 */
enum parse_result imap_response_parse(const char *text, size_t len, struct imap_response *out);

#define IMAP_CAPS_ADD_STARTTLS		0x01
#define IMAP_CAPS_ADD_LOGINDISABLED	0x02
#define IMAP_CAPS_DROP_AUTH		0x04	/* every AUTH=... */
#define IMAP_CAPS_DROP_STARTTLS		0x08
#define IMAP_CAPS_DROP_LOGINDISABLED	0x10

/*
 * Rewrite the capability list of a response line (its text, without the
 * line ending): drop what flags say (ASCII case ignored), then add
 * STARTTLS and LOGINDISABLED at the end when asked and not there.  The
 * rest of the line is kept as it is; the output ends in CRLF.  Returns
 * its length, or -1 when the line carries no capability list, has more
 * than IMAP_CAPABILITY_ITEMS_MAX items, or does not fit in outlen
 * (len + IMAP_CAPABILITY_GROWTH + 2 always does).
 */
ssize_t	imap_capability_rewrite(const char *text, size_t len, unsigned flags,
	    char *out, size_t outlen);

/* Does the response line's capability list hold cap (ASCII case ignored)? */
bool	imap_capability_has(const char *text, size_t len, const char *cap);

#endif
