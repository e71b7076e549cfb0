/*
 * Unit tests for src/end.c: every end= the daemon can log is named in
 * starttls-proxy(8), LOGGING, and every name there is one it logs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "end.h"

/* The ".It Li name" entries of the list after "The values of". */
static size_t
man_end_names(char names[][64], size_t max)
{
	FILE	*f = fopen(MANPAGE, "r");
	char	 line[512];
	size_t	 n = 0;
	int	 in_list = 0, depth = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strstr(line, "The values of") != NULL && fgets(line, sizeof(line), f) != NULL &&
		    strncmp(line, ".Li end", 7) == 0) {
			in_list = 1;
			continue;
		}
		if (!in_list)
			continue;
		if (strncmp(line, ".Bl", 3) == 0)
			depth++;
		if (strncmp(line, ".El", 3) == 0 && --depth == 0)
			break;
		if (depth == 1 && strncmp(line, ".It Li ", 7) == 0 && n < max) {
			char *name = line + 7;

			name[strcspn(name, " \n")] = '\0';
			snprintf(names[n++], 64, "%s", name);
		}
	}
	fclose(f);
	return n;
}

static void
test_every_end_is_documented(void **state)
{
	char	 names[64][64];
	size_t	 n = man_end_names(names, 64);

	(void)state;
	assert_true(n >= END_MAX);
	for (int e = 0; e < END_MAX; e++) {
		size_t i;

		for (i = 0; i < n; i++)
			if (strcmp(names[i], end_name((enum session_end)e)) == 0)
				break;
		if (i == n)
			fail_msg("end=%s is not in starttls-proxy(8) LOGGING", end_name((enum session_end)e));
	}
	for (size_t i = 0; i < n; i++) {
		int e;

		for (e = 0; e < END_MAX; e++)
			if (strcmp(names[i], end_name((enum session_end)e)) == 0)
				break;
		if (e == END_MAX)
			fail_msg("starttls-proxy(8) names end=%s, which the daemon never logs", names[i]);
	}
}

static void
test_names_are_distinct(void **state)
{
	(void)state;
	for (int a = 0; a < END_MAX; a++)
		for (int b = a + 1; b < END_MAX; b++)
			assert_string_not_equal(end_name((enum session_end)a), end_name((enum session_end)b));
	assert_string_equal(end_name(END_MAX), "internal");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_end_is_documented),
		cmocka_unit_test(test_names_are_distinct),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
