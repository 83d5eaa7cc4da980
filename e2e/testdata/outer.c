/* libouter.so — a library whose DT_RUNPATH is $ORIGIN: it dlopen()s its
 * sibling libdep.so by bare name (found through its own run path) and by
 * "$ORIGIN/libdep.so" (expanded by glibc with the caller's directory). */
#include <dlfcn.h>
#include <stdio.h>

__attribute__((visibility("default"))) int outer_load(const char *name);
int outer_load(const char *name) {
    void *h = dlopen(name, RTLD_NOW);
    if (h == NULL) {
        printf("dlopen %s failed: %s\n", name, dlerror());
        return -1;
    }
    int (*f)(void);
    *(void **)&f = dlsym(h, "dep_value");
    return f ? f() : -1;
}
