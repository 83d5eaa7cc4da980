/* runpath_main — dlopen()s "libdep.so" by bare name; it is found only through
 * this program's DT_RUNPATH ($ORIGIN/sub). glibc searches the *caller's*
 * run path, so a dlopen wrapper that forgets who called it breaks this. */
#include <dlfcn.h>
#include <stdio.h>

int main(void) {
    void *h = dlopen("libdep.so", RTLD_NOW);
    if (h == NULL) {
        printf("dlopen failed: %s\n", dlerror());
        return 1;
    }
    int (*f)(void);
    *(void **)&f = dlsym(h, "dep_value");
    printf("dep_value %d\n", f ? f() : -1);
    return f && f() == 42 ? 0 : 1;
}
