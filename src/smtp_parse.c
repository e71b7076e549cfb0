/*
 * SMTP parsing: see smtp_parse.h.
 */
#include "autoconfig.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "line_parse.h"
#include "smtp_parse.h"

static const struct {
	const char	*name;
	enum smtp_verb	 verb;
} smtp_verbs[] = {
	{ "EHLO", SMTP_EHLO },		{ "HELO", SMTP_HELO },
	{ "STARTTLS", SMTP_STARTTLS },	{ "NOOP", SMTP_NOOP },
	{ "RSET", SMTP_RSET },		{ "QUIT", SMTP_QUIT },
	{ "MAIL", SMTP_MAIL },		{ "RCPT", SMTP_RCPT },
	{ "DATA", SMTP_DATA },		{ "BDAT", SMTP_BDAT },
	{ "AUTH", SMTP_AUTH },
};

void
smtp_command_parse(const char *text, size_t len, struct smtp_command *out)
{
	size_t	 v = 0, a;

	while (v < len && text[v] != ' ' && text[v] != '\t')
		v++;
	a = v;
	while (a < len && (text[a] == ' ' || text[a] == '\t'))
		a++;
	out->verb = SMTP_OTHER;
	out->args = text + a;
	out->argslen = len - a;
	for (size_t i = 0; i < sizeof(smtp_verbs) / sizeof(smtp_verbs[0]); i++) {
		if (strlen(smtp_verbs[i].name) == v &&
		    strncasecmp(text, smtp_verbs[i].name, v) == 0) {
			out->verb = smtp_verbs[i].verb;
			break;
		}
	}
}

bool
smtp_line_crlf(const char *p, size_t linelen)
{
	if (linelen < 2 || p[linelen - 1] != '\n' || p[linelen - 2] != '\r')
		return false;
	return memchr(p, '\r', linelen - 2) == NULL;
}

bool
smtp_allowed_before_tls(enum smtp_verb verb)
{
	switch (verb) {
	case SMTP_EHLO:
	case SMTP_HELO:
	case SMTP_NOOP:
	case SMTP_RSET:
	case SMTP_QUIT:
	case SMTP_STARTTLS:
		return true;
	default:
		return false;
	}
}

int
smtp_bdat_args(const char *args, size_t len, uint64_t *size, bool *last)
{
	uint64_t	 n = 0;
	size_t		 i = 0;
	bool		 is_last = false;

	if (len == 0 || !isdigit((unsigned char)args[0]))
		return -1;
	for (; i < len && isdigit((unsigned char)args[i]); i++) {
		n = n * 10 + (uint64_t)(args[i] - '0');
		if (n > SMTP_BDAT_MAX)
			return -1;
	}
	if (i < len) {
		/* exactly one more argument, after one space: "LAST" */
		if (args[i] != ' ' || len - i - 1 != 4 ||
		    strncasecmp(args + i + 1, "LAST", 4) != 0)
			return -1;
		is_last = true;
	}
	*size = n;
	*last = is_last;
	return 0;
}

