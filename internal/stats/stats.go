// Package stats is the one table of secretheap's statistics: the fields of
// the C library's struct secretheap_stats, of the Go allocator's
// alloc.Stats and of the OpenSSL hooks' block (preload/openssl.c), with the key each has in the
// stats report and in its JSON form.
//
// From the table come:
//   - cshim/stats_table.h (mkstats.go, `make generate`; TestCHeaderUpToDate
//     fails when it is stale): the member lists stats.c prints the report's
//     "key value" lines and the JSON document from, the OpenSSL hooks' values, and
//     compile-time checks that struct secretheap_stats (cshim/include/secretheap.h) has
//     exactly these members in this order (a member added to the struct
//     alone, or to the table alone, stops the build);
//   - alloc.Stats's JSON form (alloc/stats.go), whose fields a test matches
//     to the table both ways;
//   - the reader of the JSON report (Report, ReadReports), used by the
//     secretheap command and cmd/benchreport instead of reading text.
//
// The JSON report is one object per line (a file collects one per process
// that wrote to it, appended): "pid", "version", "summary" (the human lines
// of the text report, as they are printed), every Field with C set under its
// Key as an unsigned integer, "failures_<cause>" per Cause but the first,
// "classes" (one object per size class, ClassFields), and "openssl" (the
// OpenSSL hooks' fields) when they are linked in (the preload library).
package stats

//go:generate go run mkstats.go

// Kind is what a value counts or says; every value is an unsigned integer
// but the OpenSSL hooks' Text values.
type Kind uint8

const (
	// Count is a number of things (blocks, chunks, calls, events).
	Count Kind = iota
	// Bytes is a number of bytes.
	Bytes
	// Flag is 0 or 1 (a bool in Go, written 0 or 1 in JSON).
	Flag
	// Code is one of a list of named constants (SECRETHEAP_BACKEND_*,
	// SECRETHEAP_MODEL_*, SECRETHEAP_CAUSE_*, openssl_hooked's 0/1/2).
	Code
	// Text is a word (the OpenSSL hooks' mode and verdicts).
	Text
)

// Field is one value of the report.
type Field struct {
	Key     string // C member of struct secretheap_stats, report key and JSON key
	Go      string // alloc.Stats field; "" when the Go allocator has none
	C       bool   // a member of struct secretheap_stats (false: Go only)
	Kind    Kind
	Meaning string // one line
}

// Fields are the scalar values, in the order of struct secretheap_stats
// (the C-only and shared ones; Go-only ones last). After openssl_hooked the
// struct holds classes[SECRETHEAP_NUM_CLASSES] (ClassFields, ClassesAfter),
// and it ends with failures[SECRETHEAP_NUM_CAUSES] (Causes).
//
// Adding a value means a row here, `make generate`, the member in
// struct secretheap_stats (appended: the struct's prefix is an ABI) and its
// filling in stats.c, and, if the Go allocator has it, the alloc.Stats field
// named in Go. The report's key value lines and the JSON follow.
var Fields = []Field{
	{"struct_size", "", true, Bytes, "bytes of the struct filled in"},
	{"backend", "", true, Code, "SECRETHEAP_BACKEND_* of the last chunk mapped, 0 before the first"},
	{"requested_bytes", "RequestedBytes", true, Bytes, "bytes asked for by live blocks (classes, page runs, large regions)"},
	{"reserved_bytes", "ReservedBytes", true, Bytes, "bytes reserved by live blocks (block sizes)"},
	{"live_blocks", "LiveBlocks", true, Count, "blocks handed out and not freed"},
	{"run_blocks", "RunBlocks", true, Count, "live page runs (requests above the largest class)"},
	{"run_requested_bytes", "RunRequestedBytes", true, Bytes, "bytes asked for by live page runs"},
	{"run_reserved_bytes", "RunReservedBytes", true, Bytes, "bytes reserved by live page runs"},
	{"large_regions", "LargeRegions", true, Count, "live large regions (requests above half a chunk)"},
	{"large_requested_bytes", "LargeRequestedBytes", true, Bytes, "bytes asked for by live large regions"},
	{"large_reserved_bytes", "LargeReservedBytes", true, Bytes, "bytes reserved by live large regions"},
	{"chunks_mapped", "ChunksMapped", true, Count, "chunks mapped (in use or idle), large regions included"},
	{"chunks_secret", "ChunksSecret", true, Count, "chunks (not large regions) from memfd_secret"},
	{"chunks_locked", "ChunksLocked", true, Count, "chunks (not large regions) from the locked backend"},
	{"large_regions_mapped", "LargeRegionsMapped", true, Count, "large regions mapped"},
	{"bytes_mapped", "BytesMapped", true, Bytes, "secret memory mapped"},
	{"committed_bytes", "CommittedBytes", true, Bytes, "OS pages committed (faulted in)"},
	{"idle_chunks", "IdleChunks", true, Count, "wholly free chunks kept for reuse"},
	{"fallbacks", "Fallbacks", true, Count, "allocations served by the fallback pool (always 0 in Go)"},
	{"fork_reprivatised", "ForkReprivatised", true, Count, "chunks re-privatised in fork children (always 0 in Go)"},
	{"misuse_caught", "MisuseCaught", true, Count, "double or interior frees, writes after free"},
	{"openssl_hooked", "", true, Code, "1: OpenSSL's allocator is ours; 0: not (yet); 2: OpenSSL refused"},
	// classes[] here (ClassesAfter).
	{"fallback_bytes", "", true, Bytes, "fallback pool bytes in live blocks"},
	{"exhausted_returns", "ExhaustedReturns", true, Count, "allocations refused (NULL, ErrExhausted) because secret memory ran out"},
	{"model", "Model", true, Code, "SECRETHEAP_MODEL_* (secretmem.Model): the kernel's accounting of memfd_secret"},
	{"secret_unavailable", "", true, Code, "SECRETHEAP_CAUSE_* why memfd_secret cannot be used, 0 if it can"},
	{"memlock_limit", "MemlockLimit", true, Bytes, "soft RLIMIT_MEMLOCK at start-up; 2^64-1: unlimited"},
	{"memlock_bypass", "MemlockBypass", true, Flag, "CAP_IPC_LOCK lifts the limit for secret memory (old model only)"},
	{"budget_shared", "BudgetShared", true, Flag, "the limit is a per-user budget shared with the uid's other processes"},
	{"committed_secret_bytes", "CommittedSecretBytes", true, Bytes, "OS pages committed in memfd_secret chunks and regions"},
	{"committed_locked_bytes", "CommittedLockedBytes", true, Bytes, "OS pages committed (mlock'ed) in locked-backend chunks and regions"},
	{"lazy_bytes", "LazyBytes", true, Bytes, "large regions whose OS pages fault in on first touch (old model, locked)"},
	{"secure_reserve_bytes", "", true, Bytes, "secure reserve in force (SECRETHEAP_SECURE_RESERVE, capped)"},
	{"arena_bytes", "ArenaBytes", true, Bytes, "address space reserved for chunks (shrunk under RLIMIT_AS)"},
	// failures[] here (the struct's end).
	{"shard_count", "ShardCount", false, Count, "lock shards of the heap"},
	{"heap_closed", "HeapClosed", false, Flag, "the heap is closed"},
}

