/* A kernel family's table by name, from the tables the architecture's manifest
 * (native/<arch>/kernels.c) fills. */
#include <string.h>
#include "lila_manifest.h"

const lila_kernels *lila_kernel_table(const char *family)
{
    static const lila_kernels *tables;
    static size_t count;
    if (!tables)   /* called from Python before any thread starts */
        count = lila_fill_kernel_tables(&tables);
    for (size_t i = 0; i < count; i++)
        if (strcmp(family, tables[i].name) == 0) return &tables[i];
    return NULL;
}