enum parse_result
smtp_reply_parse(const char *text, size_t len, struct smtp_reply *out)
{
	if (len < 3 || !isdigit((unsigned char)text[0]) || text[0] < '2' || text[0] > '5' ||
	    !isdigit((unsigned char)text[1]) || !isdigit((unsigned char)text[2]))
		return PARSE_MALFORMED;
	if (len > 3 && text[3] != ' ' && text[3] != '-')
		return PARSE_MALFORMED;
	out->code = (text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0');
	out->final = len == 3 || text[3] == ' ';
	out->text = len > 3 ? text + 4 : text + 3;
	out->textlen = len > 3 ? len - 4 : 0;
	return PARSE_OK;
}

/* The first word of an EHLO line's text is its extension keyword. */
static bool
ehlo_keyword_is(const char *text, size_t len, const char *kw, bool allow_eq)
{
	size_t	 n = strlen(kw);

	if (len < n || strncasecmp(text, kw, n) != 0)
		return false;
	return len == n || text[n] == ' ' || (allow_eq && text[n] == '=');
}

bool
smtp_ehlo_keyword_is(const char *text, size_t len, const char *kw)
{
	return ehlo_keyword_is(text, len, kw, false);
}

bool
smtp_ehlo_offers(const char *reply, size_t len, const char *kw)
{
	size_t			 pos = 0, linelen, textlen;
	struct smtp_reply	 r;
	bool			 first = true;

	while (pos < len) {
		if (line_next(reply + pos, len - pos, len - pos + 1, &linelen, &textlen) != PARSE_OK ||
		    smtp_reply_parse(reply + pos, textlen, &r) != PARSE_OK || r.code != 250)
			return false;
		if (!first && ehlo_keyword_is(r.text, r.textlen, kw, false))
			return true;
		first = false;
		pos += linelen;
	}
	return false;
}

static bool
append(char *out, size_t outlen, size_t *off, const char *p, size_t n)
{
	if (*off + n > outlen)
		return false;
	memcpy(out + *off, p, n);
	*off += n;
	return true;
}

ssize_t
smtp_ehlo_rewrite(const char *reply, size_t len, unsigned flags, char *out, size_t outlen)
{
	struct {
		const char	*text;
		size_t		 len;
	}			 keep[128];
	size_t			 nkeep = 0, off = 0, pos = 0, linelen, textlen;
	struct smtp_reply	 r;
	bool			 final = false;

	while (pos < len && !final) {
		if (line_next(reply + pos, len - pos, len - pos + 1, &linelen, &textlen) != PARSE_OK ||
		    smtp_reply_parse(reply + pos, textlen, &r) != PARSE_OK || r.code != 250)
			return -1;
		final = r.final;
		pos += linelen;
		if (nkeep > 0) {	/* the first line is the greeting, always kept */
			if ((flags & (SMTP_EHLO_DROP_STARTTLS | SMTP_EHLO_ADD_STARTTLS)) &&
			    ehlo_keyword_is(r.text, r.textlen, "STARTTLS", false))
				continue;
			if ((flags & SMTP_EHLO_DROP_AUTH) &&
			    ehlo_keyword_is(r.text, r.textlen, "AUTH", true))
				continue;
		}
		if (nkeep == sizeof(keep) / sizeof(keep[0]))
			return -1;
		keep[nkeep].text = r.text;
		keep[nkeep].len = r.textlen;
		nkeep++;
	}
	if (!final || pos != len || nkeep == 0)
		return -1;
	if (flags & SMTP_EHLO_ADD_STARTTLS) {
		/* "250-STARTTLS" before the last line, or last after a lone greeting */
		size_t at = nkeep > 1 ? nkeep - 1 : nkeep;

		if (nkeep == sizeof(keep) / sizeof(keep[0]))
			return -1;
		memmove(&keep[at + 1], &keep[at], (nkeep - at) * sizeof(keep[0]));
		keep[at].text = "STARTTLS";
		keep[at].len = 8;
		nkeep++;
	}
	for (size_t i = 0; i < nkeep; i++) {
		if (!append(out, outlen, &off, i + 1 == nkeep ? "250 " : "250-", 4) ||
		    !append(out, outlen, &off, keep[i].text, keep[i].len) ||
		    !append(out, outlen, &off, "\r\n", 2))
			return -1;
	}
	return (ssize_t)off;
}

enum {
	DATA_MID,	/* inside a line */
	DATA_CR,	/* after a CR */
	DATA_BOL,	/* at the beginning of a line */
	DATA_DOT,	/* a line that starts with '.' */
	DATA_DOTCR,	/* ".", CR */
};

void
smtp_data_begin(struct smtp_data *d, bool strict)
{
	d->state = DATA_BOL;	/* the content starts on a line of its own */
	d->strict = strict;
}

/* Where the next CR or LF is (strict); len if none. */
static size_t
data_skip_strict(const char *p, size_t i, size_t len)
{
	while (i < len && p[i] != '\r' && p[i] != '\n')
		i++;
	return i;
}

/*
 * Lax (inside TLS): from p[i], in DATA_MID with i >= 2, where the next
 * '.' that starts a line is, or len.  A terminator needs a dot at the
 * start of a line, and dots are rarer than line endings: memchr() for
 * the dot and a look at the two bytes before it do in one pass what the
 * byte-wise machine does per line.  With no such dot, *state is what
 * the machine would have reached at the end of p.
 */
static size_t
data_skip_lax(const char *p, size_t i, size_t len, unsigned *state)
{
	const char	*dot;
	size_t		 j;

	while ((dot = memchr(p + i, '.', len - i)) != NULL) {
		j = (size_t)(dot - p);
		if (p[j - 2] == '\r' && p[j - 1] == '\n') {
			*state = DATA_BOL;
			return j;
		}
		i = j + 1;
	}
	if (p[len - 1] == '\r')
		*state = DATA_CR;
	else if (p[len - 2] == '\r' && p[len - 1] == '\n')
		*state = DATA_BOL;
	return len;
}

enum parse_result
smtp_data_end(struct smtp_data *d, const char *p, size_t len, size_t *used)
{
	size_t	 i = 0;
	char	 c;

	while (i < len) {
		if (d->state == DATA_MID) {
			/* the common case: skip what cannot end the data */
			if (d->strict)
				i = data_skip_strict(p, i, len);
			else if (i >= 2)
				i = data_skip_lax(p, i, len, &d->state);
			if (i == len)
				return PARSE_NEED_MORE;
		}
		c = p[i++];
		if (d->strict) {
			/* a LF must follow a CR, and only a CR may precede a LF */
			bool after_cr = d->state == DATA_CR || d->state == DATA_DOTCR;

			if ((c == '\n') != after_cr) {
				*used = i - 1;
				return PARSE_MALFORMED;
			}
		}
		switch (d->state) {
		case DATA_MID:
			d->state = c == '\r' ? DATA_CR : DATA_MID;
			break;
		case DATA_CR:
			d->state = c == '\n' ? DATA_BOL : c == '\r' ? DATA_CR : DATA_MID;
			break;
		case DATA_BOL:
			d->state = c == '.' ? DATA_DOT : c == '\r' ? DATA_CR : DATA_MID;
			break;
		case DATA_DOT:
			d->state = c == '\r' ? DATA_DOTCR : DATA_MID;
			break;
		case DATA_DOTCR:
			if (c == '\n') {
				d->state = DATA_BOL;
				*used = i;
				return PARSE_OK;
			}
			d->state = c == '\r' ? DATA_CR : DATA_MID;
			break;
		}
	}
	return PARSE_NEED_MORE;
}
