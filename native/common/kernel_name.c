/* Which kernel a table entry is: its symbol, as the dynamic linker knows it. */
#include <dlfcn.h>
#include "lila_kernels.h"

const char *lila_kernel_name(const void *kernel)
{
    Dl_info info;
    /* ISO C forbids converting a data pointer to a function pointer; dladdr takes void * */
    if (!kernel || !dladdr((void *)(uintptr_t)kernel, &info)) return NULL;
    return info.dli_sname;
}
