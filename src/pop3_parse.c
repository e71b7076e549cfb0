/*
 * POP3 as pure functions over bytes: see pop3_parse.h.
 */
#include "autoconfig.h"

#include <string.h>
#include <strings.h>

#include "pop3_parse.h"

static const struct {
	const char	*name;
	enum pop3_verb	 verb;
} pop3_verbs[] = {
	{ "USER", POP3_USER },	{ "PASS", POP3_PASS },	{ "APOP", POP3_APOP },
	{ "AUTH", POP3_AUTH },	{ "STLS", POP3_STLS },	{ "CAPA", POP3_CAPA },
	{ "QUIT", POP3_QUIT },	{ "STAT", POP3_STAT },	{ "LIST", POP3_LIST },
	{ "RETR", POP3_RETR },	{ "DELE", POP3_DELE },	{ "NOOP", POP3_NOOP },
	{ "RSET", POP3_RSET },	{ "TOP", POP3_TOP },	{ "UIDL", POP3_UIDL },
	{ "LAST", POP3_LAST },	{ "UTF8", POP3_UTF8 },	{ "LANG", POP3_LANG },
	{ "XCLIENT", POP3_XCLIENT },	{ "XOIP", POP3_XOIP },
};

void
pop3_command_parse(const char *text, size_t len, struct pop3_command *out)
{
	const char	*sp = memchr(text, ' ', len);
	size_t		 vlen = sp != NULL ? (size_t)(sp - text) : len;

	out->verb = POP3_UNKNOWN;
	for (size_t i = 0; i < sizeof(pop3_verbs) / sizeof(pop3_verbs[0]); i++)
		if (strlen(pop3_verbs[i].name) == vlen &&
		    strncasecmp(text, pop3_verbs[i].name, vlen) == 0) {
			out->verb = pop3_verbs[i].verb;
			break;
		}
	if (sp != NULL) {
		out->args = sp + 1;
		out->argslen = len - vlen - 1;
	} else {
		out->args = text + len;
		out->argslen = 0;
	}
}

bool
pop3_no_argument(const struct pop3_command *c)
{
	for (size_t i = 0; i < c->argslen; i++)
		if (c->args[i] != ' ')
			return false;
	return true;
}

bool
pop3_is_login(enum pop3_verb v)
{
	return v == POP3_USER || v == POP3_PASS || v == POP3_APOP || v == POP3_AUTH;
}

bool
pop3_allowed_before_tls(enum pop3_verb v)
{
	return v == POP3_CAPA || v == POP3_QUIT || v == POP3_STLS;
}

enum pop3_shape
pop3_reply_shape(const struct pop3_command *c)
{
	switch (c->verb) {
	case POP3_CAPA:
	case POP3_RETR:
	case POP3_TOP:
		return POP3_MULTI;
	case POP3_LIST:
	case POP3_UIDL:
	case POP3_LANG:
		/* Dovecot skips every space before the argument */
		return pop3_no_argument(c) ? POP3_MULTI : POP3_SINGLE;
	case POP3_AUTH:
		/*
		 * Dovecot's pop3-login lists its mechanisms when the byte
		 * after "AUTH " is a space or a CR, as well as for AUTH alone.
		 */
		if (c->argslen == 0 || c->args[0] == ' ' || c->args[0] == '\r')
			return POP3_MULTI;
		return POP3_SASL;
	default:
		return POP3_SINGLE;
	}
}

/* text[0..len) begins with word, followed by a space or nothing. */
static bool
status_word(const char *text, size_t len, const char *word, size_t *skip)
{
	size_t	 n = strlen(word);

	if (len < n || memcmp(text, word, n) != 0)
		return false;
	if (len == n) {
		*skip = n;
		return true;
	}
	if (text[n] != ' ')
		return false;
	*skip = n + 1;
	return true;
}

enum parse_result
pop3_status_parse(const char *text, size_t len, bool sasl, struct pop3_status *out)
{
	enum pop3_status_kind	 kind;
	size_t			 skip;

	if (status_word(text, len, "+OK", &skip))
		kind = POP3_OK;
	else if (status_word(text, len, "-ERR", &skip))
		kind = POP3_ERR;
	else if (sasl && status_word(text, len, "+", &skip))
		kind = POP3_CONTINUE;
	else
		return PARSE_MALFORMED;
	out->kind = kind;
	out->text = text + skip;
	out->textlen = len - skip;
	return PARSE_OK;
}

