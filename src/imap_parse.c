/*
 * IMAP framing, commands, responses and capability lists (imap_parse.h).
 */
#include "autoconfig.h"

#include <string.h>
#include <strings.h>

#include "imap_parse.h"

/*
 * ATOM-CHAR (RFC 9051 section 9): any CHAR but atom-specials, that is
 * "(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]".
 */
static bool
imap_atom_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("(){%*\"\\]", c) == NULL;
}

/* tag = 1*<any ASTRING-CHAR except "+">; ASTRING-CHAR adds "]". */
static bool
imap_tag_char(unsigned char c)
{
	return (imap_atom_char(c) || c == ']') && c != '+';
}

static bool
imap_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* The word t[0..len) is w, ignoring ASCII case. */
static bool
imap_word_is(const char *t, size_t len, const char *w)
{
	return strlen(w) == len && strncasecmp(t, w, len) == 0;
}

/*
 * The literal marker that ends text t[0..len), "{digits}" or, where plus
 * is allowed, "{digits+}": the position of its '{', with l's literal
 * fields set; -1 when there is none (l untouched).  More than
 * IMAP_LITERAL_DIGITS_MAX digits is no literal the proxy can frame: -2.
 */
static ssize_t
imap_literal_marker(const char *t, size_t len, bool plus, struct imap_line *l)
{
	size_t		 i, end;
	uint64_t	 n = 0;
	bool		 nonsync = false;

	if (len < 3 || t[len - 1] != '}')
		return -1;
	i = len - 1;
	if (plus && t[i - 1] == '+') {
		nonsync = true;
		i--;
	}
	end = i;
	while (i > 0 && imap_digit(t[i - 1]))
		i--;
	if (i == 0 || t[i - 1] != '{' || i == end)
		return -1;
	if (end - i > IMAP_LITERAL_DIGITS_MAX)
		return -2;
	for (size_t k = i; k < end; k++)
		n = n * 10 + (uint64_t)(t[k] - '0');
	l->literal = nonsync ? IMAP_LITERAL_NONSYNC : IMAP_LITERAL_SYNC;
	l->literal_size = n;
	l->literal8 = i >= 2 && t[i - 2] == '~';
	return (ssize_t)(i - 1);
}

/*
 * A command line's braces and quotes: every '{' outside a quoted string
 * is the final literal marker (at position marker), where an argument
 * starts: after SP or '(' (or "~" after one of them), and every quoted
 * string is closed.  Inside a quoted string '\' escapes the next byte
 * (RFC 9051 quoted-specials); a CR or LF cannot be in one, so a quoted
 * string never spans two lines.
 */
static bool
imap_command_braces(const char *t, size_t len, ssize_t marker)
{
	bool	 quoted = false;
	size_t	 s;

	for (size_t i = 0; i < len; i++) {
		if (quoted) {
			if (t[i] == '\\') {
				if (++i == len)
					return false;
			} else if (t[i] == '"')
				quoted = false;
			continue;
		}
		if (t[i] == '"')
			quoted = true;
		else if (t[i] == '{') {
			if ((ssize_t)i != marker)
				return false;
			s = i > 0 && t[i - 1] == '~' ? i - 1 : i;
			if (s == 0 || (t[s - 1] != ' ' && t[s - 1] != '('))
				return false;
		}
	}
	return !quoted;
}

enum parse_result
imap_line_next(const char *p, size_t len, size_t max, enum imap_line_mode mode,
    struct imap_line *out)
{
	size_t		 scan = len < max ? len : max;
	const char	*lf = memchr(p, '\n', scan);
	struct imap_line l;
	ssize_t		 marker;
	size_t		 n;

	if (lf == NULL)
		return len < max ? PARSE_NEED_MORE : PARSE_TOO_LONG;
	memset(&l, 0, sizeof(l));
	n = (size_t)(lf - p);
	l.len = n + 1;
	l.textlen = n > 0 && p[n - 1] == '\r' ? n - 1 : n;
	l.clean = l.textlen + 2 == l.len && memchr(p, '\r', l.textlen) == NULL &&
	    memchr(p, '\0', l.textlen) == NULL;
	marker = imap_literal_marker(p, l.textlen, mode == IMAP_LINE_COMMAND, &l);
	if (marker == -2)
		l.malformed = true;
	else if (mode == IMAP_LINE_COMMAND)
		l.malformed = !imap_command_braces(p, l.textlen, marker);
	if (l.malformed) {
		/* no literal is honoured on a line the proxy cannot frame */
		l.literal = IMAP_LITERAL_NONE;
		l.literal8 = false;
		l.literal_size = 0;
	}
	*out = l;
	return PARSE_OK;
}

