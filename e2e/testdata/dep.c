/* libdep.so — loaded by runpath_main through its DT_RUNPATH only. */
int dep_value(void);
int dep_value(void) { return 42; }