// ClassesAfter is the Key of the member that classes[] follows.
const ClassesAfter = "openssl_hooked"

// ClassFields are the members of struct secretheap_class_stats, in order,
// and their alloc.ClassStats names: one object per class in "classes".
var ClassFields = []Field{
	{"size", "Size", true, Bytes, "block size of the class"},
	{"requested_bytes", "RequestedBytes", true, Bytes, "bytes asked for by live blocks"},
	{"reserved_bytes", "ReservedBytes", true, Bytes, "live blocks × block size"},
	{"live_blocks", "LiveBlocks", true, Count, "blocks handed out and not freed"},
	{"slabs", "Slabs", true, Count, "slabs of the class"},
}

// NumClasses is SECRETHEAP_NUM_CLASSES (alloc's size classes; checked
// against both).
const NumClasses = 40

// Causes are the names of SECRETHEAP_CAUSE_*, in order (sh_cause_name in
// C). failures[i] is reported as "failures_" + Causes[i] with '-' as '_',
// for every cause but the first ("none").
var Causes = []string{"none", "no-support", "denied", "memlock", "limit", "descriptors", "memory", "bad-fd", "arena", "other"}

// OpenSSL are the values of the OpenSSL hooks' block (preload/openssl.c): "openssl_" + Key in
// the text report, Key in the JSON's "openssl" object, in this order.
var OpenSSL = []Field{
	{"mode", "", true, Text, "SECRETHEAP_OPENSSL in force: all, secure or off"},
	{"hooks", "", true, Text, "yes: CRYPTO_set_mem_functions took our hooks; no"},
	{"refused", "", true, Count, "libcryptos that refused our hooks (they had allocated already)"},
	{"secure_interposed", "", true, Text, "yes: libcrypto calls CRYPTO_secure_* through its PLT; bound-inside-libcrypto; unknown"},
	{"secure_served_by", "", true, Text, "who serves the secure heap from secret memory: interposition, general-hooks or none"},
	{"malloc_calls", "", true, Count, "OpenSSL malloc calls served"},
	{"realloc_calls", "", true, Count, "OpenSSL realloc calls served"},
	{"free_calls", "", true, Count, "OpenSSL free calls served"},
	{"secure_alloc_calls", "", true, Count, "CRYPTO_secure_malloc/zalloc calls served"},
	{"secure_free_calls", "", true, Count, "CRYPTO_secure_free calls served"},
	{"secure_live_bytes", "", true, Bytes, "secure-heap bytes live"},
	{"set_mem_functions_refused", "", true, Count, "CRYPTO_set_mem_functions calls by the program answered 0 (our hooks stay)"},
	{"set_mem_functions_honoured", "", true, Count, "CRYPTO_set_mem_functions calls honoured (for a dlopen'ed libcrypto)"},
}

// FailureKey is the report key of failures[cause].
func FailureKey(cause int) string {
	b := []byte("failures_" + Causes[cause])
	for i := range b {
		if b[i] == '-' {
			b[i] = '_'
		}
	}
	return string(b)
}

// Lookup returns the Field of Fields with key k, or nil.
func Lookup(k string) *Field {
	for i := range Fields {
		if Fields[i].Key == k {
			return &Fields[i]
		}
	}
	return nil
}
