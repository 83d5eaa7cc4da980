// Compiles cshim/check.c into the cgo binding, as its own translation unit (see
// core.go). One such file per file of CSHIM_CORE in cshim/cshim.mk;
// TestBindingSources checks the list.
#include "../../cshim/check.c"
