/* sibling_main — dlopen()s libouter.so (argv[1], by path; this program has
 * no run path of its own) and asks it to load its sibling both ways. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (h == NULL)
        return 2;
    int (*load)(const char *);
    *(void **)&load = dlsym(h, "outer_load");
    if (load == NULL)
        return 2;
    printf("bare %d\n", load("libdep.so"));
    printf("origin %d\n", load("$ORIGIN/libdep.so"));
    return 0;
}
