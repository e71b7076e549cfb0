/*
 * SMTP as pure functions over bytes (RFC 5321, RFC 3207, RFC 2920,
 * RFC 3030): command verbs, reply lines, the EHLO reply rewrite, BDAT
 * arguments and the end of DATA content.  No libevent, no logging.
 */
#ifndef STP_SMTP_PARSE_H
#define STP_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "parse.h"

#define SMTP_LINE_MAX_PRE_TLS	4096	/* command lines before TLS (SPEC) */
#define SMTP_LINE_MAX		65536	/* command lines inside TLS */
#define SMTP_REPLY_LINE_MAX	8192	/* backend reply lines (RFC 5321: 512) */
#define SMTP_REPLY_MAX		16384	/* a whole reply, multiline, held until its end */
#define SMTP_EHLO_REPLY_MAX	SMTP_REPLY_MAX
#define SMTP_PIPELINE_MAX	64	/* commands awaiting their reply */
#define SMTP_BDAT_MAX		((uint64_t)1 << 50)

enum smtp_verb {
	SMTP_OTHER,
	SMTP_EHLO,
	SMTP_HELO,
	SMTP_STARTTLS,
	SMTP_NOOP,
	SMTP_RSET,
	SMTP_QUIT,
	SMTP_MAIL,
	SMTP_RCPT,
	SMTP_DATA,
	SMTP_BDAT,
	SMTP_AUTH,
};

struct smtp_command {
	enum smtp_verb	 verb;
	const char	*args;		/* after the verb and its spaces */
	size_t		 argslen;
};

/* The verb of a command line's text (without its line ending). */
void	smtp_command_parse(const char *text, size_t len, struct smtp_command *out);

/*
 * True when a line, p[0..linelen) with its LF, ends in CRLF and holds no
 * other CR: the only line ending every SMTP server reads alike (RFC 5321
 * section 2.3.8).  A bare LF or bare CR is where servers disagree about
 * where a command ends (SMTP smuggling, CVE-2023-51764).
 */
bool	smtp_line_crlf(const char *p, size_t linelen);

/* True for the commands allowed before TLS under require_tls. */
bool	smtp_allowed_before_tls(enum smtp_verb);

/*
 * "BDAT <size> [LAST]" arguments (RFC 3030).  0, or -1 if malformed; the
 * outputs are written only on success.
 */
int	smtp_bdat_args(const char *args, size_t len, uint64_t *size, bool *last);

struct smtp_reply {
	int		 code;		/* 200..599 */
	bool		 final;		/* "250 " rather than "250-" */
	const char	*text;		/* after the code and separator */
	size_t		 textlen;
};

/*
 * One reply line's text (without its line ending): three digits, then
 * '-', ' ' or nothing.  PARSE_OK or PARSE_MALFORMED; *out is written only
 * with PARSE_OK.
 */
enum parse_result smtp_reply_parse(const char *text, size_t len, struct smtp_reply *out);

#define SMTP_EHLO_ADD_STARTTLS	0x01
#define SMTP_EHLO_DROP_STARTTLS	0x02
#define SMTP_EHLO_DROP_AUTH	0x04

/* Is the text of an EHLO reply line (after "250-") the extension kw? */
bool	smtp_ehlo_keyword_is(const char *text, size_t len, const char *kw);

/*
 * Does the EHLO reply, reply[0..len) whole, offer the extension kw on a
 * line after its first (which names the server)?  False for anything
 * that is not a positive reply.
 */
bool	smtp_ehlo_offers(const char *reply, size_t len, const char *kw);

/*
 * Rewrite a complete, positive multiline EHLO reply: drop the STARTTLS
 * or AUTH (and AUTH=) extensions, add "250-STARTTLS" before the last line
 * (last, after a greeting alone), and renumber the continuation marks.
 * At most 128 lines.  Lines end in CRLF on output.  Returns the output
 * length, or -1 if the reply is malformed or does not fit in outlen.
 */
ssize_t	smtp_ehlo_rewrite(const char *reply, size_t len, unsigned flags,
	    char *out, size_t outlen);

/*
 * The end of DATA content, "CRLF . CRLF" (RFC 5321 section 4.1.1.4),
 * found across any split of the stream.  Start with smtp_data_begin()
 * after the 354 reply.  Returns PARSE_OK with *used the bytes up to and
 * including the final CRLF; PARSE_NEED_MORE when p[0..len) is all
 * content.  Strict (before TLS): a bare LF, or a CR not followed by LF,
 * anywhere in the content is PARSE_MALFORMED, with *used the bytes of
 * p before the one that showed it; otherwise such bytes are content.
 * Only CRLF "." CRLF ever ends the data: with no bare line ending in the
 * stream, every server finds the end where the proxy does (SMTP
 * smuggling: Postfix before smtpd_forbid_bare_newline takes "LF . CRLF"
 * for it, Sendmail before its 'o' option a dot alone between any line
 * endings).  *used is written only with PARSE_OK and PARSE_MALFORMED.
 */
struct smtp_data {
	unsigned	 state;
	bool		 strict;
};
void	smtp_data_begin(struct smtp_data *, bool strict);
enum parse_result smtp_data_end(struct smtp_data *, const char *p, size_t len, size_t *used);

#endif