enum {
	BODY_BOL,	/* at the start of a line (after CRLF) */
	BODY_MID,	/* inside a line */
	BODY_CR,	/* after a CR inside a line */
	BODY_DOT,	/* after a dot at the start of a line */
	BODY_DOT_CR,	/* after "." CR at the start of a line */
};

void
pop3_body_begin(struct pop3_body *b)
{
	b->state = BODY_BOL;
}

enum parse_result
pop3_body_end(struct pop3_body *b, const char *p, size_t len, size_t *used)
{
	unsigned	 st = b->state;

	for (size_t i = 0; i < len; i++) {
		char	 c = p[i];

		switch (st) {
		case BODY_BOL:
			st = c == '.' ? BODY_DOT : c == '\r' ? BODY_CR : BODY_MID;
			break;
		case BODY_DOT:
			st = c == '\r' ? BODY_DOT_CR : BODY_MID;
			break;
		case BODY_DOT_CR:
			if (c == '\n') {
				b->state = BODY_BOL;
				*used = i + 1;
				return PARSE_OK;
			}
			st = c == '\r' ? BODY_CR : BODY_MID;
			break;
		case BODY_CR:
			st = c == '\n' ? BODY_BOL : c == '\r' ? BODY_CR : BODY_MID;
			break;
		default:
			st = c == '\r' ? BODY_CR : BODY_MID;
			break;
		}
	}
	b->state = st;
	return PARSE_NEED_MORE;
}

bool
pop3_capa_is(const char *text, size_t len, const char *kw)
{
	size_t	 n = strlen(kw);

	return len >= n && strncasecmp(text, kw, n) == 0 && (len == n || text[n] == ' ');
}

/* Append p[0..n) to out, or fail. */
static bool
put(char *out, size_t outlen, size_t *off, const char *p, size_t n)
{
	if (n > outlen - *off)
		return false;
	memcpy(out + *off, p, n);
	*off += n;
	return true;
}

ssize_t
pop3_capa_rewrite(const char *reply, size_t len, unsigned flags, char *out, size_t outlen)
{
	const char		*p = reply, *end = reply + len, *lf;
	struct pop3_status	 st;
	size_t			 off = 0, n, textlen, lines = 0;
	bool			 done = false;

	while (p < end && !done) {
		const char	*text = p;

		if ((lf = memchr(p, '\n', (size_t)(end - p))) == NULL)
			return -1;
		n = (size_t)(lf - p) + 1;
		/* CRLF only, and no other CR: a line is what every client takes it for */
		if (n < 2 || p[n - 2] != '\r' || memchr(p, '\r', n - 2) != NULL)
			return -1;
		textlen = n - 2;
		p += n;
		if (++lines > POP3_CAPA_LINES_MAX)
			return -1;
		if (lines == 1) {
			if (pop3_status_parse(text, textlen, false, &st) != PARSE_OK ||
			    st.kind != POP3_OK)
				return -1;
		} else if (textlen == 1 && text[0] == '.') {
			if (flags & POP3_CAPA_ADD_STLS)
				if (!put(out, outlen, &off, "STLS\r\n", 6))
					return -1;
			done = true;
		} else {
			const char	*cap = text;
			size_t		 caplen = textlen;

			if (caplen > 0 && cap[0] == '.') {	/* dot-stuffed */
				cap++;
				caplen--;
			}
			if ((flags & (POP3_CAPA_ADD_STLS | POP3_CAPA_DROP_STLS)) &&
			    pop3_capa_is(cap, caplen, "STLS"))
				continue;
			if ((flags & POP3_CAPA_DROP_LOGIN) &&
			    (pop3_capa_is(cap, caplen, "USER") || pop3_capa_is(cap, caplen, "SASL")))
				continue;
		}
		if (!put(out, outlen, &off, text, n))
			return -1;
	}
	if (!done || p != end)
		return -1;
	return (ssize_t)off;
}
