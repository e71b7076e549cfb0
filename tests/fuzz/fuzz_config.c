/*
 * libFuzzer target: configuration loading from a buffer (src/config.c):
 * libconfig's reader and every validation, without touching files.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_errors	 errs = { 0 };
	struct config		*cfg;
	char			*text;

	if (size > 65536 || (text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	/* @include would read files: not from fuzzed input */
	if (strstr(text, "@include") == NULL) {
		cfg = config_load_string(text, "fuzz.conf", &errs);
		if ((cfg == NULL) == (errs.count == 0))
			__builtin_trap();	/* failure always says why */
		config_unref(cfg);
		config_errors_clear(&errs);
	}
	free(text);
	return 0;
}
