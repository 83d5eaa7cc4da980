// Package secretmem is the source layer of secretheap: it maps page-aligned
// regions of secret memory and says, with a typed error, why it cannot.
//
// Two backends serve a region:
//
//   - BackendSecret: a memfd_secret(2) file (Linux ≥ 5.14, on by default since
//     6.5). Its OS pages are removed from the kernel direct map, never swapped,
//     left out of core dumps (written as zeros), and unreadable by any other
//     process, including through /proc/PID/mem, process_vm_readv(2) and
//     ptrace(PEEKDATA). The mapping must be MAP_SHARED. Kernels charge it
//     against RLIMIT_MEMLOCK in one of two ways (Model, Detect): the whole
//     mapping to the process at mmap (EAGAIN past the limit; the old model),
//     or each OS page to the user at its first fault (the new model).
//   - BackendLocked: an anonymous private mapping, mlock2(MLOCK_ONFAULT),
//     MADV_DONTDUMP and MADV_WIPEONFORK. Never swapped, out of core dumps, gone
//     in a forked child — but still in the direct map and readable by a
//     same-user ptracer. It is the fallback where memfd_secret is missing.
//
// A Policy chooses between them: PolicyAuto (memfd_secret, else locked; the
// region says which backend served it and why it fell back), PolicySecret
// (fail with ErrUnsupported) and PolicyLocked.
//
// The life of a region's OS pages, and the call that moves between states:
//
//	None ──Reserve──▶ Reserved (PROT_NONE, MAP_NORESERVE: no memory, no memlock)
//	Reserved ──MapAt──▶ Mapped (old model: memlock charged for the whole region; no memory yet)
//	Mapped ──Commit──▶ Committed (OS page allocated and zeroed; secret: out of the direct map)
//	Committed ──Wipe──▶ Committed (zeroed in place; the OS page stays)
//	Mapped/Committed ──Close──▶ Reserved (wiped, unmapped, PROT_NONE left behind)
//
// Commit allocates OS pages explicitly with a kernel-side write into each (a
// raw clock_gettime, no descriptor; secret) or
// MADV_POPULATE_WRITE (locked), so that a page the kernel refuses is an error
// (ErrMemlock) on a slow path the caller chose, never a SIGBUS on first touch.
// Single OS pages cannot be given back to the kernel from a memfd_secret
// mapping (fallocate and MADV_DONTNEED fail): memory returns only when the
// whole region is closed.
//
// We write "OS page" for the 4 KiB kernel unit and never say plain "page".
package secretmem
