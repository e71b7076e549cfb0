/*
 * POP3 as pure functions over bytes (RFC 1939, RFC 2449 CAPA and
 * PIPELINING, RFC 2595 section 4 STLS, RFC 3206 response codes, RFC 5034
 * SASL AUTH, RFC 6856 LANG): command verbs, which replies are multi-line,
 * status lines, the end of a multi-line reply and the CAPA rewrite.  No
 * libevent, no logging.
 */
#ifndef STP_POP3_PARSE_H
#define STP_POP3_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "parse.h"

#define POP3_LINE_MAX_PRE_TLS	4096	/* command lines before TLS (SPEC) */
#define POP3_LINE_MAX		16384	/* command and SASL response lines inside
					   TLS until authentication: Dovecot's
					   pop3-login takes 1 KiB command lines
					   and 8 KiB SASL responses */
#define POP3_REPLY_LINE_MAX	16384	/* a status or SASL challenge line from the
					   backend (RFC 1939: 512; Dovecot's SASL
					   lines go to 16 KiB) */
#define POP3_CAPA_MAX		16384	/* a whole CAPA reply, held to be rewritten */
#define POP3_CAPA_LINES_MAX	128
#define POP3_PIPELINE_MAX	64	/* commands awaiting their reply */

enum pop3_verb {
	POP3_UNKNOWN,		/* no command the proxy knows: its reply's shape is unknown */
	POP3_USER,
	POP3_PASS,
	POP3_APOP,
	POP3_AUTH,
	POP3_STLS,
	POP3_CAPA,
	POP3_QUIT,
	POP3_STAT,
	POP3_LIST,
	POP3_RETR,
	POP3_DELE,
	POP3_NOOP,
	POP3_RSET,
	POP3_TOP,
	POP3_UIDL,
	POP3_LAST,		/* RFC 1460, still answered by Dovecot */
	POP3_UTF8,		/* RFC 6856 */
	POP3_LANG,		/* RFC 6856 */
	POP3_XCLIENT,		/* Dovecot's and Postfix's: a trusted proxy's
				   client address; single-line */
	POP3_XOIP,		/* Zimbra's nginx, which Dovecot takes as XCLIENT */
};

struct pop3_command {
	enum pop3_verb	 verb;
	const char	*args;		/* after the verb and the one space after it */
	size_t		 argslen;
};

/*
 * A command line's text (without its line ending): the keyword is every
 * byte up to the first space or the end (RFC 1939 section 3), compared
 * without regard to ASCII case; anything else in it (a tab, a CR, a NUL)
 * makes a verb the proxy does not know.  The arguments are what follows
 * that space.
 */
void	pop3_command_parse(const char *text, size_t len, struct pop3_command *out);

/* The arguments hold nothing but spaces: "LIST" and "LIST  " alike. */
bool	pop3_no_argument(const struct pop3_command *);

/* USER, PASS, APOP and AUTH: credentials, refused before TLS under require_tls. */
bool	pop3_is_login(enum pop3_verb);

/* CAPA, QUIT and STLS: the commands allowed before TLS under require_tls. */
bool	pop3_allowed_before_tls(enum pop3_verb);

/*
 * What a positive reply to the command looks like.  POP3_MULTI: it is
 * followed by dot-stuffed lines up to ".CRLF" (CAPA; LIST, UIDL and LANG
 * without an argument; RETR; TOP; AUTH without an argument, the SASL
 * mechanism list Dovecot and Outlook know).  POP3_SASL: AUTH with a
 * mechanism, a dialogue of "+ " challenges and the client's responses up
 * to a final +OK or -ERR (RFC 5034).  POP3_SINGLE: one status line.  A
 * -ERR is always one line.  Where servers read the arguments
 * differently it says MULTI (Dovecot takes "AUTH  PLAIN", two spaces,
 * for the mechanism list): a single-line reply taken for a multi-line one
 * leaves the proxy waiting, never ahead of the backend.  A verb it does
 * not know is POP3_SINGLE, as RFC 1939 describes every reply it does not
 * say more of; the module trusts no count after relaying one.
 */
enum pop3_shape {
	POP3_SINGLE,
	POP3_MULTI,
	POP3_SASL,
};
enum pop3_shape pop3_reply_shape(const struct pop3_command *);

/*
 * A reply line from the backend (its text, without the line ending):
 * "+OK" or "-ERR", upper case as RFC 1939 section 3 requires, alone or
 * followed by a space; with sasl, also a "+" continuation, alone or
 * followed by a space (RFC 5034 section 4).  PARSE_OK or
 * PARSE_MALFORMED; *out is written only with PARSE_OK.
 */
enum pop3_status_kind {
	POP3_OK,
	POP3_ERR,
	POP3_CONTINUE,
};
struct pop3_status {
	enum pop3_status_kind kind;
	const char	*text;		/* after the indicator and its space */
	size_t		 textlen;
};
enum parse_result pop3_status_parse(const char *text, size_t len, bool sasl,
		    struct pop3_status *out);

/*
 * The end of a multi-line reply's body, "CRLF . CRLF" (RFC 1939 section
 * 3), found across any split of the stream.  Start with pop3_body_begin()
 * after the CRLF of the status line, which counts as the first CRLF (an
 * empty body is ".CRLF" at once).  A line that begins with "." is
 * dot-stuffed content unless it is the dot alone: "..", ".+OK" and the
 * like are content.  Only CRLF ends a line: a dot after a bare LF, or
 * "." LF, is content, so that no message line makes the proxy find an
 * end the backend did not send (a backend dot-stuffs after CRLF).
 * PARSE_OK with *used the bytes up to and including the final CRLF;
 * PARSE_NEED_MORE when p[0..len) is all body (*used is then not
 * written).
 */
struct pop3_body {
	unsigned	 state;
};
void	pop3_body_begin(struct pop3_body *);
enum parse_result pop3_body_end(struct pop3_body *, const char *p, size_t len, size_t *used);

#define POP3_CAPA_ADD_STLS	0x01	/* offer STLS (the proxy's): before TLS */
#define POP3_CAPA_DROP_STLS	0x02	/* the backend's STLS, inside TLS or implicit */
#define POP3_CAPA_DROP_LOGIN	0x04	/* USER and SASL: before TLS under require_tls */

/* Is the text of a CAPA line the capability kw (its first word, any case)? */
bool	pop3_capa_is(const char *text, size_t len, const char *kw);

/*
 * Rewrite a whole positive CAPA reply, reply[0..len): its status line,
 * its capability lines and ".CRLF".  Drops the lines the flags name and
 * the backend's own STLS whenever STLS is added or dropped, adds "STLS"
 * as the last capability with POP3_CAPA_ADD_STLS, and ends every line in
 * CRLF.  At most POP3_CAPA_LINES_MAX lines.  Returns the output length,
 * or -1 if the reply is not a whole positive multi-line reply or does not
 * fit in outlen.
 */
ssize_t	pop3_capa_rewrite(const char *reply, size_t len, unsigned flags,
	    char *out, size_t outlen);

/* The list the proxy gives when the backend answers CAPA with -ERR (RFC 1939 servers). */
#define POP3_CAPA_OWN		"+OK Capability list follows\r\nSTLS\r\n.\r\n"

#endif
