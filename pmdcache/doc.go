// Package pmdcache is secretheap's chunk cache: it hands the allocator
// chunks of secret memory (from package secretmem), commits their OS pages
// lazily, keeps wholly free chunks for reuse, and maps any address back to its
// chunk in O(1) without a lock.
//
// # Layout
//
// One arena of address space (64 GiB by default) is reserved PROT_NONE with
// MAP_NORESERVE: it costs no memory and no RLIMIT_MEMLOCK. It is cut into
// 4 MiB slots. A chunk sits at the start of a slot and is 2 MiB (aligned to
// 2 MiB), or a power of two down to 64 KiB when the memlock headroom (or
// Config.Limit) leaves less than 2 MiB; the rest of the slot stays PROT_NONE
// and is the guard after the chunk, so an overrun faults instead of reading
// the next chunk. Slot 0 is never used, so every chunk has a guard before it
// too. A large region (GetLarge) takes as many consecutive slots as it needs
// plus at least one guard OS page. Lookup is (addr-arena)>>22 into a table of
// atomic chunk pointers.
//
// # States
//
// A slot, and the chunk in it, move between these states (the Go runtime's
// mem.go names its states the same way):
//
//	Reserved  PROT_NONE, in no chunk: no memory, no memlock.
//	InUse     mapped (old model: memlock charged for the whole chunk; new
//	          model: each OS page charged as it is committed), owned by the
//	          caller, found by Lookup.
//	Idle      mapped, kept by the cache for reuse with its committed OS pages;
//	          Lookup returns nil for it.
//
//	Reserved ──Get/GetLarge──▶ InUse        (secretmem.MapAt)
//	Idle     ──Get──────────▶ InUse        (no system call)
//	InUse    ──Put──────────▶ Idle         (while fewer than MaxIdleChunks are idle)
//	InUse    ──Put──────────▶ Reserved     (large regions, or beyond MaxIdleChunks: wiped, unmapped)
//	any      ──Close────────▶ Reserved, then the arena is released
//
// The OS pages of a mapped chunk are Uncommitted (no memory yet; touching one
// would fault it in, and past the memlock limit on newer kernels that is a
// SIGBUS) or Committed (allocated, zeroed, out of the direct map).
// Chunk.Commit moves a prefix of the chunk from Uncommitted to Committed;
// nothing moves a page back but unmapping the whole chunk, because
// memfd_secret cannot release single OS pages and faulting them again costs
// ~20 µs each and splits the kernel direct map for good. That is why idle
// chunks are kept committed: reuse is the point.
//
// # Commit runs
//
// Chunk.Commit(end) commits the OS pages [0, end) in runs on the allocator's
// slow path. The first run of a chunk is exactly what is asked, rounded up to
// an OS page, so the first allocation in a process costs one slab's worth of
// faults (one OS page: 20 µs median in BenchmarkFirstCommitPage, against
// 5.6 µs for anonymous memory), not a whole chunk (512 OS pages: 27 ms in
// BenchmarkChunkFaultIn, 26× anonymous memory, on a loaded 2-vCPU VM). Each
// further run doubles the last one, capped at maxRunPages (64 OS pages,
// 256 KiB, ≈ 1.3–3.5 ms of faults): growth keeps the number of slow-path
// trips logarithmic while a heap warms up, and the cap bounds both the stall
// of one trip and the committed-but-unused memory to 256 KiB per chunk.
// Config.MaxRunPages changes the cap (1: commit exactly what is asked).
//
// Callers must write only to committed OS pages; the cache expects a chunk
// handed to Put to be wiped already (the allocator wipes every block on
// free), and hands an idle chunk out again as it was put.
package pmdcache