static const struct {
	const char	*name;
	enum imap_verb	 verb;
} imap_verbs[] = {
	{ "CAPABILITY",		IMAP_CAPABILITY },
	{ "NOOP",		IMAP_NOOP },
	{ "LOGOUT",		IMAP_LOGOUT },
	{ "ID",			IMAP_ID },
	{ "STARTTLS",		IMAP_STARTTLS },
	{ "LOGIN",		IMAP_LOGIN },
	{ "AUTHENTICATE",	IMAP_AUTHENTICATE },
};

enum parse_result
imap_command_parse(const char *text, size_t len, struct imap_command *out)
{
	size_t	 i = 0, v;

	memset(out, 0, sizeof(*out));
	out->verb = IMAP_OTHER;
	while (i < len && imap_tag_char((unsigned char)text[i]))
		i++;
	if (i == 0 || i > IMAP_TAG_MAX || i == len || text[i] != ' ')
		return PARSE_MALFORMED;
	out->tag = text;
	out->taglen = i;
	v = ++i;
	while (i < len && imap_atom_char((unsigned char)text[i]))
		i++;
	if (i == v || (i < len && text[i] != ' '))
		return PARSE_MALFORMED;
	for (size_t k = 0; k < sizeof(imap_verbs) / sizeof(imap_verbs[0]); k++)
		if (imap_word_is(text + v, i - v, imap_verbs[k].name))
			out->verb = imap_verbs[k].verb;
	if (i < len) {
		out->args = text + i + 1;
		out->argslen = len - i - 1;
	}
	return PARSE_OK;
}

bool
imap_allowed_before_tls(enum imap_verb verb)
{
	switch (verb) {
	case IMAP_CAPABILITY:
	case IMAP_NOOP:
	case IMAP_LOGOUT:
	case IMAP_ID:
	case IMAP_STARTTLS:
		return true;
	default:
		return false;
	}
}

/* The word that starts t[0..len): up to SP, or to ']' when in a code. */
static size_t
imap_word(const char *t, size_t len, bool code)
{
	size_t	 i = 0;

	while (i < len && t[i] != ' ' && !(code && t[i] == ']'))
		i++;
	return i;
}

enum parse_result
imap_response_parse(const char *text, size_t len, struct imap_response *out)
{
	struct imap_response	 r;
	size_t			 i, w;

	memset(&r, 0, sizeof(r));
	if (len >= 1 && text[0] == '+' && (len == 1 || text[1] == ' ')) {
		r.kind = IMAP_RESP_CONTINUATION;
		*out = r;
		return PARSE_OK;
	}
	if (len >= 2 && text[0] == '*' && text[1] == ' ') {
		r.kind = IMAP_RESP_UNTAGGED;
		i = 2;
	} else {
		for (i = 0; i < len && imap_tag_char((unsigned char)text[i]); i++)
			;
		if (i == 0 || i == len || text[i] != ' ')
			return PARSE_MALFORMED;
		r.kind = IMAP_RESP_TAGGED;
		r.tag = text;
		r.taglen = i++;
	}
	w = imap_word(text + i, len - i, false);
	if (w == 0)
		return PARSE_MALFORMED;
	if (imap_word_is(text + i, w, "OK"))
		r.status = IMAP_STATUS_OK;
	else if (imap_word_is(text + i, w, "NO"))
		r.status = IMAP_STATUS_NO;
	else if (imap_word_is(text + i, w, "BAD"))
		r.status = IMAP_STATUS_BAD;
	else if (imap_word_is(text + i, w, "BYE"))
		r.status = IMAP_STATUS_BYE;
	else if (imap_word_is(text + i, w, "PREAUTH"))
		r.status = IMAP_STATUS_PREAUTH;
	if (r.kind == IMAP_RESP_TAGGED && r.status != IMAP_STATUS_OK &&
	    r.status != IMAP_STATUS_NO && r.status != IMAP_STATUS_BAD)
		return PARSE_MALFORMED;
	if (r.status == IMAP_STATUS_NONE) {
		/* untagged data: "* CAPABILITY" SP list, RFC 9051 section 7.2.2 */
		if (imap_word_is(text + i, w, "CAPABILITY")) {
			r.capability = true;
			r.caps_off = i + w;
			r.caps_len = len - r.caps_off;
		}
		*out = r;
		return PARSE_OK;
	}
	/* resp-text = ["[" resp-text-code "]" SP] text */
	i += w;
	if (i + 1 < len && text[i] == ' ' && text[i + 1] == '[') {
		const char *end;

		i += 2;
		w = imap_word(text + i, len - i, true);
		if (imap_word_is(text + i, w, "CAPABILITY")) {
			if ((end = memchr(text + i, ']', len - i)) == NULL)
				return PARSE_MALFORMED;
			r.capability = true;
			r.caps_off = i + w;
			r.caps_len = (size_t)(end - text) - r.caps_off;
		}
	}
	*out = r;
	return PARSE_OK;
}

static bool
imap_caps_dropped(const char *item, size_t len, unsigned flags)
{
	if ((flags & IMAP_CAPS_DROP_AUTH) && len >= 5 && strncasecmp(item, "AUTH=", 5) == 0)
		return true;
	if ((flags & IMAP_CAPS_DROP_STARTTLS) && imap_word_is(item, len, "STARTTLS"))
		return true;
	if ((flags & IMAP_CAPS_DROP_LOGINDISABLED) && imap_word_is(item, len, "LOGINDISABLED"))
		return true;
	return false;
}

/*
 * Call fn on each item of the list l[0..len) (items separated by one SP
 * or more), until it returns false.  The number of items, or -1 past
 * IMAP_CAPABILITY_ITEMS_MAX.
 */
static int
imap_caps_each(const char *l, size_t len, bool (*fn)(const char *, size_t, void *), void *arg)
{
	size_t	 i = 0, w;
	int	 n = 0;

	while (i < len) {
		if (l[i] == ' ') {
			i++;
			continue;
		}
		w = imap_word(l + i, len - i, false);
		if (++n > IMAP_CAPABILITY_ITEMS_MAX)
			return -1;
		if (!fn(l + i, w, arg))
			break;
		i += w;
	}
	return n;
}

struct imap_caps_out {
	char		*out;
	size_t		 off;
	size_t		 outlen;
	unsigned	 flags;
	bool		 fits;
	bool		 starttls;	/* seen */
	bool		 logindisabled;
};

static void
imap_caps_put(struct imap_caps_out *o, const char *p, size_t len)
{
	if (!o->fits || len > o->outlen - o->off) {
		o->fits = false;
		return;
	}
	memcpy(o->out + o->off, p, len);
	o->off += len;
}

static bool
imap_caps_keep(const char *item, size_t len, void *arg)
{
	struct imap_caps_out *o = arg;

	if (imap_caps_dropped(item, len, o->flags))
		return true;
	if (imap_word_is(item, len, "STARTTLS"))
		o->starttls = true;
	if (imap_word_is(item, len, "LOGINDISABLED"))
		o->logindisabled = true;
	imap_caps_put(o, " ", 1);
	imap_caps_put(o, item, len);
	return true;
}

ssize_t
imap_capability_rewrite(const char *text, size_t len, unsigned flags, char *out, size_t outlen)
{
	struct imap_response	 r;
	struct imap_caps_out	 o = { .out = out, .outlen = outlen, .flags = flags, .fits = true };

	if (imap_response_parse(text, len, &r) != PARSE_OK || !r.capability)
		return -1;
	imap_caps_put(&o, text, r.caps_off);
	if (imap_caps_each(text + r.caps_off, r.caps_len, imap_caps_keep, &o) == -1)
		return -1;
	if ((flags & IMAP_CAPS_ADD_STARTTLS) && !o.starttls)
		imap_caps_put(&o, " STARTTLS", 9);
	if ((flags & IMAP_CAPS_ADD_LOGINDISABLED) && !o.logindisabled)
		imap_caps_put(&o, " LOGINDISABLED", 14);
	imap_caps_put(&o, text + r.caps_off + r.caps_len, len - r.caps_off - r.caps_len);
	imap_caps_put(&o, "\r\n", 2);
	return o.fits ? (ssize_t)o.off : -1;
}

struct imap_caps_find {
	const char	*cap;
	bool		 found;
};

static bool
imap_caps_match(const char *item, size_t len, void *arg)
{
	struct imap_caps_find *f = arg;

	if (imap_word_is(item, len, f->cap))
		f->found = true;
	return !f->found;
}

bool
imap_capability_has(const char *text, size_t len, const char *cap)
{
	struct imap_response	 r;
	struct imap_caps_find	 f = { .cap = cap };

	if (imap_response_parse(text, len, &r) != PARSE_OK || !r.capability)
		return false;
	(void)imap_caps_each(text + r.caps_off, r.caps_len, imap_caps_match, &f);
	return f.found;
}
